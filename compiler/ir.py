"""The typed IR: checked nodes with resolved values. networkx only links them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ftlang.lang.ast import Expr, Span
from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib.spec import Call, StepSpec


@dataclass(frozen=True)
class RefValue:
    """A reference to another node's output; `port` names a part (clean.train).

    `many`: the reference sits in a list-typed attribute (eval `models = [base, sft]`),
    so a swept target contributes every point instead of fanning this block out."""

    node: str
    port: str | None = None
    span: Span | None = field(default=None, compare=False)
    many: bool = field(default=False, compare=False)

    @property
    def label(self) -> str:
        name = self.node.split(".", 1)[1]
        return f"{name}.{self.port}" if self.port else name


@dataclass(frozen=True)
class FileValue:
    """An input file: its content digest, never its path, enters cache keys."""

    rel: str
    abs: str
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EnvValue:
    """A value read with env("NAME", default). A secret one never enters keys, logs or
    the ledger: the key records only the variable's name."""

    name: str
    value: str
    secret: bool = True


@dataclass(frozen=True)
class SweepValue:
    """`sweep [a, b]` after checking: one value per point and a label for node ids.

    Only exists between the check and sweep passes: `sweeps.expand` replaces each with
    one of its values, so steps and keys never see it."""

    values: tuple[Any, ...]
    labels: tuple[str, ...]  # lr = sweep [1e-4, 2e-4] -> ("1e-4", "2e-4")
    span: Span | None = field(default=None, compare=False)
    name: str | None = None  # the dimension's name when not the attribute's (a preset argument)


@dataclass(frozen=True)
class SelectIR:
    """`select = min loss on clean.heldout` on a swept train block."""

    mode: str  # min | max
    metric: str  # loss | perplexity | exact_match
    data: RefValue
    span: Span


@dataclass(frozen=True)
class OutPath:
    """An output location: not semantic."""

    rel: str
    abs: str


@dataclass(frozen=True)
class AssertIR:
    expr: Expr
    text: str  # the assertion as written
    span: Span


@dataclass
class Node:
    id: str  # "train.sft"
    kind: str
    name: str
    spec: StepSpec
    params: dict[str, Any]  # complete; RefValue / FileValue / OutPath / Call / plain values
    span: Span
    attr_spans: dict[str, Span] = field(default_factory=dict)
    asserts: list[AssertIR] = field(default_factory=list)
    select: SelectIR | None = None  # set on the block-level node of a swept train block
    point: dict[str, str] = field(default_factory=dict)  # "lr" -> "1e-4"; "sft.lr" inherited

    @property
    def block(self) -> str:
        """The block-level id: "train.sft" for "train.sft[lr=1e-4]"."""
        return self.id.split("[", 1)[0]

    def refs(self) -> list[RefValue]:
        return refs_in(self.params)

    @property
    def line(self) -> str:
        return f"{self.span.file}:{self.span.line}"


# ---- one walk over resolved values ------------------------------------------------------
# Values nest as Call / dict / list / tuple / SweepValue around leaves (RefValue, FileValue,
# OutPath, EnvValue, plain constants). Every pass that looks inside a value uses these two.

DESCEND: Any = object()  # a transform function's answer: "not mine, look inside"


@dataclass(frozen=True)
class Splice:
    """A transform answer that replaces one list item by several (a swept `models` entry)."""

    items: list[Any]


def walk(value: Any, name: str = "") -> Iterator[tuple[str, Any]]:
    """`value` and everything inside it, depth first, each with the attribute or argument
    name it sits at (list items keep their list's name; a sweep's own name wins)."""
    yield name, value
    if isinstance(value, SweepValue):
        for v in value.values:
            yield from walk(v, value.name or name)
    elif isinstance(value, Call):
        for k, v in value.args.items():
            yield from walk(v, k)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, k)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from walk(v, name)


def transform(value: Any, fn: Callable[[Any], Any]) -> Any:
    """Rebuilds `value` top-down: `fn(v)` returns v's replacement, or DESCEND to keep v's
    shape and transform what is inside it. Lists stay lists and tuples tuples."""
    new = fn(value)
    if new is not DESCEND:
        return new
    if isinstance(value, SweepValue):
        return replace(value, values=tuple(transform(v, fn) for v in value.values))
    if isinstance(value, Call):
        return replace(value, args={k: transform(v, fn) for k, v in value.args.items()})  # keeps its family
    if isinstance(value, dict):
        return {k: transform(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        out: list[Any] = []
        for v in value:
            r = transform(v, fn)
            if isinstance(r, Splice):
                out += r.items
            else:
                out.append(r)
        return out if isinstance(value, list) else tuple(out)
    return value


def files_in(value: Any) -> list[FileValue]:
    """Every input file a resolved value names (a source, a custom metric's module...)."""
    return [v for _, v in walk(value) if isinstance(v, FileValue)]


def refs_in(value: Any) -> list[RefValue]:
    """Every reference to another node inside a value."""
    return [v for _, v in walk(value) if isinstance(v, RefValue)]


@dataclass
class Program:
    file: Path
    project: Path  # folder of the .ft file: relative paths and .ft/ live there
    sources: dict[str, str]
    nodes: dict[str, Node]
    graph: Any  # networkx.DiGraph over node ids
    warnings: list[Diagnostic] = field(default_factory=list)
    remote: str | None = None  # cache { remote = ... } (runtime/remote.py); not part of any key

    def order(self) -> list[str]:
        import networkx as nx

        return list(nx.lexicographical_topological_sort(self.graph))
