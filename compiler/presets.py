"""Presets written in .ft: typed pure functions that return a call of their family.

    method dora(r: int = 16, alpha: int = 2 * r) = lora(r = r, alpha = alpha, dora = true)

A call `dora(r = 8)` binds the arguments, checks each against its parameter's type,
computes the defaults in order (a default may use the parameters before it), substitutes
them into the body and checks the result as the call it is (`lora(r = 8, alpha = 2 * 8,
dora = true)`). The resolved value is that plain call: a preset and the call it
expands to have the same cache key.
"""

from __future__ import annotations

from typing import Any

from ftlang.compiler import types as T
from ftlang.compiler.ir import SweepValue
from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, Label, did_you_mean
from ftlang.lang.format import expr_text
from ftlang.stdlib import registry
from ftlang.stdlib.spec import Attr, parse_type

SCALAR_TYPES = ("int", "float", "str", "bool", "path", "ident", "dataset", "model", "template")


def valid_type(text: str) -> bool:
    """A preset parameter's type: one of SCALAR_TYPES or list[T] of one (stdlib.spec.parse_type)."""
    try:
        te = parse_type(text)
    except ValueError:
        return False
    te = te.item if te.kind == "list" and te.item is not None else te
    return te.kind in SCALAR_TYPES


def check_definitions(ctx: T.Ctx) -> None:
    """Checks every preset once, where it is written; a broken one is not expanded again."""
    for name, preset in ctx.symbols.presets.items():
        before = len(ctx.diagnostics)
        _check_definition(preset, ctx)
        if any(d.level == "error" for d in ctx.diagnostics[before:]):
            ctx.broken_presets.add(name)


def _check_definition(p: ast.Preset, ctx: T.Ctx) -> None:
    family, name = p.kind.name, p.name.name
    params = ", ".join(f"{x.name}: {x.type}" + (" = ..." if x.default is not None else "") for x in p.params)
    example = f"{family} {name}({params}) = "
    if p.value is None and family in registry.STEPS:
        _check_params(p, ctx)  # a block preset: its body is checked where it is used
        return
    if family not in registry.CALLS:
        guess = did_you_mean(family, list(registry.CALLS))
        ctx.error("FT0122", f"`{family}` is not a family presets can belong to", p.kind.span,
                  "not a call family", help=(f"did you mean `{guess}`? " if guess else "")
                  + f"presets are one of: {', '.join(registry.CALLS)}")
        return
    table = registry.CALLS[family]
    if p.value is None:
        span = p.body_span or p.span
        first = next((n for n, sig in table.items() if sig.attrs), next(iter(table), "call"))
        ctx.error("FT0122", "a preset returns one call: write it after `=`", span, "a block body",
                  help=f"write `{example}{first}(...)`, using the parameters as values")
        return
    if name in table:
        ctx.error("FT0103", f"`{name}` is a builtin {family}: a preset cannot replace it", p.name.span,
                  "builtin name", help=f"give the preset another name, e.g. `my_{name}`")
        return
    _check_params(p, ctx)
    value = p.value
    callee = value.dotted if isinstance(value, ast.CallExpr | ast.Ref) else None
    if callee is None:
        ctx.error("FT0122", f"a {family} preset returns a {family} call, found {T.describe(value)}",
                  value.span, f"not a {family}", help=f"e.g. `{example}{next(iter(table), 'x')}(...)`")
        return
    if _contains_sweep(value) or any(x.default is not None and _contains_sweep(x.default) for x in p.params):
        ctx.error("FT0123", "a preset cannot sweep", p.span, "preset with a sweep",
                  help="sweep where the preset is used: method = dora(r = sweep [8, 16])")
        return
    chain = _recursion(name, ctx)
    if chain:
        ctx.error("FT0122", f"preset `{name}` calls itself: {' -> '.join(chain)}", value.span,
                  "recursive call", help="a preset must end in a builtin call")
        return
    if any(d.level == "error" for d in ctx.diagnostics if d.span and d.span.file == p.span.file
           and p.span.line <= d.span.line <= value.span.end_line):
        return
    if all(x.default is not None for x in p.params):
        # Every parameter has a default: the body must check with them, here, once.
        call(p, [], [], p.name.span, family, ctx, definition=True)


def _check_params(p: ast.Preset, ctx: T.Ctx) -> None:
    seen: dict[str, ast.Span] = {}
    for x in p.params:
        span = x.name_span or x.span
        if x.name in seen:
            ctx.error("FT0108", f"parameter `{x.name}` is declared twice", span, "again here",
                      extra=[Label(seen[x.name], "first here", False)])
        seen[x.name] = span
        if not valid_type(x.type):
            guess = did_you_mean(x.type, SCALAR_TYPES)
            ctx.error("FT0106", f"unknown parameter type `{x.type}`", x.span, "unknown type",
                      help=(f"did you mean `{guess}`? " if guess else "")
                      + f"types: {', '.join(SCALAR_TYPES)}, or list[T] of them")


def _contains_sweep(e: ast.Expr) -> bool:
    if isinstance(e, ast.Sweep):
        return True
    if isinstance(e, ast.CallExpr):
        return any(_contains_sweep(a) for a in e.args) or any(_contains_sweep(k.value) for k in e.kwargs)
    if isinstance(e, ast.ListExpr):
        return any(_contains_sweep(x) for x in e.items)
    if isinstance(e, ast.BinOp):
        return _contains_sweep(e.left) or _contains_sweep(e.right)
    if isinstance(e, ast.Neg):
        return _contains_sweep(e.operand)
    return False


def _recursion(name: str, ctx: T.Ctx) -> list[str]:
    """The chain `a -> b -> a` when following callees from `name` comes back to it."""
    chain = [name]
    current = ctx.symbols.presets.get(name)
    while current is not None and isinstance(current.value, ast.CallExpr | ast.Ref):
        callee = current.value.dotted
        if callee in chain:
            return chain + [callee] if callee == name else []
        chain.append(callee)
        current = ctx.symbols.presets.get(callee)
    return []


def call(p: ast.Preset, args: list[ast.Expr], kwargs: list[ast.Kwarg], span: ast.Span, family: str,
         ctx: T.Ctx, *, definition: bool = False, sweep: bool = False) -> Any:
    """The checked value of `p(args)`: a Call, a SweepValue of Calls, or INVALID."""
    name = p.name.name
    if name in ctx.broken_presets and not definition:
        return T.INVALID  # its definition already reported why
    if name in ctx.preset_stack or len(ctx.preset_stack) > 32:
        return T.INVALID  # recursion: reported by the definition check
    swept = [k for k in kwargs if isinstance(k.value, ast.Sweep)]
    swept_pos = [a for a in args if isinstance(a, ast.Sweep)]
    if swept or swept_pos:
        return _swept_call(p, args, kwargs, span, family, ctx, swept, swept_pos, allowed=sweep)
    before = len(ctx.diagnostics)
    ctx.preset_stack.append(name)
    try:
        body = expand(p, args, kwargs, span, ctx)
        if body is T.INVALID:
            return T.INVALID
        return T.check(body, Attr(name, f"call[{family}]", None), ctx, sweep=sweep)
    finally:
        ctx.preset_stack.pop()
        if not definition:
            point_at_call(ctx.diagnostics[before:], span, name)


def _swept_call(p: ast.Preset, args: list[ast.Expr], kwargs: list[ast.Kwarg], span: ast.Span,
                family: str, ctx: T.Ctx, swept: list[ast.Kwarg], swept_pos: list[ast.Expr], *, allowed: bool) -> Any:
    """`dora(r = sweep [8, 16])`: one expansion per value, as one swept call."""
    from ftlang.compiler.sweeps import label

    if len(swept) + len(swept_pos) > 1 or swept_pos:
        where = (swept[1].value if len(swept) > 1 else swept_pos[0]).span
        return ctx.error("FT0123", "sweep one named argument of a preset call at a time", where,
                         "second sweep", help="or sweep whole calls: method = sweep [dora(r = 8), dora(r = 16)]")
    kw = swept[0]
    assert isinstance(kw.value, ast.Sweep)
    if not allowed:
        return T.check(kw.value, Attr(kw.name, "any", None), ctx)  # reports "not allowed here"
    items = kw.value.items.items
    if not items:
        return ctx.error("FT0123", "a sweep needs at least one value", kw.value.span, "empty sweep")
    values, labels = [], []
    for item in items:  # each point is an ordinary call: nothing in it may be swept again
        one = [ast.Kwarg(k.name, item, k.span) if k is kw else k for k in kwargs]
        v = call(p, args, one, span, family, ctx)
        if v is T.INVALID:
            return T.INVALID
        values.append(v)
        labels.append(label(item, None, ctx))
    for i, v in enumerate(values):
        if v in values[:i]:
            return ctx.error("FT0123", f"the sweep repeats the value `{labels[i]}`", items[i].span,
                             "again here", help="each point of a sweep must differ: drop the repeated value")
    return SweepValue(tuple(values), tuple(T.unique_labels(labels)), kw.value.span, name=kw.name)


def expand(p: ast.Preset, args: list[ast.Expr], kwargs: list[ast.Kwarg], span: ast.Span,
           ctx: T.Ctx) -> Any:
    """The preset's body with the arguments substituted, or INVALID after reporting why."""
    env = bind(p, args, kwargs, span, ctx)
    if env is None:
        return T.INVALID
    assert p.value is not None
    return substitute(p.value, env)


def expand_block(p: ast.Preset, d: ast.Definition, ctx: T.Ctx) -> ast.Block | None:
    """`eval gate = forgetting(base = smol, tuned = sft, ...)` with `forgetting` a block
    preset: its body with the arguments substituted, as the block `gate` (None after an error).
    A parameter also replaces the head of a dotted name: `tuned.loss` becomes `sft.loss`."""
    assert isinstance(d.value, ast.CallExpr)
    before = len(ctx.diagnostics)
    env = bind(p, list(d.value.args), list(d.value.kwargs), d.value.span, ctx)
    point_at_call(ctx.diagnostics[before:], d.value.span, p.name.name)
    if env is None:
        return None
    return ast.Block(d.kind, d.name, tuple(_substitute_stmt(s, env) for s in p.body), d.span)


def bind(p: ast.Preset, args: list[ast.Expr], kwargs: list[ast.Kwarg], span: ast.Span,
         ctx: T.Ctx) -> dict[str, ast.Expr] | None:
    """Each parameter's expression (given, or its default computed in order), checked
    against its type; None after reporting why."""
    name = p.name.name
    params = {x.name: x for x in p.params}
    given: dict[str, ast.Expr] = {}
    ok = True
    if len(args) > len(p.params):
        ctx.error("FT0106", f"`{name}` takes {len(p.params)} argument{'s' if len(p.params) != 1 else ''}",
                  args[len(p.params)].span, "extra argument",
                  help=f"parameters: {', '.join(x.name for x in p.params) or 'none'}")
        ok = False
    for x, a in zip(p.params, args):
        given[x.name] = a
    for k in kwargs:
        if k.name in given:
            ctx.error("FT0108", f"argument `{k.name}` is given twice", k.span, "again here")
            ok = False
        elif k.name not in params:
            guess = did_you_mean(k.name, list(params))
            ctx.error("FT0104", f"`{name}` has no parameter `{k.name}`", k.span, "unknown argument",
                      help=(f"did you mean `{guess}`? " if guess else "")
                      + f"parameters: {', '.join(params) or 'none'}")
            ok = False
        else:
            given[k.name] = k.value
    if not ok:
        return None
    env: dict[str, ast.Expr] = {}
    for x in p.params:
        if x.name in given:
            expr = given[x.name]
        elif x.default is not None:
            expr = substitute(x.default, env)
        else:
            ctx.error("FT0105", f"`{name}` needs the argument `{x.name}`", span, f"`{x.name}` missing",
                      help=f"{x.name}: {x.type}")
            return None
        if valid_type(x.type) and T.check(expr, Attr(x.name, x.type.replace(" ", ""), None), ctx) is T.INVALID:
            return None
        env[x.name] = expr
    return env


def _substitute_stmt(s: ast.Stmt, env: dict[str, ast.Expr]) -> ast.Stmt:
    if isinstance(s, ast.Attr):
        return ast.Attr(s.name, substitute(s.value, env, dotted=True), s.span, s.name_span)
    if isinstance(s, ast.Assert):
        expr = substitute(s.expr, env, dotted=True)
        return ast.Assert(expr, s.span, expr_text(expr))
    if isinstance(s, ast.SubBlock):
        return ast.SubBlock(s.name, tuple(_substitute_stmt(x, env) for x in s.body), s.span, s.name_span)
    return s  # `name: type` lines and SQL text hold no expressions


def substitute(e: ast.Expr, env: dict[str, ast.Expr], *, dotted: bool = False) -> ast.Expr:
    """`e` with every bare reference to a parameter replaced by its value's expression;
    with `dotted`, also the head of `param.field` when the value is a name."""
    if isinstance(e, ast.Ref):
        if len(e.parts) == 1:
            return env.get(e.parts[0], e)
        head = env.get(e.parts[0]) if dotted else None
        if isinstance(head, ast.Ref):
            return ast.Ref((*head.parts, *e.parts[1:]), e.span)
        return e
    if isinstance(e, ast.CallExpr):
        return ast.CallExpr(e.name, tuple(substitute(a, env, dotted=dotted) for a in e.args),
                            tuple(ast.Kwarg(k.name, substitute(k.value, env, dotted=dotted), k.span)
                                  for k in e.kwargs), e.span, e.name_span)
    if isinstance(e, ast.ListExpr):
        return ast.ListExpr(tuple(substitute(x, env, dotted=dotted) for x in e.items), e.span)
    if isinstance(e, ast.BinOp):
        return ast.BinOp(e.op, substitute(e.left, env, dotted=dotted), substitute(e.right, env, dotted=dotted),
                         e.span)
    if isinstance(e, ast.Neg):
        return ast.Neg(substitute(e.operand, env, dotted=dotted), e.span)
    return e


def point_at_call(diags: list[Diagnostic], call_span: ast.Span, name: str) -> None:
    """An error found inside a preset's body also shows the call that led there."""
    for d in diags:
        s = d.span
        if s is None or _within(s, call_span):
            continue
        if not any(lb.span == call_span for lb in d.labels):
            d.labels.append(Label(call_span, f"in this call of `{name}`", primary=False))


def _within(s: ast.Span, outer: ast.Span) -> bool:
    return s.file == outer.file and (outer.line, outer.col) <= (s.line, s.col) and \
        (s.end_line, s.end_col) <= (outer.end_line, outer.end_col)
