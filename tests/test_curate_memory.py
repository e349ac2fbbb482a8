"""FT_CURATE_MEMORY caps the memory a curate's DuckDB holds (past it, DuckDB spills to disk):
it reaches DuckDB, it does not change a byte of the output (so it is in no key), and a bad
value or a cap too small for the query is a clear step error, not DuckDB's advice to SET
what a curate cannot set. bench/bench_curate.py --memory reports the peak RSS it gives."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import run_ft

pytestmark = pytest.mark.e2e

PIPELINE = '''ft 0.1

dataset rows {
  source = parquet("rows.parquet")
}

curate clean {
  sql """
    SELECT DISTINCT prompt, completion
    FROM rows
    WHERE length(completion) BETWEEN 5 AND 180
  """
  split { train = 0.9, heldout = 0.1, by = prompt, seed = 3 }
}
'''


def _project(root: Path) -> Path:
    import duckdb

    root.mkdir()
    # 400,000 rows, a third of them repeated: the DISTINCT and the sort hold tens of MB.
    duckdb.sql(f"""COPY (SELECT 'prompt ' || (i % 150000)::VARCHAR AS prompt,
                               repeat('x', (i * 7919) % 200) || (i % 13)::VARCHAR AS completion
                        FROM range(400000) t(i)) TO '{root / "rows.parquet"}' (FORMAT parquet)""")
    (root / "p.ft").write_text(PIPELINE)
    return root


def _parts(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (root / ".ft" / "objects").glob("*/*.parquet") if p.name != "data.parquet"}


def _run(root: Path, monkeypatch: pytest.MonkeyPatch, memory: str | None):
    monkeypatch.setenv("FT_TORCH_THREADS", "2")  # the same threads (and buffers) on any machine
    if memory is None:
        monkeypatch.delenv("FT_CURATE_MEMORY", raising=False)
    else:
        monkeypatch.setenv("FT_CURATE_MEMORY", memory)
    return run_ft("run", "p.ft", cwd=root)


def test_a_cap_gives_the_same_bytes_and_a_tiny_one_fails_clearly(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    free = _project(tmp_path / "free")
    r = _run(free, monkeypatch, None)
    assert r.returncode == 0, r.stderr[-2000:]
    capped = _project(tmp_path / "capped")
    r = _run(capped, monkeypatch, "100MB")
    assert r.returncode == 0, r.stderr[-2000:]
    assert set(_parts(free)) == {"train.parquet", "heldout.parquet"}
    assert _parts(capped) == _parts(free)

    tiny = _project(tmp_path / "tiny")
    r = _run(tiny, monkeypatch, "8MB")  # the cap reaches DuckDB: this query needs more
    assert r.returncode == 1
    assert "DuckDB ran out of memory" in r.stderr and "raise FT_CURATE_MEMORY (now 8MB)" in r.stderr
    assert "SET memory_limit" not in r.stderr and "Traceback" not in r.stderr


def test_a_value_duckdb_cannot_read_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "p")
    r = _run(root, monkeypatch, "lots")
    assert r.returncode == 1
    assert "FT_CURATE_MEMORY=lots is not a memory size DuckDB takes" in r.stderr
    assert "write it like 2GB or 500MB" in r.stderr and "Traceback" not in r.stderr
