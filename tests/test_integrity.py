"""A corrupt artifact is never used: it is quarantined and rebuilt (run, --force, verify --repair)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_ft
from ftlang.runtime import integrity
from test_runtime import PIPELINE, statuses, write_rows


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    write_rows(tmp_path / "data" / "tasks.jsonl", 200)
    (tmp_path / "p.ft").write_text(PIPELINE)
    assert run_ft("run", "p.ft", cwd=tmp_path).returncode == 0
    return tmp_path


def object_of(project: Path, node: str) -> Path:
    state = json.loads((project / ".ft" / "state" / "p.ft" / f"{node}.json").read_text())
    return project / ".ft" / "objects" / state["digest"]


def flip_byte(path: Path, keep_mtime: bool = False) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_a_flipped_byte_is_quarantined_and_rebuilt_by_run(project: Path, keep_mtime: bool) -> None:
    obj = object_of(project, "curate.clean")
    good = (obj / "train.parquet").read_bytes()
    flip_byte(obj / "train.parquet", keep_mtime)

    plan = run_ft("plan", "p.ft", cwd=project).stdout
    assert "cached artifact is corrupt (train.parquet does not match its digest)" in plan, plan
    out = run_ft("run", "p.ft", cwd=project)
    assert out.returncode == 0, out.stderr
    st = statuses(out.stderr)
    # Rebuilt; the rebuilt bytes are the same, so the node below stays cached (early cutoff).
    assert st["curate.clean"] == "done" and st["curate.longest"] == "cached", out.stderr
    assert "cached artifact is corrupt" in out.stderr and ".ft/quarantine/" in out.stderr
    assert (obj / "train.parquet").read_bytes() == good
    (bad,) = (project / ".ft" / "quarantine").iterdir()
    assert (bad / "train.parquet").read_bytes() != good  # kept for inspection, never deleted
    assert run_ft("verify", "p.ft", cwd=project).returncode == 0


def test_force_repairs_a_corrupt_object(project: Path) -> None:
    obj = object_of(project, "curate.clean")
    good = (obj / "train.parquet").read_bytes()
    flip_byte(obj / "train.parquet")
    out = run_ft("run", "p.ft", "--force", "clean", cwd=project)
    assert out.returncode == 0, out.stderr
    assert (obj / "train.parquet").read_bytes() == good
    assert run_ft("verify", "p.ft", cwd=project).returncode == 0


def test_verify_repair_quarantines_and_rebuilds(project: Path) -> None:
    obj = object_of(project, "dataset.tasks")
    (obj / "data.parquet").unlink()
    out = run_ft("verify", "p.ft", cwd=project)
    assert out.returncode == 1 and "data.parquet is missing" in out.stdout and "--repair" in out.stdout
    out = run_ft("verify", "p.ft", "--repair", cwd=project)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "moved to .ft/quarantine/" in out.stdout and statuses(out.stderr)["dataset.tasks"] == "done"
    assert (obj / "data.parquet").is_file()
    assert run_ft("verify", "p.ft", cwd=project).returncode == 0


def test_added_file_is_corruption(project: Path) -> None:
    obj = object_of(project, "curate.longest")
    (obj / "notes.txt").write_text("edited in the cache")
    assert "notes.txt was added" in run_ft("plan", "p.ft", cwd=project).stdout


def test_large_objects_rehash_only_files_whose_stat_changed(project: Path, monkeypatch) -> None:
    """The cost model: above FULL_REHASH_BYTES a same-size, same-mtime edit is left to `ft verify`."""
    monkeypatch.setattr(integrity, "FULL_REHASH_BYTES", 0)
    root = project / ".ft"
    obj = object_of(project, "curate.clean")
    key = next(json.loads(k.read_text()) for k in (root / "keys").rglob("*.json")
               if json.loads(k.read_text())["digest"] == obj.name)
    flip_byte(obj / "train.parquet", keep_mtime=True)
    assert integrity.problem(root, obj.name, key["files"]) is None  # stat unchanged: not re-read
    assert integrity.problem(root, obj.name, key["files"], full=True) == "train.parquet does not match its digest"
    flip_byte(obj / "heldout.parquet")  # a changed mtime makes that file re-hashed
    assert integrity.problem(root, obj.name, key["files"]) == "heldout.parquet does not match its digest"
