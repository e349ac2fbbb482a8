"""Worker processes kept warm across the jobs of one `ft run --jobs N`.

**In:** a job's extra environment (`Job.env`: the grant's OMP_NUM_THREADS, a GPU's
CUDA_VISIBLE_DEVICES, ...) and the path of its log. **Out:** a `python -m
ftlang.runtime.worker --serve` process with exactly that environment, idle or new; it runs
the jobs written to its stdin one after the other (worker.serve).

Why: a worker process that trains imports torch, transformers and peft first: seconds of
CPU per job, more than a short step itself (bench/bench_jobs.py shows the difference). A warm worker pays it once per slot instead of once per job; steps already share
one process under `--jobs 1`, so nothing a step leaves behind is new to them.

A worker is reused only for a job with the same environment (threads and devices are
fixed when torch starts), only after a job that ended cleanly (a result or a StepError),
and only if that job saw no GPU (`give`); any other end retires it. Each worker is its own
process group: the driver kills a job by killing its worker's group (worker.stop_group),
as for a one-job worker.

Workers are started by one thread that lives as long as the pool: a worker asks the kernel
for SIGTERM when its parent dies (worker._die_with_parent), and for Linux the parent is the
*thread* that forked it; started from a job's thread, a warm worker would be killed when
that job's thread ends, between its first job and its second.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

Key = tuple[tuple[str, str], ...]


def key_of(env: dict[str, str]) -> Key:
    return tuple(sorted(env.items()))


class WarmPool:
    """Idle serving workers by environment; thread-safe (one job thread per running job)."""

    def __init__(self) -> None:
        self._idle: dict[Key, list[subprocess.Popen[bytes]]] = {}
        self._lock = threading.Lock()
        self.started = 0  # workers spawned
        self.jobs = 0  # jobs given to a worker (`ft run -v` says both)
        self._asks: queue.Queue[tuple[dict[str, str], Path, queue.Queue[object]] | None] = queue.Queue()
        self._spawner = threading.Thread(target=self._spawn_loop, name="ft-warm-spawner", daemon=True)
        self._spawner.start()

    def take(self, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """An idle worker with this environment, or a new one whose start-up output goes to
        `log` (the job's log: an import error shows there)."""
        key = key_of(env)
        with self._lock:
            self.jobs += 1
            idle = self._idle.get(key, [])
            while idle:
                proc = idle.pop()
                if proc.poll() is None:
                    return proc
            self.started += 1
        answer: queue.Queue[object] = queue.Queue()
        self._asks.put((env, log, answer))
        got = answer.get()
        if isinstance(got, BaseException):
            raise got
        return got  # type: ignore[return-value]

    def _spawn_loop(self) -> None:
        while (ask := self._asks.get()) is not None:
            env, log, answer = ask
            try:
                full = {**os.environ, **env, "FT_DRIVER_PID": str(os.getpid())}
                with open(log, "ab") as out:
                    answer.put(subprocess.Popen(
                        [sys.executable, "-m", "ftlang.runtime.worker", "--serve"], stdin=subprocess.PIPE,
                        stdout=out, stderr=subprocess.STDOUT, env=full, start_new_session=True))
            except BaseException as exc:  # noqa: BLE001 - raised in the job's thread, which asked
                answer.put(exc)

    def give(self, proc: subprocess.Popen[bytes], env: dict[str, str]) -> None:
        """A worker whose job ended cleanly, back to the idle set; one that saw a GPU ends
        instead: idle, it would keep its CUDA context and torch's cached blocks on that GPU,
        memory a job granted the same GPU in another worker would miss (and a GPU step is
        long against an import)."""
        if proc.poll() is not None:
            return
        if env.get("CUDA_VISIBLE_DEVICES"):
            self._end([proc])
            return
        with self._lock:
            self._idle.setdefault(key_of(env), []).append(proc)

    def close(self) -> None:
        """End every idle worker: its stdin closes, it exits; one that does not is killed."""
        with self._lock:
            procs = [p for group in self._idle.values() for p in group]
            self._idle.clear()
        self._asks.put(None)
        self._end(procs)

    @staticmethod
    def _end(procs: list[subprocess.Popen[bytes]]) -> None:
        """Close each worker's stdin (it exits after its loop); kill one that does not."""
        from ftlang.runtime.worker import stop_group

        for proc in procs:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                stop_group(proc)
