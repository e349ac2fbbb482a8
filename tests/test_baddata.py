"""Bad data is an error, not a silent rewrite: every case of the corpus (tests/baddata/cases.py)
runs through the real `ft check` / `ft run` and must end as a correct read or a clear error
that names the file and row (data) or file:line:col (.ft), never a traceback or a hang.

Then the pieces the e2e runs cannot reach: the dataset step on files `ft check` would have
refused, the file hashing of the runtime, the compiler's peek.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from baddata.cases import CASES, Case, build
from conftest import ft_bin
from ftlang.runtime.hashing import StatCache, file_sha256
from ftlang.stdlib import dataset, tabular
from ftlang.stdlib.spec import Call, StepContext, StepError

TIMEOUT_S = 60  # a hang is a failure, not a stuck test run


def listing() -> list[dict[str, Any]]:
    """The cases as plain data (name, command, file, expected exit and texts), for a runner."""
    return [{"name": c.name, "command": c.command, "ft": c.ft, "file": c.data, "exit": c.exit,
             "outcome": "read" if c.exit == 0 else "error", "expect": list(c.expect)} for c in CASES]


def _unprivileged() -> list[str] | None:
    """A command prefix under which file permissions apply, or None when there is none.
    Root ignores them; root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH does not."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def run_case(case: Case, folder: Path) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = []
    if case.needs == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this system")
    if case.needs == "unprivileged":
        found = _unprivileged()
        if found is None:
            pytest.skip("running as root without setpriv: permission bits do not apply")
        prefix = found
    try:
        project = build(case, folder)
    except (OSError, NotImplementedError) as e:
        pytest.skip(f"cannot build the case here: {e}")
    env = dict(os.environ, NO_COLOR="1", HF_HUB_OFFLINE="1")
    try:
        return subprocess.run([*prefix, *ft_bin(), case.command, case.ft], cwd=project, capture_output=True,
                              text=True, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ft {case.command} hung on {case.data} (killed after {TIMEOUT_S} s)")


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if case.pending:
        request.applymarker(pytest.mark.xfail(strict=True, reason=case.pending))
    check_case(case, tmp_path)


def check_case(case: Case, tmp_path: Path) -> None:
    """One case end to end (also run by tests/reliability.py)."""
    out = run_case(case, tmp_path / case.name)
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    assert out.returncode == case.exit, f"exit {out.returncode}, expected {case.exit}:\n{text}"
    for want in case.expect:
        assert want in text, f"{want!r} missing from:\n{text}"
    for bad in case.forbid:
        assert bad not in text, f"{bad!r} in:\n{text}"


def test_listing_names_every_case() -> None:
    rows = listing()
    assert len({r["name"] for r in rows}) == len(CASES)
    assert all(r["file"] and r["expect"] for r in rows)


# ---- the dataset step on files the compiler would refuse (they change after `ft check`) --------


def _step(tmp_path: Path, source: Call, schema: dict[str, str] | None = None) -> StepError:
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    ctx = StepContext(node="dataset.d", name="d", params={"source": source, "schema": schema}, out=out,
                      project=tmp_path, cache=tmp_path / "cache")
    with pytest.raises(StepError) as info:
        dataset.run(ctx)
    return info.value


def test_step_refuses_a_fifo_a_loop_and_a_folder_at_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.mkfifo(data / "pipe.jsonl")
    os.symlink("b.jsonl", data / "a.jsonl")
    os.symlink("a.jsonl", data / "b.jsonl")
    (data / "dir.jsonl").mkdir()
    err = _step(tmp_path, Call("jsonl", {"path": str(data / "pipe.jsonl")}))
    assert str(err).startswith("data/pipe.jsonl: a named pipe (FIFO)")
    assert "loops back" in str(_step(tmp_path, Call("jsonl", {"path": str(data / "a.jsonl")})))
    assert "a folder" in str(_step(tmp_path, Call("jsonl", {"path": str(data / "dir.jsonl")})))


def test_step_reports_a_file_without_read_permission(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret.jsonl"
    path.parent.mkdir()
    path.write_text('{"prompt": "a"}\n')
    path.chmod(0)
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: permission bits do not apply")
    # In a child process: as root, only one without CAP_DAC_OVERRIDE sees the permission bits.
    code = ("import sys; from pathlib import Path; from test_baddata import _step; from ftlang.stdlib.spec import Call; "
            "e = _step(Path(sys.argv[1]), Call('jsonl', {'path': sys.argv[2]})); print(e); print(e.hint)")
    out = subprocess.run([*prefix, sys.executable, "-c", code, str(tmp_path), str(path)], capture_output=True,
                         text=True, timeout=TIMEOUT_S, cwd=Path(__file__).parent,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                             [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])])))
    assert out.stdout.startswith("data/secret.jsonl: permission denied"), out.stdout + out.stderr
    assert "chmod a+r data/secret.jsonl" in out.stdout


def test_step_names_the_delimiter_of_a_one_column_csv(tmp_path: Path) -> None:
    path = tmp_path / "data" / "semi.csv"
    path.parent.mkdir()
    path.write_text("prompt;completion\nq;a\n")
    err = _step(tmp_path, Call("csv", {"path": str(path), "delimiter": ","}))
    assert err.row == 1 and "wrong delimiter" in str(err)
    assert err.hint == 'the file is \';\'-separated: write csv("data/semi.csv", delimiter = ";")'
    err = _step(tmp_path, Call("csv", {"path": str(path), "delimiter": ","}), {"prompt": "str"})
    assert err.row == 1 and 'delimiter = ";"' in (err.hint or "")


def test_step_keeps_a_legit_odd_quote_and_multiline_cells(tmp_path: Path) -> None:
    # An odd number of quotes only means trouble when the strict pass agrees: 5" is a plain
    # character in an unquoted cell, and a quoted cell may span lines.
    path = tmp_path / "data" / "ok.csv"
    path.parent.mkdir()
    path.write_text('prompt,completion\na 5" screen,"two\nlines"\nq,a\n')
    out = tmp_path / "out"
    out.mkdir()
    ctx = StepContext(node="dataset.d", name="d", params={"source": Call("csv", {"path": str(path),
                      "delimiter": ","}), "schema": None}, out=out, project=tmp_path, cache=tmp_path / "c")
    assert dataset.run(ctx)["rows"] == 2


def test_step_rounds_no_integer_next_to_floats(tmp_path: Path) -> None:
    path = tmp_path / "data" / "n.jsonl"
    path.parent.mkdir()
    path.write_text('{"n": 0.5}\n{"n": 9007199254740993}\n')  # 2**53 + 1: no float64 holds it
    err = _step(tmp_path, Call("jsonl", {"path": str(path)}))
    assert err.row == 2 and "would be rounded to 9007199254740992" in str(err)
    path.write_text('{"n": 0.5}\n{"n": 1e23}\n')  # written as a float: kept
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    ctx = StepContext(node="dataset.d", name="d", params={"source": Call("jsonl", {"path": str(path)}),
                      "schema": None}, out=out, project=tmp_path, cache=tmp_path / "c")
    assert dataset.run(ctx)["rows"] == 2


def test_step_refuses_two_objects_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "data" / "two.jsonl"
    path.parent.mkdir()
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b"}  {"prompt": "c"}\n')  # pyarrow: 3 rows
    err = _step(tmp_path, Call("jsonl", {"path": str(path)}))
    assert err.row == 3 and "Extra data" in str(err)


# ---- the runtime's hashing and the shared column reader -------------------------------------


@contextlib.contextmanager
def _no_hang(seconds: int = 10) -> Iterator[None]:
    """Fails instead of blocking forever (opening a FIFO without a writer never returns)."""
    def stop(signum: int, frame: Any) -> None:
        raise TimeoutError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_hashing_refuses_non_regular_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    stat = StatCache(tmp_path / "stat.json")
    folder = tmp_path / "model"
    folder.mkdir()
    os.mkfifo(folder / "weights.bin")  # inside a folder artifact: refused too, never read
    with _no_hang():
        for name in ("pipe", "a", "model"):
            with pytest.raises(OSError) as info:
                stat.digest(tmp_path / name)
            assert not isinstance(info.value, TimeoutError)
        with pytest.raises(OSError, match="not a regular file"):
            file_sha256(tmp_path / "pipe")


def test_one_column_reader_for_check_and_step(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfprompt,completion\nq,a\n")
    assert tabular.csv_header(path, "bom.csv", ",") == ["prompt", "completion"]
    path.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "q"}\n')
    assert tabular.jsonl_columns(path, "bom.jsonl", 10) == ["prompt"]
    path.write_bytes(b"prompt,completion\nq,caf\xe9\n")
    err = tabular.first_utf8_error(path, "x.csv")
    assert err is not None and err.row == 2 and "0xe9" in str(err)


def test_a_struct_column_never_reaches_training_as_a_repr(tmp_path: Path) -> None:
    """Without a schema the dataset step keeps a Parquet struct column as it is; the steps
    that read text refuse it by dataset and column instead of tokenizing `{'a': 1}`."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ftlang.stdlib.examples import read_columns
    from ftlang.stdlib.spec import Artifact

    pq.write_table(pa.table({"prompt": [{"a": 1}, {"a": 2}], "completion": ["x", "y"]}), tmp_path / "data.parquet")
    art = Artifact("curate.rows", "d", tmp_path)
    with pytest.raises(StepError, match="curate.rows column 'prompt' holds struct<a: int64> values, not text"):
        read_columns(art, ["prompt", "completion"])
    assert read_columns(art, ["completion"]) == {"completion": ["x", "y"]}
