"""The run ledger's journal: a run appends one line (no DuckDB on the run's path), the first
reader folds it into ledger.duckdb; torn lines, killed folds and concurrent runs lose nothing
and double nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ftlang.runtime import ledger
from ftlang.runtime.ledger import JOURNAL, NodeRecord


def _record(root: Path, run_id: str, file: str = "p.ft", status: str = "ok", started: float = 0.0) -> None:
    nodes = [NodeRecord("dataset.d", "dataset", "cached", "k1", "d1", meta={"rows": 3}),
             NodeRecord("train.t", "train", "ran", "k2", "d2", 1.5, ["new"], {"loss": 0.5})]
    ledger.record(root, run_id, file, "run", started, started + 1.0, status, nodes)


def _db_runs(root: Path) -> list[str]:
    import duckdb

    con = duckdb.connect(str(root / "ledger.duckdb"), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()]
    finally:
        con.close()


def test_a_run_appends_a_line_without_importing_duckdb(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from ftlang.runtime import ledger; "
            f"ledger.record(Path({str(tmp_path)!r}), 'r1', 'p.ft', 'run', 0.0, 1.0, 'ok', "
            "[ledger.NodeRecord('dataset.d', 'dataset', 'cached', 'k', 'd')]); "
            "print('duckdb' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert not (tmp_path / "ledger.duckdb").exists()
    (line,) = (tmp_path / JOURNAL).read_text().splitlines()
    assert json.loads(line)["run"][:3] == ["r1", "p.ft", "run"]


def test_readers_fold_the_journal_once(tmp_path: Path) -> None:
    _record(tmp_path, "r1", started=10.0)
    _record(tmp_path, "r2", started=20.0)
    assert ledger.last_run(tmp_path)["run_id"] == "r2"  # from the journal, before any fold
    assert [r["run_id"] for r in ledger.runs(tmp_path)] == ["r2", "r1"]
    assert (tmp_path / JOURNAL).read_bytes() == b""  # folded: emptied
    nodes = ledger.run_nodes(tmp_path, "r1")
    assert [(n["node"], n["status"], n["meta"], n["reasons"]) for n in nodes] == [
        ("dataset.d", "cached", {"rows": 3}, []), ("train.t", "ran", {"loss": 0.5}, ["new"])]
    _record(tmp_path, "r3", started=30.0)
    assert [r["run_id"] for r in ledger.runs(tmp_path)] == ["r3", "r2", "r1"]
    assert ledger.last_run(tmp_path)["run_id"] == "r3"  # from the database now
    assert ledger.train_history(tmp_path) == [({"loss": 0.5}, 1.5)] * 3


def test_a_torn_last_line_is_dropped_and_the_runs_before_it_kept(tmp_path: Path) -> None:
    _record(tmp_path, "r1")
    with (tmp_path / JOURNAL).open("ab") as f:
        f.write(b'{"run": ["r2", "p.ft", "ru')  # killed mid-write
    assert [r["run_id"] for r in ledger.runs(tmp_path)] == ["r1"]


def test_a_fold_killed_after_its_commit_doubles_nothing(tmp_path: Path) -> None:
    _record(tmp_path, "r1", started=1.0)
    assert ledger.runs(tmp_path)  # r1 is in the database
    _record(tmp_path, "r1", started=1.0)  # as a fold killed after COMMIT leaves the journal
    _record(tmp_path, "r2", started=2.0)
    assert [r["run_id"] for r in ledger.runs(tmp_path)] == ["r2", "r1"]
    assert _db_runs(tmp_path) == ["r1", "r2"] and (tmp_path / JOURNAL).read_bytes() == b""


def test_runs_finishing_together_all_land(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from ftlang.runtime import ledger; "
            "recs = [ledger.NodeRecord(f'n.{i}', 'curate', 'cached', 'k' * 64, 'd' * 64, "
            "meta={'pad': 'x' * 2000}) for i in range(20)]; "
            f"[ledger.record(Path({str(tmp_path)!r}), f'{{sys.argv[1]}}-{{j}}', 'p.ft', 'run', 0.0, 1.0, 'ok', recs)"
            " for j in range(10)]")
    # A reader folds over and over while four runs record ten each: every run lands once.
    reader = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from ftlang.runtime import ledger; t = time.time()\n"
                               "while time.time() - t < 8:\n"
                               f"    ledger.runs(Path({str(tmp_path)!r}), limit=1)"])
    procs = [subprocess.Popen([sys.executable, "-c", code, f"p{i}"]) for i in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    assert reader.wait(timeout=120) == 0
    assert len(ledger.runs(tmp_path, limit=100)) == 40
    assert sorted(_db_runs(tmp_path)) == sorted(f"p{i}-{j}" for i in range(4) for j in range(10))


def test_a_locked_database_keeps_the_journal(tmp_path: Path) -> None:
    _record(tmp_path, "r1", started=1.0)
    assert ledger.runs(tmp_path)
    _record(tmp_path, "r2", started=2.0)
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; "
                               f"c = duckdb.connect({str(tmp_path / 'ledger.duckdb')!r}); "
                               "print('held', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        try:  # another process holds the write lock: the fold waits for a later reader
            ledger.runs(tmp_path)
        except ledger.LedgerError:
            pass
        assert (tmp_path / JOURNAL).exists() and ledger.last_run(tmp_path)["run_id"] == "r2"
    finally:
        holder.kill()
        holder.wait()
    assert [r["run_id"] for r in ledger.runs(tmp_path)] == ["r2", "r1"]


def test_a_wrong_shaped_line_is_set_aside_once_and_the_rest_folded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _record(tmp_path, "r1", started=1.0)
    bad = [b'{"run": 5, "nodes": "x"}', b'{"nodes": []}', b'[1, 2]',
           b'{"run": ["r9", "p.ft", "run", 1, 2, "ok", 0, 0, 0], "nodes": [["r9", 1]]}']
    with (tmp_path / JOURNAL).open("ab") as f:
        f.write(b"\n".join(bad) + b"\n")
    _record(tmp_path, "r2", started=2.0)
    with (tmp_path / JOURNAL).open("ab") as f:
        f.write(bad[0] + b"\n")  # the tail too: `ft status` reads it without DuckDB
    assert ledger.last_run(tmp_path)["run_id"] == "r2"
    assert [r["run_id"] for r in ledger.runs(tmp_path)] == ["r2", "r1"]
    assert (tmp_path / ledger.REJECTED).read_bytes().splitlines() == [*bad, bad[0]]
    assert (tmp_path / JOURNAL).read_bytes() == b""
    _record(tmp_path, "r3", started=3.0)
    with (tmp_path / JOURNAL).open("ab") as f:
        f.write(bad[1] + b"\n")
    assert [r["run_id"] for r in ledger.runs(tmp_path)] == ["r3", "r2", "r1"]
    assert capsys.readouterr().err.count("warning:") == 1  # once, however many folds


def test_negative_and_empty_refs_match_no_run(tmp_path: Path) -> None:
    _record(tmp_path, "r1", started=1.0)
    _record(tmp_path, "r2", started=2.0)
    assert ledger.resolve_run(tmp_path, "last~1") == "r1"
    assert [ledger.resolve_run(tmp_path, ref) for ref in ("last~-1", "last~x", "")] == [None] * 3
    assert ledger.runs(tmp_path, limit=-1) == [] and ledger.referenced_digests(tmp_path, -1) == set()
