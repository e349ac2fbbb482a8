"""One node's step, run in another process: the job file in, the step's artifact and meta out.

The driver (`run_job`) writes a `Job` — everything `StepContext` holds, with upstream
artifacts already materialised as paths — to a pickle next to the node's tmp output, and
starts `python -m ftlang.runtime.worker JOB` (or a launcher in front of it: torchrun,
a Ray task, another machine sharing the cache folder). The worker appends events to a
JSON-lines file (`log`, `progress`, then one `result` or `error`); the driver tails it and
forwards them to the display, so a step behaves the same in or out of process.

The worker never commits: the driver commits `out` exactly as for an in-process step, so
the cache's atomic-commit and kill semantics stay the runtime's alone.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlang.runtime.display import REDRAW_SECONDS
from ftlang.stdlib.spec import StepContext, StepError

if TYPE_CHECKING:
    from ftlang.runtime.warmpool import WarmPool

POLL_S = 0.2  # how often the driver reads new events while the worker runs


@dataclass
class Job:
    """A node's step, ready to run anywhere that sees the same cache folder."""

    node: str
    name: str
    run: str  # "ftlang.stdlib.train:run"
    params: dict[str, Any]  # materialised: Artifacts, Paths, Calls
    out: Path
    project: Path
    cache: Path
    key: str
    verbose: bool = False
    events: Path = field(default_factory=Path)  # JSON lines the worker appends
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the worker
    logs: Path | None = None  # under torchrun: each rank's output to <logs>/<node>.rank<N>.log

    def write(self, path: Path) -> Path:
        tmp = path.with_suffix(".part")
        tmp.write_bytes(pickle.dumps(self))
        os.replace(tmp, path)
        return path


class WorkerError(Exception):
    """The worker died or raised something that is not a StepError: `log` has the detail."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


def _emit(events: Path, record: dict[str, Any]) -> None:
    # One write per line, opened in append mode: lines from one process never interleave.
    with open(events, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=str) + "\n")


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGTERM to this process when its parent dies, so a SIGKILLed
    `ft` leaves no orphan worker. Elsewhere the driver's process-group kill is the guard."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def run_in_worker(job: Job, *, rank: int = 0) -> int:
    """The worker's side: run the step, report through the events file. Returns the exit code.
    Only rank 0 reports results (other ranks of a distributed launch run the same step)."""
    from ftlang.runtime.executor import load_step

    events = job.events if rank == 0 else job.events.with_name(f"{job.events.stem}.rank{rank}.jsonl")
    where = {"rank": int(os.environ.get("RANK", rank))}  # the global rank, for "rank N failed"

    def log(msg: str) -> None:
        _emit(events, {"log": msg})

    shown = [float("-inf")]  # when the last progress line was written

    def progress(done: int, total: int | None = None, msg: str = "") -> None:
        # A training step reports every optimiser step; the driver redraws at most every
        # REDRAW_SECONDS, so lines in between would be written for no one. The first and
        # the last always go.
        now = time.monotonic()
        if now - shown[0] < REDRAW_SECONDS and not (total and done >= total):
            return
        shown[0] = now
        _emit(events, {"progress": [done, total, msg]})

    ctx = StepContext(node=job.node, name=job.name, params=job.params, out=job.out,
                      project=job.project, cache=job.cache, log=log, progress=progress,
                      key=job.key, verbose=job.verbose)
    try:
        meta = load_step(job.run)(ctx) or {}
    except StepError as exc:
        _emit(events, {"error": str(exc), "hint": exc.hint, "step_error": True, **where})
        return 2
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, then the worker exits
        _emit(events, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                       "step_error": False, **where})
        return 1
    _emit(events, {"result": meta})
    return 0


def run_job(job: Job, job_file: Path, *, log: Callable[[str], None],
            progress: Callable[..., None], launcher: Sequence[str] = (),
            stdout: Path | None = None, cancel: Any = None, pool: WarmPool | None = None) -> dict[str, Any]:
    """The driver's side: start the worker (behind `launcher`, e.g. torchrun's argv), forward
    its events, return the step's meta. A StepError in the worker is raised here as one;
    a crash is a WorkerError naming the log. Ctrl-C or an exception here kills the whole
    process group, so no worker outlives the run. `cancel` (a threading.Event) does the same
    from another thread: the scheduler sets it to stop every job of a parallel run. With
    `pool` (and no launcher), a warm worker of that pool runs the job (runtime/warmpool.py)."""
    job.events.parent.mkdir(parents=True, exist_ok=True)
    job.events.write_text("")
    job.write(job_file)
    out_path = stdout or job.events.with_suffix(".log")
    outcome: dict[str, Any] = {}
    if pool is not None and not launcher:
        out_path.write_bytes(b"")
        proc = pool.take(job.env, out_path)
        rc = _serve_one(proc, job, job_file, outcome, log, progress, cancel)
        if "exit" in outcome and rc in (0, 2):  # ended cleanly: the worker takes the next job
            pool.give(proc, job.env)
        return _result(outcome, rc, out_path)
    argv = [*launcher, *([] if launcher else [sys.executable]), "-m", "ftlang.runtime.worker",
            str(job_file)]
    env = {**os.environ, **job.env}
    if not launcher:  # the worker's parent is this process: see main()
        env["FT_DRIVER_PID"] = str(os.getpid())
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        rc = _follow(proc, job, outcome, log, progress, cancel)
    return _result(outcome, rc, out_path)


def _serve_one(proc: subprocess.Popen[bytes], job: Job, job_file: Path, outcome: dict[str, Any],
               log: Callable[[str], None], progress: Callable[..., None], cancel: Any) -> int:
    """One job on a serving worker: its exit code, from its `exit` event, or the process's
    own if it died. Ctrl-C or `cancel` kills the worker's group, as for a one-job worker."""
    try:
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(str(job_file)) + "\n").encode())
        proc.stdin.flush()
    except OSError:  # it died while idle: the job reports nothing, as a crash does
        return proc.wait()
    return _follow(proc, job, outcome, log, progress, cancel)


def _follow(proc: subprocess.Popen[bytes], job: Job, outcome: dict[str, Any], log: Callable[[str], None],
            progress: Callable[..., None], cancel: Any) -> int:
    """Forward the job's events until it ends (an `exit` event from a serving worker, or the
    process's exit); its exit code. Ctrl-C or `cancel` kills the process group."""
    offset = 0
    try:
        while True:
            died = proc.poll()
            offset = _forward(job.events, offset, outcome, log, progress)
            if "exit" in outcome:
                return int(outcome["exit"])
            if died is not None:
                return died
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            time.sleep(POLL_S)
    except BaseException:
        stop_group(proc)
        raise


def _result(outcome: dict[str, Any], rc: int, out_path: Path) -> dict[str, Any]:
    """The step's meta from a worker's events, or the error they (or their absence) mean."""
    if "result" in outcome:
        if rc != 0:  # rank 0 finished but another rank failed
            raise WorkerError(f"a worker exited with status {rc} after the step ended", out_path)
        return outcome["result"]
    if outcome.get("step_error"):
        raise StepError(outcome["error"], hint=outcome.get("hint"))
    if "error" in outcome:
        raise WorkerError(outcome["error"], out_path)
    raise WorkerError(f"the worker exited with status {rc} and reported nothing"
                      f"{_last_line(out_path)}", out_path)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group, then SIGKILL what is left after a grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _forward(events: Path, offset: int, outcome: dict[str, Any], log: Callable[[str], None],
             progress: Callable[..., None]) -> int:
    try:
        with open(events, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return offset
    end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
    for line in chunk[:end].splitlines():
        rec = json.loads(line)
        if "log" in rec:
            log(rec["log"])
        elif "progress" in rec:
            progress(*rec["progress"])
        else:
            outcome.update(rec)
    return offset + end


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f": {lines[-1].strip()[:200]}" if lines else ""


def serve(jobs: Any) -> int:
    """`--serve` (runtime/warmpool.py): jobs read from `jobs`, one JSON-quoted job file per
    line, run one after the other in this process, each with its own environment (this
    process's, plus the job's), working folder and log; an `exit` event ends each. A job that
    did not end cleanly (a result or a StepError) ends the worker: nothing it left is reused."""
    import gc

    base, cwd = dict(os.environ), os.getcwd()
    for line in jobs:
        if not line.strip():
            continue
        job: Job = pickle.loads(Path(json.loads(line)).read_bytes())
        os.environ.clear()
        os.environ.update({**base, **job.env})
        _redirect(job.events.with_suffix(".log"), append=True)  # the driver created it empty
        rc = run_in_worker(job)
        sys.stdout.flush()
        sys.stderr.flush()
        os.chdir(cwd)
        _emit(job.events, {"exit": rc})
        if rc not in (0, 2):
            return rc
        gc.collect()
    return 0


def _redirect(log: Path, *, append: bool) -> None:
    """This process's stdout and stderr (and its children's) to `log`."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    driver = os.environ.pop("FT_DRIVER_PID", "")
    if driver and os.getppid() != int(driver):
        return 143  # the driver died while this process was starting, before the line above
    if args[:1] == ["--serve"]:
        # Jobs come on the pipe; a step (or a process it starts) sees /dev/null as stdin,
        # so nothing it runs can read the next job's line.
        jobs = os.fdopen(os.dup(0), "r", encoding="utf-8")
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        return serve(jobs)
    job: Job = pickle.loads(Path(args[0]).read_bytes())
    os.environ.update(job.env)
    if job.logs is not None:  # torchrun: this rank's stdout and stderr to its own log
        name = re.sub(r"[^\w.=-]+", "_", job.node)  # as runtime.launch names it
        _redirect(job.logs / f"{name}.rank{os.environ.get('RANK', '0')}.log", append=False)
    # The local rank 0 of each machine reports the result its driver commits.
    rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    rc = run_in_worker(job, rank=rank)
    if rc == 0:
        _leave_process_group()
    return rc


def _leave_process_group() -> None:
    """Under torchrun, after the step: wait for every rank, then leave the process group.
    A rank that exits while gloo's threads still talk to another one (rank 0 saving the
    model) can abort in the C++ runtime ("terminate called without an active exception",
    signal 6) and fail a step that succeeded. Only after a success: a rank that failed
    exits at once, and torchrun stops the others."""
    dist = sys.modules.get("torch.distributed")  # never imported here for a one-process step
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    try:
        dist.barrier()
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - the step's result is already reported
        pass


if __name__ == "__main__":
    sys.exit(main())
