"""`ft run --executor ray [--address ADDR]`: each node's step as a Ray task.

The node's `Job` (runtime/worker.py) travels to the task; the task runs it with the same
`run_job` as the local executor, so the step is in its own process group there too (and
dies with the Ray worker: PR_SET_PDEATHSIG). The artifact comes back through the store:
the task writes the job's `out` folder, which the driver then commits, so every machine
of the cluster must see the project folder (a shared filesystem); the remote cache then
shares results beyond it. GPU requests become Ray resources (`num_gpus`), so Ray never
places two GPU jobs on one device. Events (logs, progress) travel through the job's
events file, which the driver tails as for a local job.

Ray is optional (`pip install ftlang[ray]`); nothing imports it unless `--executor ray`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_task: Any = None


class RayUnavailable(Exception):
    pass


def connect(address: str | None, display: Any) -> tuple[int, int]:
    """ray.init(): the given cluster, or a local one started here (how the tests run).
    Returns the cluster's CPUs and GPUs."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--executor ray needs Ray: pip install 'ftlang[ray]'") from None
    if ray.is_initialized():
        return _resources(ray)
    # Workers import ftlang from the same environment; no runtime_env upload needed.
    kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    if address is None:
        kwargs["num_cpus"] = max(1, len(os.sched_getaffinity(0)))
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(f"cannot connect to the Ray cluster {address or '(local)'}: {exc}") from None
    cpus, gpus = _resources(ray)
    display.text(f"ray: {'connected to ' + address if address else 'started a local Ray instance'} "
                 f"({cpus} CPUs, {gpus} GPUs)")
    return cpus, gpus


def _resources(ray: Any) -> tuple[int, int]:
    res = ray.cluster_resources()
    return max(1, int(res.get("CPU", 1))), int(res.get("GPU", 0))


def _remote_fn() -> Any:
    global _task
    if _task is None:
        import ray

        @ray.remote(max_retries=0)
        def run_node(job: Any, job_file: str) -> tuple[str, Any, Any]:
            """In the Ray worker: the job in its own process; the outcome as plain data
            (exceptions with extra fields do not survive Ray's pickling reliably)."""
            from ftlang.runtime.worker import WorkerError, run_job
            from ftlang.stdlib.spec import StepError

            try:
                meta = run_job(job, Path(job_file), log=lambda m: None, progress=lambda *a: None)
                return "ok", meta, None
            except StepError as exc:
                return "step", str(exc), exc.hint
            except WorkerError as exc:
                return "worker", str(exc), str(exc.log) if exc.log else None

        _task = run_node
    return _task


def run(job: Any, job_file: Path, *, log: Callable[[str], None], progress: Callable[..., None],
        cancel: Any, gpus: int = 0) -> dict[str, Any]:
    """Submits the job, forwards its events while it runs, returns its meta (or raises the
    same StepError / WorkerError a local job would)."""
    import ray
    from ftlang.runtime.worker import WorkerError, _forward
    from ftlang.stdlib.spec import StepError

    job.env.pop("CUDA_VISIBLE_DEVICES", None)  # Ray assigns the devices of num_gpus itself
    job.events.parent.mkdir(parents=True, exist_ok=True)
    job.events.write_text("")
    ref = _remote_fn().options(num_cpus=1, num_gpus=gpus).remote(job, str(job_file))
    offset, outcome = 0, {}
    try:
        while True:
            done, _ = ray.wait([ref], timeout=0.2)
            offset = _forward(job.events, offset, outcome, log, progress)
            if done:
                break
            if cancel.is_set():
                raise KeyboardInterrupt
            time.sleep(0.05)
    except BaseException:
        ray.cancel(ref, force=True)  # kills the Ray worker; its job process dies with it
        raise
    try:
        status, a, b = ray.get(ref)
    except ray.exceptions.RayError as exc:
        raise WorkerError(f"the Ray task failed: {str(exc).splitlines()[0]}") from None
    if status == "ok":
        return a
    if status == "step":
        raise StepError(a, hint=b)
    raise WorkerError(a, Path(b) if b else None)
