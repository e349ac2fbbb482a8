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
    # A stack, not recursion: one generator for the whole value (every pass walks every
    # node's parameters, defaults included: nested generators cost most of a compile).
    stack = [(name, value)]
    pop, push = stack.pop, stack.extend
    while stack:
        name, value = pop()
        yield name, value
        kind = type(value)
        if kind in _LEAVES:
            continue
        if isinstance(value, SweepValue):
            inner = value.name or name
            push([(inner, v) for v in reversed(value.values)])
        elif isinstance(value, Call):
            push(reversed(value.args.items()))
        elif isinstance(value, dict):
            push(reversed(value.items()))
        elif isinstance(value, (list, tuple)):
            push([(name, v) for v in reversed(value)])


_LEAVES = frozenset({str, int, float, bool, type(None)})


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
    out: list[Any] = []
    _find(value, FileValue, out)
    return out


def refs_in(value: Any) -> list[RefValue]:
    """Every reference to another node inside a value."""
    out: list[Any] = []
    _find(value, RefValue, out)
    return out


def contains(value: Any, cls: type) -> bool:
    """Whether `walk(value)` meets a value of type `cls`, stopping at the first (the
    compile asks it of every node, where the answer is nearly always no)."""
    if type(value) in _LEAVES:
        return False
    if isinstance(value, cls):
        return True
    if isinstance(value, SweepValue):
        return any(contains(v, cls) for v in value.values)
    if isinstance(value, Call):
        return any(contains(v, cls) for v in value.args.values())
    if isinstance(value, dict):
        return any(contains(v, cls) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(contains(v, cls) for v in value)
    return False


def _find(value: Any, cls: type, out: list[Any]) -> None:
    """`walk`'s values of type `cls`, in its order, without a (name, value) pair for each
    of the rest: the planner and the compile ask this of every node."""
    if type(value) in _LEAVES:
        return
    if isinstance(value, cls):
        out.append(value)
    if isinstance(value, SweepValue):
        for v in value.values:
            _find(v, cls, out)
    elif isinstance(value, Call):
        for v in value.args.values():
            _find(v, cls, out)
    elif isinstance(value, dict):
        for v in value.values():
            _find(v, cls, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _find(v, cls, out)


Edge = tuple[str, str, dict[str, Any]]  # upstream, downstream, {"port": ..., "span": ...}


@dataclass
class Program:
    file: Path
    project: Path  # folder of the .ft file: relative paths and .ft/ live there
    sources: dict[str, str]
    nodes: dict[str, Node]
    edges: list[Edge]  # from each reference (compiler/graph.py)
    warnings: list[Diagnostic] = field(default_factory=list)
    remote: str | None = None  # cache { remote = ... } (runtime/remote.py); not part of any key

    def order(self) -> list[str]:
        from ftlang.compiler.graph import order

        return order(self.nodes, self.edges)

    @property
    def graph(self) -> Any:
        """The networkx DiGraph over node ids (edge data: port, span), built on first use:
        the planner's ancestors and descendants, `ft graph`."""
        g = self.__dict__.get("_graph")
        if g is None:
            import networkx as nx

            g = nx.DiGraph()
            for nid, node in self.nodes.items():
                g.add_node(nid, kind=node.kind)
            g.add_edges_from(self.edges)
            self.__dict__["_graph"] = g
        return g
