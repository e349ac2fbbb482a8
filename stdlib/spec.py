"""Declared signatures of steps and calls, and the context a step runs with.

The compiler reads these declarations to check a `.ft` file; only the runtime
calls a step's `run`. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ftlang.lang.diagnostics import Diagnostic, Label


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

# Every int value must lie within +-INT_LIMIT unless its Attr declares tighter bounds:
# beyond 2**53 an int no longer survives a float (JSON readers, the ledger, torch's
# float schedules), and nothing a pipeline counts (steps, tokens, ranks) gets near it.
INT_LIMIT = 2**53
# Sanity bounds (checks, not semantics): values beyond them cannot run to the end.
STEPS_LIMIT = 10**9  # optimiser steps, step intervals
COUNT_LIMIT = 65536  # examples per batch, ranks, virtual tokens, samples per prompt
TOKENS_LIMIT = 1_000_000  # tokens per example or completion
SEED_LIMIT = 2**32 - 1  # numpy's seed range (transformers' set_seed seeds numpy too)


BASE_TYPES = frozenset({"str", "int", "float", "bool", "path", "outpath", "ident", "enum", "any", "dataset",
                        "model", "template", "select", "columns"})


@dataclass(frozen=True)
class TypeExpr:
    """A parsed attribute type: `list[call[method]]` is list of (call of family `method`)."""

    text: str  # as declared, without spaces
    kind: str  # "list", "call", or a base type
    item: TypeExpr | None = None  # list[T]: T
    family: str = ""  # call[FAMILY]: FAMILY


def parse_type(text: str) -> TypeExpr:
    """The parsed form of an attribute type; ValueError when it is not one."""
    return _parse_type(text.replace(" ", ""))


@cache
def _parse_type(t: str) -> TypeExpr:
    text = t
    if t.startswith("list[") and t.endswith("]"):
        return TypeExpr(t, "list", item=_parse_type(t[5:-1]))
    if t.startswith("call[") and t.endswith("]") and t[5:-1].isidentifier():
        return TypeExpr(t, "call", family=t[5:-1])
    if t in BASE_TYPES:
        return TypeExpr(t, t)
    raise ValueError(f"unknown attribute type {text!r}")


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
    unique: bool = False  # list[T]: an entry given twice is an error (FT0108): a repeat means nothing
    regex: bool = False  # str: a Python regular expression, compiled when checked (FT0132)

    def __post_init__(self) -> None:
        parse_type(self.type)  # a malformed type fails where it is declared, at import

    @property
    def of(self) -> TypeExpr:
        """The parsed `type` (parsed once per distinct string)."""
        return parse_type(self.type)

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


# ---- compile-time hooks ------------------------------------------------------------------
# A step kind's module declares, next to its StepSpec, the checks the compiler runs on a block
# of that kind. They see the checked block through the read-only views below (never the
# compiler's own state) and answer with lang.diagnostics values, so stdlib needs nothing
# from ftlang.compiler. Values in `params` are the compiler's IR (RefValue, FileValue, Call,
# and SweepValue before sweeps are expanded): a hook handles what it knows and leaves the
# rest alone. `points(value)` gives the values a possibly swept value takes.


@dataclass(frozen=True)
class Written:
    """Another block as it is written, as far as a rule may look at it: its kind and, for
    each attribute written as a call, the call's name with the names of the calls among its
    arguments (`method = dpo(adapter = lora(r = 8))`: {"method": ("dpo", {"adapter": "lora"})})."""

    kind: str
    calls: Mapping[str, tuple[str, Mapping[str, str]]]


def _nothing(name: str) -> Written | None:
    return None


@dataclass(frozen=True)
class BlockView:
    """What a step's `rules` hook sees of one checked block."""

    kind: str
    name: str
    span: Any  # the block name's lang.ast.Span: where block-level diagnostics point
    params: Mapping[str, Any]  # checked values, defaults filled; an invalid value is absent
    # attribute -> its span, only for attributes written in the block; also `attr.arg` -> the value
    # of each named argument of a call written there (init.heads), and `split.by`
    spans: Mapping[str, Any]
    asserts: tuple[Any, ...] = ()  # the lang.ast expressions of its `assert` statements
    lookup: Callable[[str], Written | None] = _nothing  # another block by name; None: no such block
    describe: Callable[[Any], str] = repr  # an expression in words ("a string"), for messages

    def given(self, name: str) -> bool:
        """Whether the attribute is written in the block (not left to its default)."""
        return name in self.spans

    def at(self, name: str) -> Any:
        """The attribute's span, or the block name's when it is not written."""
        return self.spans.get(name, self.span)


@dataclass(frozen=True)
class Need:
    """Columns a step reads from the dataset(s) that one of its attributes refers to.

    `columns` holds (column, the attribute that names it): ("prompt", "prompt_field") is
    fixed by the user's `prompt_field`, ("chosen", None) is fixed by the method. A column
    that is not a plain string (swept, from env) makes the need unknown: it is skipped."""

    attr: str
    columns: tuple[tuple[Any, str | None], ...]


def fields(params: Mapping[str, Any], names: tuple[str, ...]) -> tuple[tuple[Any, str | None], ...]:
    """Need.columns for attributes that name columns (`prompt_field`, ...)."""
    return tuple((params.get(n), n) for n in names)


def points(value: Any) -> list[Any]:
    """The values a checked value takes: the points of a sweep, else the value itself."""
    inner = getattr(value, "values", None)  # a SweepValue's tuple (a dict's .values is a method)
    if isinstance(inner, tuple):
        return list(inner)
    return [value]


def error(code: str, message: str, span: Any, label: str = "", help: str | None = None,
          extra: tuple[Label, ...] = ()) -> Diagnostic:
    return Diagnostic(code, message, [Label(span, label), *extra], help=help)


def warning(code: str, message: str, span: Any, label: str = "", help: str | None = None) -> Diagnostic:
    return Diagnostic(code, message, [Label(span, label)], level="warning", help=help)


def _no_summary(meta: Mapping[str, Any]) -> str:
    return ""


@dataclass(frozen=True)
class StepSpec:
    """A block kind: its signature, sub-blocks, output kind and implementation, and the
    compile-time hooks its module declares with it."""

    kind: str
    version: int  # bump when the step's behaviour changes: it enters every key
    signature: Signature
    output: str  # dataset | model | template | metrics
    run: str  # "module:function", imported only when the step runs
    subblocks: dict[str, Signature] = field(default_factory=dict)
    trains: bool = False  # keys include the training environment fingerprint
    statements: tuple[str, ...] = ()  # extra statements allowed: "sql", "assert"
    # Rules across attributes of one block (FT0114 and the like), run after every attribute
    # is checked, whether or not some had errors.
    rules: Callable[[BlockView], list[Diagnostic]] | None = None
    # The columns the step reads from its input datasets (compiler/contracts.py checks them).
    needs: Callable[[Mapping[str, Any]], list[Need]] | None = None
    # Parts with fixed names that every block of this kind has (`critique x`: x.sft, x.prefs),
    # beside the ones a `split` sub-block names.
    ports: tuple[str, ...] = ()
    # The columns the step writes, for compiler/contracts.py: params in, {part (None: the
    # whole output): column names} out, or None when the params leave them unknown.
    columns: Callable[[Mapping[str, Any]], Mapping[str | None, tuple[str, ...]] | None] | None = None
    # The one-line result for `ft run`'s "done" line and the report's steps table: the
    # ledger metadata `run` returned in, text out ("" says nothing).
    summary: Callable[[Mapping[str, Any]], str] = _no_summary


@dataclass(frozen=True)
class Method:
    """A training method: what `method = name(...)` means in a train block. The train step
    runs `run` ("module:function") with the step's context; the compiler reads the rest."""

    signature: Signature
    family: str  # adapter (which weights train; `objective` says on what) | preference | online
    run: str
    lr: float  # the default peak learning rate (full weights)
    lr_adapter: float | None = None  # the default when its `adapter` argument is not `full`
    columns: tuple[str, ...] = ()  # dataset columns it reads (adapter methods: by objective)
    reference: bool | Callable[[Call], bool] = False  # trains against a frozen reference model
    # Train attributes it never reads, each with why (the help line): giving one is an error.
    unused: Mapping[str, str] = field(default_factory=dict)
    # Checks of its own arguments, given the call and the train block (errors point at `method`).
    rules: Callable[[Call, BlockView], list[Diagnostic]] | None = None

    @property
    def name(self) -> str:
        return self.signature.name

    def uses_reference(self, call: Call) -> bool:
        return self.reference(call) if callable(self.reference) else self.reference

    def default_lr(self, call: Call) -> float:
        adapter = call.args.get("adapter")
        if self.lr_adapter is not None and getattr(adapter, "name", "full") != "full":
            return self.lr_adapter
        return self.lr


@dataclass(frozen=True)
class Metric:
    """An eval metric: its call signature, its direction and what it measures from."""

    signature: Signature
    higher_is_better: bool | None  # None: the user's function decides (py(...))
    generates: bool  # needs the models' generations; the rest read only the logits

    @property
    def name(self) -> str:
        return self.signature.name


@dataclass(frozen=True)
class Call:
    """A resolved call value such as lora(r = 16): its name and full arguments.

    `family` is the call family the compiler resolved it in ("method", "metric", ...): a
    name two families share (`py`, a metric and a reward) then has one signature. It is
    not part of the value (equality, keys): the name and arguments are."""

    name: str
    args: dict[str, Any]
    family: str = field(default="", compare=False, repr=False)

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
