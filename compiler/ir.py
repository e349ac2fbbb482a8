"""The typed IR: checked nodes with resolved values. networkx only links them."""

from __future__ import annotations

from dataclasses import dataclass, field
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
        out: list[RefValue] = []
        _collect_refs(self.params, out)
        return out

    @property
    def line(self) -> str:
        return f"{self.span.file}:{self.span.line}"


def files_in(value: Any) -> list[FileValue]:
    """Every input file a resolved value names (a source, a custom metric's module...)."""
    if isinstance(value, FileValue):
        return [value]
    if isinstance(value, Call):
        return files_in(list(value.args.values()))
    if isinstance(value, dict):
        return files_in(list(value.values()))
    if isinstance(value, (list, tuple)):
        return [f for v in value for f in files_in(v)]
    return []


def _collect_refs(value: Any, out: list[RefValue]) -> None:
    if isinstance(value, RefValue):
        out.append(value)
    elif isinstance(value, Call):
        _collect_refs(value.args, out)
    elif isinstance(value, SweepValue):
        _collect_refs(list(value.values), out)
    elif isinstance(value, dict):
        for v in value.values():
            _collect_refs(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect_refs(v, out)


@dataclass
class Program:
    file: Path
    project: Path  # folder of the .ft file: relative paths and .ft/ live there
    sources: dict[str, str]
    nodes: dict[str, Node]
    graph: Any  # networkx.DiGraph over node ids
    warnings: list[Diagnostic] = field(default_factory=list)

    def order(self) -> list[str]:
        import networkx as nx

        return list(nx.lexicographical_topological_sort(self.graph))
