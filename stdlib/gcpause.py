"""`paused_gc()`: Python's cyclic collector off for a block that builds many objects and
frees them by reference count (a compile's AST and IR, tokenized rows, examples).

Each collection walks every object the process holds; such a block sets off many and none
finds a cycle to free, so they only cost time. The collector is restored after, as it was,
also on an error.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
