"""Numbers in `.ft` files: constant folding, finiteness and range checks, and how a
number is shown in a message. Used by compiler.types; `ctx` is its types.Ctx."""

from __future__ import annotations

import math
from typing import Any

from ftlang.lang import ast
from ftlang.stdlib.spec import INT_LIMIT, Attr

# Names people write for the non-finite floats; ftlang has no such literals.
NON_FINITE_NAMES = ("nan", "inf", "infinity")


def const_number(expr: ast.Expr) -> int | float | None:
    """Folds constant arithmetic (2 * 16, -1e-3); None when it is not constant.

    Floats follow IEEE rules (1e308 * 10 is inf): the caller refuses non-finite results.
    """
    if isinstance(expr, ast.Num):
        return expr.value
    if isinstance(expr, ast.Neg):
        v = const_number(expr.operand)
        return -v if v is not None else None
    if isinstance(expr, ast.BinOp) and expr.op in "+-*/":
        a, b = const_number(expr.left), const_number(expr.right)
        if a is None or b is None:
            return None
        return _arith(expr.op, a, b)
    return None


def _arith(op: str, a: int | float, b: int | float) -> int | float | None:
    if isinstance(a, float) or isinstance(b, float):
        a, b = to_float(a), to_float(b)
    if op == "/":
        if not b:
            return None
        try:
            return a / b
        except OverflowError:  # int / int beyond the float range
            return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a + b if op == "+" else a - b if op == "-" else a * b


def to_float(value: int | float) -> float:
    """float(value), with an int beyond the float range as +-inf instead of an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.copysign(math.inf, value)


def underflows(num: ast.Num) -> bool:
    """A literal too small for a float: its digits are not all zero, but it reads as 0.0 (1e-400)."""
    digits = num.text.lower().split("e", 1)[0]
    return num.value == 0 and isinstance(num.value, float) and any(c in "123456789" for c in digits)


def non_finite(expr: ast.Expr) -> ast.Expr | None:
    """The first part of `expr` that is not a finite number: a literal out of the range of a
    float (1e999 overflows to inf, 1e-400 underflows to 0), or a name such as `nan` or `inf`;
    with its sign when negated (-1e999)."""
    if isinstance(expr, ast.Num):
        out = isinstance(expr.value, float) and (not math.isfinite(expr.value) or underflows(expr))
        return expr if out else None
    if isinstance(expr, ast.Ref):
        return expr if len(expr.parts) == 1 and expr.parts[0].lower() in NON_FINITE_NAMES else None
    if isinstance(expr, ast.Neg):
        inner = non_finite(expr.operand)
        return expr if inner is not None and inner is expr.operand else inner
    if isinstance(expr, ast.BinOp):
        return non_finite(expr.left) or non_finite(expr.right)
    return None


def check_range(value: float, expr: ast.Expr, attr: Attr, ctx: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return not_finite(expr, attr, ctx, value)  # env("LR") = "inf"
    ge, gt, le = attr.ge, attr.gt, attr.le
    if isinstance(value, int):  # every int is bounded, declared or not
        le = INT_LIMIT if le is None else le
        ge = -INT_LIMIT if ge is None and gt is None else ge
    bad = ((ge is not None and value < ge) or (gt is not None and value <= gt)
           or (le is not None and value > le))
    if not bad:
        if attr.warn_above is not None and value > attr.warn_above:
            ctx.warn("FT0107", f"`{attr.name}` = {show_number(value)} is unusually large", expr.span,
                     f"above {show_number(attr.warn_above)}",
                     help="it is legal, but training this way usually diverges; a loss that becomes "
                          "nan or inf fails the step")
        return value
    # Only the side that is broken: `r` must be >= 1 (its sanity upper bound is noise there).
    above = le is not None and value > le
    parts = [f"<= {show_number(le)}"] if above else []
    if gt is not None and not above:
        parts.append(f"> {show_number(gt)}")
    if ge is not None and not above:
        parts.append(f">= {show_number(ge)}")
    help_ = None
    if (value > INT_LIMIT and attr.le is None) or (value < -INT_LIMIT and attr.ge is None and attr.gt is None):
        help_ = "an integer this large is a typo: every integer is within +-2**53 (9007199254740992)"
    elif above:
        help_ = f"{show_number(le)} is the most `{attr.name}` may be: a larger value is most likely a typo"
    return ctx.error("FT0107", f"`{attr.name}` must be {' and '.join(parts)}, found {show_number(value)}",
                     expr.span, "out of range", help=help_)


def not_finite(expr: ast.Expr, attr: Attr, ctx: Any, value: float | None = None) -> Any:
    """FT0107 for a value that is not a finite number, pointing at the part that is not."""
    literal = expr.operand if isinstance(expr, ast.Neg) else expr
    if isinstance(literal, ast.Num) and underflows(literal):
        return ctx.error("FT0107", f"`{attr.name}` = {'-' if literal is not expr else ''}{literal.text} is out "
                         "of the range of a float: it underflows to 0", expr.span, "underflows to 0",
                         help="the smallest float above 0 is about 5e-324 (normal floats reach 2.2e-308); "
                              "check the exponent")
    if isinstance(expr, ast.Num):
        shown, label = expr.text, "overflows to infinity"
    elif isinstance(expr, ast.Neg) and isinstance(expr.operand, (ast.Num, ast.Ref)):
        inner = expr.operand
        shown = f"-{inner.text}" if isinstance(inner, ast.Num) else f"`-{inner.dotted}`"
        label = "overflows to -infinity" if isinstance(inner, ast.Num) else "not a finite number"
    elif isinstance(expr, ast.Ref):
        shown, label = f"`{expr.dotted}`", "not a finite number"
    elif isinstance(expr, ast.Str):
        shown, label = f'"{expr.value}"', "not a finite number"
    else:
        shown, label = f"{value}" if value is not None else "a value", "not a finite number"
    example = attr.default if isinstance(attr.default, (int, float)) and not isinstance(attr.default, bool) \
        else None
    return ctx.error("FT0107", f"`{attr.name}` must be a finite number, found {shown}", expr.span, label,
                     help="numbers must be finite: the largest float is about 1.8e308 and there is no "
                          "inf or nan" + (f"; the default is `{attr.name} = {show_number(example)}`"
                                          if example is not None else ""))


def literal_out_of_range(expr: ast.Expr, ctx: Any) -> bool:
    """FT0107 at the first number literal of an expression that a float cannot hold (an
    `assert`'s: `sft.loss < 1e-400` would compare with 0); whether there was one."""
    blame = non_finite(expr)
    literal = blame.operand if isinstance(blame, ast.Neg) else blame
    if not isinstance(literal, ast.Num):
        return False  # a name such as `inf` is not model.metric: the assert check says so
    small = underflows(literal)
    ctx.error("FT0107", f"the number {literal.text} is out of the range of a float", literal.span,
              "underflows to 0" if small else "overflows to infinity",
              help="floats reach from about 5e-324 to 1.8e308; check the exponent")
    return True


def show_number(x: float) -> str:
    """A number for a message: ints in full (a bound of 4294967295, not 4.29497e+09)."""
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e16):
        digits = str(int(x))
        return digits if len(digits) <= 30 else f"{digits[:6]}... ({len(digits)} digits)"
    return f"{x:g}"
