"""Declared signatures of steps and calls, and the context a step runs with.

The compiler reads these declarations to check a `.ft` file; only the runtime
calls a step's `run`. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

# Every int value must lie within +-INT_LIMIT unless its Attr declares tighter bounds:
# beyond 2**53 an int no longer survives a float (JSON readers, the ledger, torch's
# float schedules), and nothing a pipeline counts (steps, tokens, ranks) gets near it.
INT_LIMIT = 2**53


@dataclass(frozen=True)
class Attr:
    """One attribute of a block or one argument of a call.

    `type` is a small type expression read by ftlang.compiler.types:
    str, int, float, bool, path, ident, enum, any, dataset, model, template,
    call[FAMILY], list[T], select, columns.
    """

    name: str
    type: str
    default: Any = None
    doc: str = ""
    semantic: bool = True  # False: never enters a cache key (paths, logging, workers)
    ge: float | None = None  # inclusive lower bound
    gt: float | None = None  # exclusive lower bound
    le: float | None = None  # inclusive upper bound
    choices: tuple[str, ...] = ()
    warn_above: float | None = None  # legal, but above this a value is most likely a mistake

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Signature:
    """What a block or a call accepts. `positional` names the arguments that may be
    given without a name, in order (`jsonl("data/x.jsonl")`)."""

    name: str
    attrs: tuple[Attr, ...]
    doc: str = ""
    positional: tuple[str, ...] = ()

    def attr(self, name: str) -> Attr | None:
        for a in self.attrs:
            if a.name == name:
                return a
        return None

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attrs]


@dataclass(frozen=True)
class StepSpec:
    """A block kind: its signature, sub-blocks, output kind and implementation."""

    kind: str
    version: int  # bump when the step's behaviour changes: it enters every key
    signature: Signature
    output: str  # dataset | model | template | metrics
    run: str  # "module:function", imported only when the step runs
    subblocks: dict[str, Signature] = field(default_factory=dict)
    trains: bool = False  # keys include the training environment fingerprint
    statements: tuple[str, ...] = ()  # extra statements allowed: "sql", "assert"


@dataclass(frozen=True)
class Call:
    """A resolved call value such as lora(r = 16): its name and full arguments."""

    name: str
    args: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.args[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.args.get(key, default)


@dataclass(frozen=True)
class Artifact:
    """A committed, content-addressed output of a node, seen by a downstream step.

    `port` selects a part of it: `clean.train` is the `train` split of `curate.clean`.
    """

    node: str
    digest: str
    path: Path
    port: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def dataset_file(self) -> Path:
        return self.path / f"{self.port or 'data'}.parquet"


def _no_log(msg: str) -> None:
    pass


def _no_progress(done: int, total: int | None, msg: str = "") -> None:
    pass


@dataclass
class StepContext:
    """Everything a step's `run(ctx)` may use. It writes its artifact under `out`
    (an empty temp dir, committed by atomic rename when run returns) and returns
    a dict of metadata (metrics, row counts) for the ledger."""

    node: str  # "train.sft"
    name: str  # "sft"
    params: dict[str, Any]  # complete: defaults filled; refs are Artifacts, paths are Paths
    out: Path
    project: Path  # folder of the .ft file
    cache: Path  # .ft/cache: shared per-row caches live under it
    log: Callable[[str], None] = _no_log
    progress: Callable[..., None] = _no_progress
    key: str = ""  # the node key: checkpoints under cache/ are valid only for the same key
    verbose: bool = False  # show library logs and warnings


class StepError(Exception):
    """A user-facing failure of a step (bad data, missing file, offline hub).

    The runtime prints its message with the node id and the block's `.ft` line,
    without a traceback. `path`/`row` name the offending input when known.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, row: int | None = None,
                 hint: str | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{row}: " if row is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.row = row
        self.hint = hint
