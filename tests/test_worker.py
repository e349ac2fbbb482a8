"""A step run in a worker process gives the same bytes as in process, and fails the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ftlang.runtime.worker import Job, WorkerError, run_job
from ftlang.stdlib import dataset
from ftlang.stdlib.spec import Call, StepError
from stepkit import Store, complete, files


def _job(tmp: Path, params: dict, node: str = "dataset.d", run: str = "ftlang.stdlib.dataset:run") -> Job:
    out = tmp / "work" / "out"
    out.mkdir(parents=True)
    kind, name = node.split(".", 1)
    return Job(node=node, name=name, run=run, params=complete(kind, params), out=out, project=tmp,
               cache=tmp / "cache", key="k" * 64, events=tmp / "work" / "events.jsonl")


def _rows(tmp: Path, n: int = 50) -> Path:
    p = tmp / "rows.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(n)))
    return p


def test_a_worker_writes_the_same_artifact_as_an_in_process_step(tmp_path: Path) -> None:
    src = _rows(tmp_path)
    params = {"source": Call("jsonl", {"path": src})}
    _, meta_here = Store(tmp_path / "here").run(dataset.run, "dataset.d", params)
    here = files(next((tmp_path / "here" / "objects").iterdir()))
    job = _job(tmp_path, params)
    logs: list[str] = []
    meta = run_job(job, tmp_path / "work" / "job.pkl", log=logs.append, progress=lambda *a: None)
    assert meta == json.loads(json.dumps(meta_here))
    assert files(job.out) == here


def test_a_step_error_in_the_worker_is_a_step_error_here(tmp_path: Path) -> None:
    job = _job(tmp_path, {"source": Call("jsonl", {"path": tmp_path / "missing.jsonl"})})
    with pytest.raises(StepError, match="missing.jsonl"):
        run_job(job, tmp_path / "work" / "job.pkl", log=lambda m: None, progress=lambda *a: None)


def test_a_crash_in_the_worker_names_its_log(tmp_path: Path) -> None:
    (tmp_path / "crashing.py").write_text("import os\n\ndef run(ctx):\n    os.kill(os.getpid(), 9)\n")
    job = _job(tmp_path, {}, run="crashing:run")  # killed: no event is ever written
    job.env = {"PYTHONPATH": str(tmp_path)}
    with pytest.raises(WorkerError, match="reported nothing") as info:
        run_job(job, tmp_path / "work" / "job.pkl", log=lambda m: None, progress=lambda *a: None)
    assert info.value.log is not None and info.value.log.exists()


def test_progress_reaches_the_driver_at_the_board_s_pace_first_and_last_included(tmp_path: Path) -> None:
    # 2,000 progress calls in well under a second: a handful of lines, not 2,000 file writes.
    (tmp_path / "chatty.py").write_text(
        "def run(ctx):\n    for i in range(1, 2001):\n        ctx.progress(i, 2000, f'loss {i}')\n    return {}\n")
    job = _job(tmp_path, {}, run="chatty:run")
    job.env = {"PYTHONPATH": str(tmp_path)}
    seen: list[tuple] = []
    run_job(job, tmp_path / "work" / "job.pkl", log=lambda m: None, progress=lambda *a: seen.append(a))
    assert seen[0][:2] == (1, 2000) and seen[-1] == (2000, 2000, "loss 2000")
    assert len(seen) < 50, len(seen)
