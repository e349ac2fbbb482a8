"""The AST of a `.ft` file. Every node carries the span it was parsed from."""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    col: int
    end_line: int
    end_col: int  # exclusive, like Lark's end_column

    def to(self, other: Span) -> Span:
        return Span(self.file, self.line, self.col, other.end_line, other.end_col)


@functools.lru_cache(maxsize=16)
def source_lines(text: str) -> list[str]:
    """The lines of a .ft source as spans number them: split at "\n" only, a "\r" before
    it dropped. str.splitlines also splits at a lone "\r", a form feed (whitespace to the
    grammar), U+2028 and others, which may sit inside a string or a comment: every line
    after one would be shown, sliced and formatted as the wrong one. Split once per text
    (a str caches its hash: asking per block made a compile quadratic). Read-only."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # as splitlines: no empty line after the last "\n"
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


# ---- expressions ------------------------------------------------------------


@dataclass(frozen=True)
class Str:
    value: str
    span: Span
    long: bool = False  # written as """..."""


@dataclass(frozen=True)
class Num:
    value: int | float
    text: str  # as written: 1e-4 stays 1e-4 in `ft fmt`
    span: Span


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Ref:
    parts: tuple[str, ...]  # clean.train -> ("clean", "train")
    span: Span

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class Kwarg:
    name: str
    value: Expr
    span: Span  # of the name


@dataclass(frozen=True)
class CallExpr:
    name: tuple[str, ...]
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]
    span: Span
    name_span: Span

    @property
    def dotted(self) -> str:
        return ".".join(self.name)


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class Neg:
    operand: Expr
    span: Span


@dataclass(frozen=True)
class Sweep:
    items: ListExpr
    span: Span


@dataclass(frozen=True)
class Select:
    mode: str  # min | max
    metric: str
    data: Ref
    span: Span


Expr = Str | Num | Bool | ListExpr | Ref | CallExpr | BinOp | Neg | Sweep | Select


# ---- statements inside a block ----------------------------------------------


@dataclass(frozen=True)
class Attr:
    name: str
    value: Expr
    span: Span  # the whole `name = value`
    name_span: Span


@dataclass(frozen=True)
class Typed:
    """`name: type`, as in schema { prompt: str }."""

    name: str
    type: str
    span: Span
    name_span: Span


@dataclass(frozen=True)
class SubBlock:
    name: str
    body: tuple[Stmt, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Sql:
    text: Str
    span: Span


@dataclass(frozen=True)
class Assert:
    expr: Expr
    span: Span
    text: str | None = None  # set when a block preset built it: not the source's text


Stmt = Attr | Typed | SubBlock | Sql | Assert


# ---- top-level items --------------------------------------------------------


@dataclass(frozen=True)
class Version:
    text: str
    span: Span


@dataclass(frozen=True)
class Name:
    name: str
    span: Span


@dataclass(frozen=True)
class Use:
    module: str  # stdlib.methods, or a file path for `use "./x.ft"`
    is_file: bool
    names: tuple[Name, ...]
    span: Span


@dataclass(frozen=True)
class Block:
    kind: Name
    name: Name
    body: tuple[Stmt, ...]
    span: Span  # the header `kind name`
    body_span: Span | None = None  # `{ ... }`, braces included; None for desugared blocks


@dataclass(frozen=True)
class Definition:
    """`kind name = expr`, e.g. template chat = chatml(system = "...")."""

    kind: Name
    name: Name
    value: Expr
    span: Span


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Expr | None
    span: Span
    name_span: Span | None = None


@dataclass(frozen=True)
class Preset:
    """`kind name(params) = call(...)`: a typed pure function written in .ft.

    `value` is the call it returns; the `{ body }` form only parses (the compiler
    explains how to write it), so exactly one of `value` and `body_span` is set."""

    kind: Name
    name: Name
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span  # the header `kind name`
    value: Expr | None = None
    body_span: Span | None = None


@dataclass(frozen=True)
class Settings:
    """`kind { body }` without a name: settings of the whole file (`cache { remote = ... }`),
    checked by compiler/settings.py; never a step, never in a key."""

    kind: Name
    body: tuple[Stmt, ...]
    span: Span  # the kind
    body_span: Span | None = None


Item = Use | Block | Definition | Preset | Settings


@dataclass(frozen=True)
class Comment:
    text: str  # including the leading '#'
    line: int
    col: int
    own_line: bool  # nothing but whitespace before it on its line


@dataclass
class Module:
    file: str
    source: str
    version: Version | None
    items: list[Item]

    @functools.cached_property
    def comments(self) -> list[Comment]:
        """Its comments with their positions, for `ft fmt` (the grammar drops them); found
        on first use: a compile never needs them."""
        from ftlang.lang.parser import collect_comments

        return collect_comments(self.source)


# The frozen nodes pickle as their class and their fields' values, not pickle's default
# (an attribute dict per instance): the compile memo holds every node of a file, and is
# smaller and faster to read back this way (runtime/parsememo.py).
def _compact(cls: type) -> None:
    names = cls.__match_args__  # the fields, in __init__'s order
    get = operator.attrgetter(*names) if len(names) > 1 else (lambda obj: (getattr(obj, names[0]),))
    cls.__reduce__ = lambda self: (cls, get(self))  # type: ignore[method-assign]


for _cls in list(globals().values()):
    if isinstance(_cls, type) and _cls.__module__ == __name__ and getattr(_cls, "__dataclass_params__", None) \
            and _cls.__dataclass_params__.frozen and _cls.__match_args__:
        _compact(_cls)
