"""curate runs on several threads only when its rows cannot depend on the order they are
produced in (stdlib/curate._threads), and then writes the same bytes as on one thread."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ftlang.stdlib import curate
from ftlang.stdlib.spec import Artifact, StepContext

N = 300_000  # several DuckDB row groups and Arrow batches, so the threads really interleave


def _rows(n: int) -> pa.Table:
    return pa.table({"prompt": [f"q{(i * 7919) % (n // 3)}" for i in range(n)],
                     "completion": [f"a{i % 977} " * (i % 9) for i in range(n)],
                     "n": list(range(n))})


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    folder = tmp_path_factory.mktemp("store") / "dataset.rows"
    folder.mkdir()
    pq.write_table(_rows(N), folder / "data.parquet", row_group_size=20_000)
    return Artifact(node="dataset.rows", digest="0" * 64, path=folder)


SAFE = {
    "distinct + filter": "SELECT DISTINCT prompt, completion FROM rows WHERE length(completion) BETWEEN 3 AND 20",
    "group by + join": """SELECT r.prompt, c.k, r.n FROM rows r
                          JOIN (SELECT prompt, count(*) AS k, max(n) AS top FROM rows GROUP BY prompt) c
                          ON r.prompt = c.prompt AND r.n = c.top""",
    "union + except": "SELECT prompt FROM rows WHERE n % 2 = 0 UNION SELECT completion FROM rows EXCEPT SELECT 'a1 '",
}
UNSAFE = {
    "first()": "SELECT prompt, first(completion) FROM rows GROUP BY prompt",
    "list()": "SELECT prompt, list(n) FROM rows GROUP BY prompt",
    "float sum": "SELECT prompt, sum(n * 0.1) FROM rows GROUP BY prompt",
    "LIMIT": "SELECT * FROM rows LIMIT 10",
    "DISTINCT ON": "SELECT DISTINCT ON (prompt) * FROM rows",
    "window": "SELECT prompt, row_number() OVER (PARTITION BY prompt) AS k FROM rows",
    "sample": "SELECT * FROM rows USING SAMPLE 10 ROWS",
    "top-level ORDER BY (ties keep input order)": "SELECT * FROM rows ORDER BY prompt",
    "set-up statements": "CREATE MACRO two(x) AS x * 2; SELECT two(n) FROM rows",
}


def _threads(art: Artifact, sql: str, deterministic: bool = True) -> int:
    con = duckdb.connect(config={"threads": 1})
    # as curate.run reads its inputs: a view over read_parquet (its plan's READ_PARQUET)
    con.execute("SET allowed_paths = $paths", {"paths": [str(art.dataset_file())]})
    con.execute(f"CREATE TEMP VIEW rows AS SELECT * FROM read_parquet('{art.dataset_file()}')")
    curate._sandbox(con)
    try:
        statements = curate._statements(con, sql, {"rows": []})
        ordered = curate._has_top_level_order(con, statements[-1].query)
        return curate._threads(con, statements, ordered, deterministic)
    finally:
        con.close()


def _run(tmp_path: Path, art: Artifact, sql: str, split: dict[str, Any] | None, out: str) -> dict[str, str]:
    (tmp_path / out).mkdir()
    ctx = StepContext(node="curate.c", name="c", params={"from": [art], "sql": sql, "split": split},
                      out=tmp_path / out, project=tmp_path, cache=tmp_path / "cache")
    curate.run(ctx)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp_path / out).iterdir())}


@pytest.mark.parametrize("name", list(SAFE))
def test_an_order_free_query_uses_every_core_and_writes_the_same_bytes(
        tmp_path: Path, rows: Artifact, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    split = {"parts": {"train": 0.8, "heldout": 0.2}, "by": "prompt", "seed": 3} if name != "union + except" else None
    monkeypatch.setenv("FT_TORCH_THREADS", "4")
    assert _threads(rows, SAFE[name]) == 4
    many = _run(tmp_path, rows, SAFE[name], split, "many")
    monkeypatch.setenv("FT_TORCH_THREADS", "1")
    assert _threads(rows, SAFE[name]) == 1
    assert _run(tmp_path, rows, SAFE[name], split, "one") == many


@pytest.mark.parametrize("name", list(UNSAFE))
def test_an_order_dependent_query_stays_on_one_thread(rows: Artifact, name: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FT_TORCH_THREADS", "4")
    assert _threads(rows, UNSAFE[name]) == 1


def test_a_query_allowed_nondeterminism_stays_on_one_thread(rows: Artifact, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FT_TORCH_THREADS", "4")
    assert _threads(rows, SAFE["distinct + filter"], deterministic=False) == 1


def test_with_the_review_bypassed_duckdb_still_reads_only_the_input_files(
        tmp_path: Path, rows: Artifact, monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB reads the inputs with its own Parquet reader (allowed_paths: exactly those
    files); any other file stays refused by DuckDB itself, behind sqlpolicy's review."""
    from ftlang.stdlib.spec import StepError

    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"secret": [1]}), other)
    monkeypatch.setattr(curate, "_review", lambda con, sql, deterministic: None)
    for sql in (f"SELECT * FROM read_parquet('{other}')", f"SELECT * FROM read_csv('{tmp_path}/x.csv')"):
        with pytest.raises(StepError) as err:
            _run(tmp_path, rows, sql, None, f"out{len(sql)}")
        assert "Permission Error" in str(err.value) and "reads only the datasets in `from`" in (err.value.hint or "")
    assert _run(tmp_path, rows, f"SELECT count(*) AS n FROM read_parquet('{rows.dataset_file()}')", None, "own")
