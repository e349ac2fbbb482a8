"""Checks of checked values that their type alone does not make: list entries a repeat
makes no sense for (`Attr.unique`, FT0108) and regular expressions (`Attr.regex`, FT0132).
Called from compiler.types; `ctx` is its types.Ctx."""

from __future__ import annotations

import re
from typing import Any

from ftlang.compiler.ir import RefValue
from ftlang.lang import ast
from ftlang.lang.diagnostics import Label
from ftlang.stdlib.evaluate_spec import metric_key
from ftlang.stdlib.spec import Attr, Call


def _identity(value: Any) -> Any:
    """What makes two entries the same: a reference's target (not where it is written), a
    metric's stored name (`exact_match` and `exact_match(strip = false)` fill one column)."""
    if isinstance(value, RefValue):
        return ("ref", value.node, value.port)
    if isinstance(value, Call) and value.family == "metric":
        return ("metric", metric_key(value))
    return value


def _shown(expr: ast.Expr, value: Any) -> str:
    if isinstance(value, Call) and value.family == "metric":
        return metric_key(value)
    if isinstance(expr, (ast.Ref, ast.CallExpr)):
        return expr.dotted
    if isinstance(expr, ast.Num):
        return expr.text
    if isinstance(expr, ast.Str):
        return f'"{expr.value}"'
    return str(value)


def repeated(items: tuple[ast.Expr, ...], values: list[Any], attr: Attr, ctx: Any) -> bool:
    """FT0108 at the second occurrence of each entry listed more than once (one diagnostic per
    entry, however often it repeats: `[m, m, ... m]` is one mistake); whether there was one."""
    groups: dict[Any, list[tuple[ast.Expr, Any]]] = {}
    for expr, value in zip(items, values):
        groups.setdefault(_key(_identity(value)), []).append((expr, value))
    found = False
    for group in groups.values():
        if len(group) < 2:
            continue
        found = True
        (first, _), (expr, value) = group[0], group[1]
        name = _shown(expr, value)
        metric = isinstance(value, Call) and value.family == "metric"
        times = "twice" if len(group) == 2 else f"{len(group)} times"
        ctx.error("FT0108", f"{'the metric ' if metric else ''}`{name}` is listed {times} in `{attr.name}`",
                  expr.span, "listed again here", extra=[Label(first.span, "first listed here", False)],
                  help="each metric gives one column: keep one, or measure the other variant in a "
                       "second eval block" if metric else f"each entry of `{attr.name}` counts once: "
                       "drop the repeat")
    return found


def _key(identity: Any) -> Any:
    """A dict key for an entry's identity (a value that does not hash is keyed by its repr)."""
    try:
        hash(identity)
    except TypeError:
        return ("repr", repr(identity))
    return identity


def pattern(expr: ast.Str, value: str, ctx: Any) -> bool:
    """Whether Python's `re` compiles the pattern; if not, FT0132 at the string with re's reason."""
    try:
        re.compile(value)
    except re.error as e:
        where = f" at position {e.pos}" if e.pos is not None else ""
        ctx.error("FT0132", f"invalid regular expression: {e.msg}{where}", expr.span, "not a Python regex",
                  help="Python `re` syntax: a literal ( ) [ ] { } * + ? . | is escaped with a backslash, "
                       'written twice in a string: "\\\\(" matches "("')
        return False
    return True
