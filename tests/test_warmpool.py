"""Warm workers (runtime/warmpool.py): `--jobs N` runs a second job in the worker process of
the first when their environments match, and gives each job a clean one all the same."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from ftlang.runtime.warmpool import WarmPool
from ftlang.runtime.worker import Job, WorkerError, run_job
from ftlang.stdlib.spec import StepError

STEPS = '''
import os, sys

def pid(ctx):
    leaked = os.environ.get("FT_TEST_LEAK")
    os.environ["FT_TEST_LEAK"] = "set by an earlier job"
    print("output of", ctx.node)
    return {"pid": os.getpid(), "leaked": leaked, "stdin": sys.stdin.read(), "env": os.environ.get("FT_TEST_ENV")}

def refuse(ctx):
    from ftlang.stdlib.spec import StepError
    raise StepError("a bad row")

def crash(ctx):
    raise RuntimeError("boom")
'''


def _job(tmp: Path, n: int, run: str, env: dict[str, str] | None = None) -> tuple[Job, Path]:
    work = tmp / f"work{n}"
    (work / "out").mkdir(parents=True)
    job = Job(node=f"step.s{n}", name=f"s{n}", run=run, params={}, out=work / "out", project=tmp,
              cache=tmp / "cache", key="k" * 64, events=work / "events.jsonl",
              env={"PYTHONPATH": str(tmp), **(env or {})})
    return job, work / "job.pkl"


def _run(pool: WarmPool, tmp: Path, n: int, run: str = "steps:pid", env: dict[str, str] | None = None) -> dict:
    job, file = _job(tmp, n, run, env)
    return run_job(job, file, log=lambda m: None, progress=lambda *a: None, pool=pool)


@pytest.fixture
def pool(tmp_path: Path):
    (tmp_path / "steps.py").write_text(STEPS)
    p = WarmPool()
    yield p
    p.close()


def test_a_second_job_with_the_same_environment_runs_in_the_first_job_s_worker(pool: WarmPool,
                                                                                tmp_path: Path) -> None:
    first, second = _run(pool, tmp_path, 1), _run(pool, tmp_path, 2)
    assert second["pid"] == first["pid"] and pool.started == 1
    # ... with the environment it would have had in a worker of its own, and no stdin to read
    assert first["leaked"] is None and second["leaked"] is None
    assert second["stdin"] == ""
    # each job's output in its own log
    assert (tmp_path / "work2" / "events.log").read_text().strip() == "output of step.s2"
    assert "step.s2" not in (tmp_path / "work1" / "events.log").read_text()


def test_another_environment_gets_another_worker(pool: WarmPool, tmp_path: Path) -> None:
    a = _run(pool, tmp_path, 1, env={"FT_TEST_ENV": "a"})
    b = _run(pool, tmp_path, 2, env={"FT_TEST_ENV": "b"})
    assert (a["env"], b["env"]) == ("a", "b") and a["pid"] != b["pid"] and pool.started == 2


def test_a_step_error_keeps_the_worker_and_a_crash_retires_it(pool: WarmPool, tmp_path: Path) -> None:
    first = _run(pool, tmp_path, 1)
    with pytest.raises(StepError, match="a bad row"):
        _run(pool, tmp_path, 2, "steps:refuse")
    assert _run(pool, tmp_path, 3)["pid"] == first["pid"]
    with pytest.raises(WorkerError, match="boom"):
        _run(pool, tmp_path, 4, "steps:crash")
    assert _run(pool, tmp_path, 5)["pid"] != first["pid"] and pool.started == 2


def test_a_worker_started_by_a_job_thread_outlives_that_thread(pool: WarmPool, tmp_path: Path) -> None:
    # The scheduler runs each job in a thread of its own; a worker dies with the thread that
    # forked it (PR_SET_PDEATHSIG), so the pool forks from a thread of its own.
    got: list[dict] = []
    t = threading.Thread(target=lambda: got.append(_run(pool, tmp_path, 1)))
    t.start()
    t.join()
    assert _run(pool, tmp_path, 2)["pid"] == got[0]["pid"]


def test_a_worker_that_saw_a_gpu_is_not_kept(pool: WarmPool, tmp_path: Path) -> None:
    # Idle, it would hold its CUDA context and cached blocks on a GPU another job is granted.
    gpu = {"CUDA_VISIBLE_DEVICES": "0"}
    first, second = _run(pool, tmp_path, 1, env=gpu), _run(pool, tmp_path, 2, env=gpu)
    assert first["pid"] != second["pid"] and pool.started == 2
    assert not Path(f"/proc/{first['pid']}").exists() or \
        "zombie" in Path(f"/proc/{first['pid']}/status").read_text().lower()
    cpu = {"CUDA_VISIBLE_DEVICES": ""}  # a CPU job's grant on a machine with GPUs
    assert _run(pool, tmp_path, 3, env=cpu)["pid"] == _run(pool, tmp_path, 4, env=cpu)["pid"]
