"""`assert` lines of an eval block, evaluated over its metrics (`sft.exact_match >= 0.5`)."""

from __future__ import annotations

from typing import Any

from ftlang.compiler.ir import AssertIR
from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, Label
from ftlang.stdlib.evaluate_spec import assert_value

COMPARISONS = (">=", "<=", ">", "<", "==", "!=")


def evaluate(expr: Any, metrics: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """(holds, the values compared); raises KeyError/ValueError when it cannot be evaluated."""
    if isinstance(expr, ast.BinOp) and expr.op in COMPARISONS:
        left, right = assert_value(expr.left, metrics), assert_value(expr.right, metrics)
        return bool(assert_value(expr, metrics)), f"{left:.4g} {expr.op} {right:.4g}"
    v = assert_value(expr, metrics)
    return bool(v), f"the value is {v:.4g}"


def check(a: AssertIR, metrics: dict[str, dict[str, Any]]) -> Diagnostic | None:
    """None when the assertion holds; else a diagnostic at its line with both values."""
    try:
        ok, detail = evaluate(a.expr, metrics)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        return Diagnostic("FT0202", f"assertion could not be evaluated: {a.text}", [Label(a.span, str(exc))])
    if ok:
        return None
    return Diagnostic("FT0202", f"assertion failed: {a.text}", [Label(a.span, f"{detail} is false")],
                      help="the trained artifacts are kept in the cache; fix the data or the settings and run again")
