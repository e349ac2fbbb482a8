"""`assert` lines of an eval block, evaluated over its metrics (`sft.exact_match >= 0.5`)."""

from __future__ import annotations

import math
from typing import Any

from ftlang.compiler.ir import AssertIR
from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, Label

COMPARISONS = (">=", "<=", ">", "<", "==", "!=")


def value(expr: Any, metrics: dict[str, dict[str, Any]]) -> float:
    """The number an expression stands for; `model.metric` reads the metrics table."""
    if isinstance(expr, ast.Num):
        return float(expr.value)
    if isinstance(expr, ast.Ref):
        model, metric = expr.parts
        return float(metrics[model][metric])
    if isinstance(expr, ast.Neg):
        return -value(expr.operand, metrics)
    if isinstance(expr, ast.BinOp):
        a, b = value(expr.left, metrics), value(expr.right, metrics)
        ops = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else math.inf,
               ">=": float(a >= b), "<=": float(a <= b), ">": float(a > b), "<": float(a < b),
               "==": float(a == b), "!=": float(a != b)}
        return ops[expr.op]
    raise ValueError(f"cannot evaluate {type(expr).__name__}")


def evaluate(expr: Any, metrics: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """(holds, the values compared); raises KeyError/ValueError when it cannot be evaluated."""
    if isinstance(expr, ast.BinOp) and expr.op in COMPARISONS:
        left, right = value(expr.left, metrics), value(expr.right, metrics)
        return bool(value(expr, metrics)), f"{left:.4g} {expr.op} {right:.4g}"
    v = value(expr, metrics)
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
