"""Broken surroundings give one clear line, never a traceback, and leave the cache valid:
a full disk, a read-only `.ft/`, a garbage ledger."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_ft
from fsfaults import fill, read_only, small_disk
from test_runtime import PIPELINE, write_rows

pytestmark = pytest.mark.e2e

# Free bytes left on the disk when the run starts: each level fails at a different write
# (objects, keys, state, stat cache, ledger, lockfile) or just fits.
DISK_LEVELS = [0, 8 << 10, 64 << 10, 256 << 10]


def keys(proj: Path) -> dict[str, str]:
    return {(d := json.loads(k.read_text()))["node"]: d["digest"] for k in (proj / ".ft" / "keys").rglob("*.json")}


def make(root: Path) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    write_rows(root / "data" / "tasks.jsonl", 3000)
    (root / "p.ft").write_text(PIPELINE)
    return root


def one_clear_line(out: str) -> None:
    assert "Traceback" not in out and 'File "' not in out, out


def disk_full_case(tmp_path: Path, leave: int) -> str:
    """Runs on a full disk, frees it, reruns; returns what the failing run printed."""
    expected = tmp_path / "reference"
    make(expected)
    assert run_ft("run", "p.ft", cwd=expected).returncode == 0
    with small_disk(tmp_path / "disk", 4096) as disk:
        proj = make(disk / "proj")
        filler = fill(disk, leave)
        out = run_ft("run", "p.ft", cwd=proj)
        assert out.returncode in (0, 1), out.stderr
        one_clear_line(out.stdout + out.stderr)
        filler.unlink()
        verify = run_ft("verify", "p.ft", cwd=proj)
        assert verify.returncode == 0, verify.stdout  # what was committed is whole
        again = run_ft("run", "p.ft", cwd=proj)
        assert again.returncode == 0, again.stderr
        assert keys(proj) == keys(expected)
        shutil.rmtree(proj)
        return out.stderr


@pytest.mark.parametrize("leave", DISK_LEVELS)
def test_a_full_disk_is_one_line_and_the_cache_stays_valid(tmp_path: Path, leave: int) -> None:
    err = disk_full_case(tmp_path, leave)
    if leave == 0:
        assert "No space left on device" in err, err


def test_a_read_only_cache(tmp_path: Path) -> None:
    proj = make(tmp_path / "p")
    assert run_ft("run", "p.ft", cwd=proj).returncode == 0
    with read_only(proj / ".ft"):
        for cmd, code in (("status", 0), ("plan", 0), ("runs", 0), ("run", 1), ("gc", 1)):
            out = run_ft(cmd, "p.ft", cwd=proj)
            assert out.returncode == code, (cmd, out.stdout, out.stderr)
            one_clear_line(out.stdout + out.stderr)
            if code:
                assert out.stderr.startswith("error: ") and "Read-only file system" in out.stderr, (cmd, out.stderr)
    assert run_ft("verify", "p.ft", cwd=proj).returncode == 0


def test_a_garbage_ledger(tmp_path: Path) -> None:
    proj = make(tmp_path / "p")
    assert run_ft("run", "p.ft", cwd=proj).returncode == 0
    (proj / ".ft" / "ledger.duckdb").write_bytes(b"this is not a database" * 100)
    for cmd in ("runs", "gc", "show"):
        out = run_ft(cmd, "p.ft", cwd=proj)
        assert out.returncode == 1 and "the run ledger" in out.stderr and "cannot be read" in out.stderr, \
            (cmd, out.stderr)
        one_clear_line(out.stdout + out.stderr)
    # Runs are journaled apart from the database: the run goes on, its record is kept in the
    # journal (status reads it there), and nothing is lost once the garbage file is removed.
    run = run_ft("run", "p.ft", "--force", "clean", cwd=proj)
    assert run.returncode == 0 and "ledger" not in run.stderr, run.stderr
    status = run_ft("status", "p.ft", cwd=proj)
    assert status.returncode == 0 and "last run " in status.stdout and ": ok" in status.stdout, status.stdout
    (proj / ".ft" / "ledger.duckdb").unlink()
    runs = run_ft("runs", "p.ft", cwd=proj)
    assert runs.returncode == 0 and runs.stdout.count(" ok ") + runs.stdout.count(" ok\n") >= 2, runs.stdout
    one_clear_line(run.stderr)


def test_a_full_disk_while_publishing_an_export(tmp_path: Path) -> None:
    from test_export_guard import ft, project

    root = project(tmp_path / "proj", '"../disk/release"', extra="allow_outside = true")
    with small_disk(tmp_path / "disk", 256) as disk:
        filler = fill(disk, 4096)
        out = ft(root, "run")
        assert out.returncode == 1, out.stderr
        one_clear_line(out.stderr)
        assert "could not publish" in out.stderr and "No space left on device" in out.stderr, out.stderr
        assert list(disk.iterdir()) == [filler]  # no half-copied export left behind
        assert "failed" in ft(root, "runs").stdout.splitlines()[2]
    assert ft(root, "verify").returncode == 0  # the cache is intact
