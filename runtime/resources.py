"""What a job needs and what the machine has: `--jobs N` slots and the visible GPUs.

A node needs one slot; a node of a kind that puts a model on the accelerator (train, eval,
generate, select, merge, export, model) also needs GPUs when the machine has any: the
train node's `distributed { processes = N }` many, else one. A GPU is given to one job at
a time through its own CUDA_VISIBLE_DEVICES; a job without GPUs gets CUDA_VISIBLE_DEVICES
empty, so it cannot take one behind the scheduler's back. Every job gets cores // jobs
threads (OMP_NUM_THREADS and MKL_NUM_THREADS, which torch reads at import), so two jobs on
two cores use one core each instead of fighting for both.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

from ftlang.compiler.ir import Node

GPU_KINDS = {"train", "eval", "generate", "select", "merge", "export", "model", "judge_pairs", "critique"}


@dataclass
class Need:
    gpus: int = 0
    processes: int = 1


@dataclass
class Grant:
    gpus: list[str] = field(default_factory=list)
    processes: int = 1
    env: dict[str, str] = field(default_factory=dict)


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, without importing torch: CUDA_VISIBLE_DEVICES when
    set, else the NVIDIA device files."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    return sorted((p.removeprefix("/dev/nvidia") for p in glob.glob("/dev/nvidia[0-9]*")), key=int)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def processes(node: Node) -> int:
    """How many processes a training node launches (its `distributed` sub-block; 1 without)."""
    from ftlang.stdlib import distributed

    # The sub-block's own reading: "auto" is every visible GPU, as the launch will count it.
    return distributed.world(node.params)[0]


class Pool:
    def __init__(self, jobs: int, gpus: list[str] | None = None) -> None:
        self.slots = jobs
        self.gpus = visible_gpus() if gpus is None else gpus
        self.free = list(self.gpus)
        self.threads = max(1, cores() // max(1, jobs))

    def take(self, need: Need, jobs: int) -> Grant | None:
        """A grant if the slots and GPUs are free now, else None (the job waits)."""
        want = min(need.gpus, len(self.gpus))  # more than the machine has: all of them, alone
        if self.slots < 1 or len(self.free) < want:
            return None
        self.slots -= 1
        ids, self.free = self.free[:want], self.free[want:]
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
        return Grant(ids, need.processes, env)

    def give(self, grant: Grant) -> None:
        self.slots += 1
        self.free = [g for g in self.gpus if g in set(self.free) | set(grant.gpus)]


def need(node: Node, pool: Pool) -> Need:
    n = processes(node) if node.kind == "train" else 1
    gpus = n if pool.gpus and node.kind in GPU_KINDS else 0
    return Need(gpus, n)
