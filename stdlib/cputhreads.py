"""How many threads torch uses for a training step on CPU, chosen on purpose.

The count changes how float sums round, so it changes a trained model's bytes: it must not
depend on what else the machine is doing, or the same `.ft` on the same machine would give
different artifacts from one run to the next (and early cutoff would be lost). So it is a
fixed function of the process's settings:

    FT_TORCH_THREADS=N   if set (the user's choice: e.g. 1 on a machine others keep busy,
                         where torch's spinning OpenMP threads slow a step several times);
    OMP_NUM_THREADS=N    if set (`ft run --jobs N` sets it to cores / N for each job);
    else                 the cores this process may run on (its affinity mask).

The count is not in a node's key (like the machine it runs on). CUDA steps are left
alone: their host threads only feed the device.

How idle threads wait is a separate knob that changes no number: torch's OpenMP (GNU
libgomp) threads spin 300,000 times before they sleep, so on a machine where anything
else runs, a step's threads burn the cores the others need and wait for each other
(bench/bench_spin.py: one busy process beside a 2-thread step made it 4-25x slower). ftlang
asks for a short spin (SPIN_COUNT) before torch loads, unless the user chose a wait policy.
"""

from __future__ import annotations

import os
import sys

# libgomp's spin count before an idle thread sleeps (its default: 300,000). bench/bench_spin.py
# measures it against the default, quiet and beside a busy process.
SPIN_COUNT = "3000"
_WAIT_VARS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def choose(cores: int | None = None) -> int:
    """The thread count for a CPU step; `cores` defaults to this process's affinity mask."""
    for var in ("FT_TORCH_THREADS", "OMP_NUM_THREADS"):
        given = os.environ.get(var, "").strip()
        if given.isdigit() and int(given) > 0:
            return int(given)
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            cores = os.cpu_count() or 1
    return max(1, cores)


def apply(device: str) -> int | None:
    """Sets torch's intra-op threads for a step on `device`; the count, or None (not CPU)."""
    if device != "cpu":
        return None
    import torch

    n = choose()
    torch.set_num_threads(n)
    return n


def prepare_env() -> bool:
    """Sets GOMP_SPINCOUNT=SPIN_COUNT for this process and the processes it starts, unless
    the user set GOMP_SPINCOUNT or OMP_WAIT_POLICY. True when it applies to this process too:
    libgomp reads it when torch is first imported, so after that only new processes see it."""
    if any(os.environ.get(v, "").strip() for v in _WAIT_VARS):
        return False
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return "torch" not in sys.modules
