"""One runtime Session for `ft` and the Python API; the ledger read per file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_ft
from ftlang.runtime.session import SessionError
from test_gc_safety import ROWS, write_rows

import ftlang


def project(tmp_path: Path, *names: str) -> Path:
    for name in names:
        write_rows(tmp_path / f"{name}.jsonl", 0, 5)
        (tmp_path / f"{name}.ft").write_text(ROWS.format(src=f"{name}.jsonl"))
    return tmp_path


def test_api_force_reruns_like_the_cli(tmp_path: Path) -> None:
    p = ftlang.load(project(tmp_path, "a") / "a.ft")
    assert {r.node: r.status for r in p.run().records} == {"dataset.rows": "ran", "curate.short": "ran"}
    again = p.run(force=["short"])  # a block name, as `ft run --force short`
    assert {r.node: r.status for r in again.records} == {"dataset.rows": "cached", "curate.short": "ran"}
    assert again.records[1].reasons == ["forced"]
    assert [i.status for i in p.plan(force=["curate.short"])] == ["cached", "run"]
    with pytest.raises(SessionError, match="no node named 'shrt'"):
        p.run(force=["shrt"])


def test_runs_show_and_last_n_are_per_file(tmp_path: Path) -> None:
    root = project(tmp_path, "a", "b")
    for name in ("a", "b", "a"):
        assert run_ft("run", f"{name}.ft", "--force", "short", cwd=root).returncode == 0
    runs_a = run_ft("runs", "a.ft", "--csv", cwd=root).stdout.splitlines()[1:]
    runs_b = run_ft("runs", "b.ft", "--csv", cwd=root).stdout.splitlines()[1:]
    assert len(runs_a) == 2 and len(runs_b) == 1
    assert all(",a.ft," in r for r in runs_a) and ",b.ft," in runs_b[0]
    # `last~1` of b.ft does not exist (b ran once), whatever a.ft did in between.
    assert run_ft("show", "b.ft", "last~1", cwd=root).returncode == 1
    shown = run_ft("show", "a.ft", "last~1", cwd=root).stdout
    assert shown.splitlines()[0] == f"run {runs_a[1].split(',')[0]}"
    status = run_ft("status", "b.ft", cwd=root).stdout
    assert f"last run {runs_b[0].split(',')[0]}" in status


def test_a_file_never_run_is_new_even_beside_one_with_the_same_blocks(tmp_path: Path) -> None:
    root = project(tmp_path, "a", "c")
    assert run_ft("run", "a.ft", cwd=root).returncode == 0
    plan = run_ft("plan", "c.ft", cwd=root).stdout
    rows = [line.split() for line in plan.splitlines() if line.startswith("  ")]
    assert rows == [["run", "dataset.rows", "new"], ["run", "curate.short", "new"]], plan
