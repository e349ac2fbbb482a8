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
"""

from __future__ import annotations

import os


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
