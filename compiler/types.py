"""Values against declared types: AST expressions -> resolved IR values.

Resolution is type-directed: `by = prompt` is a column name because `by` is an
`ident`; `data = clean.train` is a reference because `data` is a `dataset`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ftlang.compiler import entries
from ftlang.compiler.ir import EnvValue, FileValue, OutPath, RefValue, SweepValue
from ftlang.compiler.numbers import (
    check_range,
    const_number,
    non_finite,
    not_finite,
    to_float,
)
from ftlang.compiler.symbols import Symbols
from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, Label, did_you_mean
from ftlang.stdlib import registry
from ftlang.stdlib.spec import INT_LIMIT, Attr, Call, Signature, parse_type

YAML_BOOLS = {"yes": True, "no": False, "on": True, "off": False, "True": True, "False": False,
              "TRUE": True, "FALSE": False, "y": True, "n": False}
REF_KINDS = ("dataset", "model", "template")
INVALID = object()  # a value that already produced a diagnostic


# Variable names that hold credentials: their values never enter keys, logs or the ledger.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|KEY|CREDENTIAL|AUTH", re.IGNORECASE)


@dataclass
class Ctx:
    symbols: Symbols
    project: Path
    source: str = ""
    diagnostics: list[Diagnostic] = field(default_factory=list)
    base: Path | None = None  # folder relative paths start from (an imported block's file)
    origin: str | None = None  # the `use` path the block being checked came through (None: this file)
    broken_presets: set[str] = field(default_factory=set)  # definitions that reported errors
    preset_stack: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # file -> text, for source slices

    def error(self, code: str, message: str, span: ast.Span, label: str = "",
              help: str | None = None, extra: list[Label] | None = None) -> Any:
        self.diagnostics.append(Diagnostic(code, message, [Label(span, label), *(extra or [])], help=help))
        return INVALID

    def warn(self, code: str, message: str, span: ast.Span, label: str = "", help: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(code, message, [Label(span, label)], level="warning", help=help))


def describe(expr: ast.Expr) -> str:
    return {ast.Str: "a string", ast.Num: "a number", ast.Bool: "a boolean", ast.ListExpr: "a list",
            ast.Ref: "a name", ast.CallExpr: "a call", ast.BinOp: "an expression", ast.Neg: "a number",
            ast.Sweep: "a sweep", ast.Select: "a selection"}.get(type(expr), "a value")


def _unquoted_path(expr: ast.Expr) -> str | None:
    """`org/name` parsed as a division of names: what the user meant to quote."""
    if isinstance(expr, ast.BinOp) and expr.op in ("/", "-"):
        left, right = _unquoted_path(expr.left), _unquoted_path(expr.right)
        if left is not None and right is not None:
            return f"{left}{expr.op}{right}"
    if isinstance(expr, ast.Ref):
        return expr.dotted
    return None


def check(expr: ast.Expr, attr: Attr, ctx: Ctx, *, sweep: bool = False) -> Any:
    """The resolved value of `expr` for `attr`, or INVALID after reporting why. `sweep`: the
    value sits where `sweep [...]` is allowed (a block's attribute, or an argument of the
    call written there); nothing inside a list, a sweep or a nested call may be swept."""
    if isinstance(expr, ast.Sweep):
        return _sweep(expr, attr, ctx, allowed=sweep)
    if isinstance(expr, ast.Select):
        return ctx.error("FT0121", "`min/max ... on ...` only selects a sweep's winner", expr.span,
                         "a selection", help="write it as `select = min loss on <dataset>` in a swept train block")
    if isinstance(expr, ast.CallExpr) and expr.dotted == "search":  # lr = search(loguniform(...))
        from ftlang.compiler import search

        return search.space(expr, attr, ctx, allowed=sweep)
    if isinstance(expr, ast.ListExpr) and attr.type == "call[trainable]":  # ["*.mlp.*"]: match([...])
        pats = check(expr, Attr("patterns", "list[str]", None), ctx)
        return INVALID if pats is INVALID else Call("match", {"patterns": pats}, "trainable")
    return _check(expr, attr, ctx, sweep)


def _check(expr: ast.Expr, attr: Attr, ctx: Ctx, swept: bool) -> Any:
    te = attr.of
    t = te.kind
    if te.kind == "list":
        assert te.item is not None
        inner = replace(attr, type=te.item.text, default=None)
        items = expr.items if isinstance(expr, ast.ListExpr) else (expr,)
        values = [check(e, inner, ctx) for e in items]
        if any(v is INVALID for v in values) or (attr.unique and entries.repeated(items, values, attr, ctx)):
            return INVALID
        if inner.type != "model":
            return values
        # Models in a list are compared side by side: a swept block contributes every
        # point (see sweeps.expand). A list of datasets is combined input: it fans out.
        return [RefValue(v.node, v.port, v.span, many=True) if isinstance(v, RefValue) else v
                for v in values]
    if te.kind == "call":
        return _check_call(expr, te.family, ctx, sweep=swept)  # its arguments may be swept if it may
    if isinstance(expr, ast.CallExpr) and expr.dotted == "env":
        return _env(expr, attr, ctx)
    if t in REF_KINDS:
        return _check_ref(expr, t, ctx)
    if t in ("str", "path", "outpath"):
        if isinstance(expr, ast.Str):
            v = _path_value(expr, t, ctx)
            return INVALID if attr.regex and v is not INVALID and not entries.pattern(expr, v, ctx) else v
        path = _unquoted_path(expr)
        if path is not None and ("/" in path or t != "str"):
            return ctx.error("FT0116", f"`{attr.name}` takes a string: quote it", expr.span, "unquoted",
                             help=f'write `{attr.name} = "{path}"`')
        return _wrong(expr, "a string", attr, ctx)
    if t == "bool":
        if isinstance(expr, ast.Bool):
            return expr.value
        if isinstance(expr, ast.Ref) and expr.dotted in YAML_BOOLS:
            word = "true" if YAML_BOOLS[expr.dotted] else "false"
            return ctx.error("FT0116", f"`{expr.dotted}` is not a boolean in ftlang", expr.span,
                             "YAML-style boolean", help=f"write `{word}`: only true and false are booleans")
        return _wrong(expr, "true or false", attr, ctx)
    if t in ("int", "float"):
        blame = non_finite(expr)
        if blame is not None:
            return not_finite(blame, attr, ctx)
        value = const_number(expr)
        if value is None or isinstance(expr, ast.Bool):
            if isinstance(expr, ast.Str):
                try:
                    if not math.isfinite(float(expr.value)):
                        return not_finite(expr, attr, ctx)
                    return ctx.error("FT0106", f"`{attr.name}` takes a number, not a string", expr.span,
                                     "quoted number", help=f"write `{attr.name} = {expr.value}` without quotes")
                except ValueError:
                    pass
            return _wrong(expr, "an integer" if t == "int" else "a number", attr, ctx)
        if isinstance(value, float) and not math.isfinite(value):
            return not_finite(expr, attr, ctx, value)  # arithmetic that overflows: 1e308 * 10
        if t == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    return _wrong(expr, "an integer", attr, ctx)
                value = int(value)
        else:
            value = to_float(value)
        return check_range(value, expr, attr, ctx)
    if t in ("enum", "ident"):
        word = expr.dotted if isinstance(expr, ast.Ref) and len(expr.parts) == 1 else (
            expr.value if isinstance(expr, ast.Str) else None)
        if word is None:
            return _wrong(expr, "a name", attr, ctx)
        if t == "enum" and attr.choices and word not in attr.choices:
            guess = did_you_mean(word, attr.choices)
            return ctx.error("FT0106", f"`{word}` is not a valid `{attr.name}`", expr.span, "unknown choice",
                             help=(f"did you mean `{guess}`? " if guess else "")
                             + f"choices: {', '.join(attr.choices)}")
        return word
    if t == "any":
        return _literal(expr, attr, ctx)
    raise AssertionError(f"unknown type {t}")


def _sweep(expr: ast.Sweep, attr: Attr, ctx: Ctx, *, allowed: bool) -> Any:
    from ftlang.compiler.sweeps import label

    if not allowed:
        return ctx.error("FT0123", "`sweep` is not allowed here", expr.span, "sweep",
                         help="sweep an attribute of a block (lr = sweep [1e-4, 2e-4]) or an "
                              "argument of its call (method = lora(r = sweep [8, 16]))")
    items = expr.items.items
    if not items:
        return ctx.error("FT0123", "a sweep needs at least one value", expr.span, "empty sweep",
                         help="e.g. lr = sweep [1e-4, 2e-4]")
    values = [check(e, attr, ctx) for e in items]
    if any(v is INVALID for v in values):
        return INVALID
    labels = [label(e, v, ctx) for e, v in zip(items, values)]
    for i, (e, v) in enumerate(zip(items, values)):
        first = next((j for j in range(i) if values[j] == v), None)
        if first is not None:
            return ctx.error("FT0123", f"the sweep repeats the value `{labels[i]}`", e.span, "again here",
                             extra=[Label(items[first].span, "first here", False)],
                             help="each point of a sweep must differ: drop the repeated value")
    return SweepValue(tuple(values), tuple(unique_labels(labels)), expr.span)


def unique_labels(labels: list[str]) -> list[str]:
    """Distinct values can share a label once made file-name safe ("a/b", "a_b")."""
    out: list[str] = []
    for lab in labels:
        new, k = lab, 2
        while new in out:
            new, k = f"{lab}~{k}", k + 1
        out.append(new)
    return out


def _env(expr: ast.CallExpr, attr: Attr, ctx: Ctx) -> Any:
    """env("NAME", default, secret = bool): a value read from the environment when compiling."""
    usage = 'write env("NAME") or env("NAME", "default")'
    if attr.type not in ("str", "path", "outpath", "int", "float", "bool", "enum", "ident"):
        return ctx.error("FT0106", f"`{attr.name}` expects {_want(attr)}; env(...) gives text", expr.span,
                         "env(...)", help="environment variables hold paths, names, numbers and secrets")
    if not expr.args or not isinstance(expr.args[0], ast.Str) or len(expr.args) > 2:
        return ctx.error("FT0106", "env(...) takes the variable name and an optional default", expr.span,
                         "bad arguments", help=usage)
    name = expr.args[0].value
    default: str | None = None
    if len(expr.args) == 2:
        d = expr.args[1]
        n = const_number(d)
        blame = non_finite(d)
        if blame is not None:
            return not_finite(blame, attr, ctx)
        if isinstance(d, ast.Str):
            default = d.value
        elif isinstance(d, ast.Bool):
            default = "true" if d.value else "false"
        elif n is not None:
            default = str(n)
        else:
            return ctx.error("FT0106", f"the default of env(\"{name}\") must be a string or a number",
                             d.span, f"found {describe(d)}", help=usage)
    secret = bool(SECRET_NAME.search(name))
    for kw in expr.kwargs:
        if kw.name != "secret" or not isinstance(kw.value, ast.Bool):
            return ctx.error("FT0104", f"env(...) has no argument `{kw.name}`" if kw.name != "secret"
                             else "`secret` is true or false", kw.span, "here",
                             help="env(\"NAME\", \"default\", secret = true)")
        secret = kw.value.value
    value = os.environ.get(name, default)
    if value is None:
        return ctx.error("FT0120", f"environment variable `{name}` is not set", expr.span, "read here",
                         help=f"set it (export {name}=...) or give a default: env(\"{name}\", \"...\")")
    t = attr.type
    if t == "str":
        return EnvValue(name, value, secret)
    if t in ("path", "outpath"):
        return _path_value(ast.Str(value, expr.span), t, ctx, source=f"env(\"{name}\")")
    if t == "bool":
        if value.lower() in ("true", "1", "false", "0"):
            return value.lower() in ("true", "1")
        return ctx.error("FT0106", f"`{name}` = {value!r} is not a boolean", expr.span, "read here",
                         help="set it to true or false")
    if t in ("int", "float"):
        try:
            number: float = int(value) if t == "int" else float(value)
        except ValueError:
            return ctx.error("FT0106", f"`{attr.name}` expects {_want(attr)}, but {name} = {value!r}",
                             expr.span, "read here")
        return check_range(number, expr, attr, ctx)
    if t == "enum" and attr.choices and value not in attr.choices:
        return ctx.error("FT0106", f"{name} = {value!r} is not a valid `{attr.name}`", expr.span, "read here",
                         help=f"choices: {', '.join(attr.choices)}")
    return value


def _want(attr: Attr) -> str:
    te = attr.of
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "path": "a path", "outpath": "a path"}.get(te.kind, f"a {te.family or te.text}")


def _wrong(expr: ast.Expr, want: str, attr: Attr, ctx: Ctx) -> Any:
    return ctx.error("FT0106", f"`{attr.name}` expects {want}, found {describe(expr)}", expr.span,
                     f"expected {want}")


def _literal(expr: ast.Expr, attr: Attr, ctx: Ctx) -> Any:
    if isinstance(expr, ast.Str):
        return expr.value
    if isinstance(expr, ast.Bool):
        return expr.value
    blame = non_finite(expr)
    if blame is not None:
        return not_finite(blame, attr, ctx)
    n = const_number(expr)
    if n is not None:
        if isinstance(n, float) and not math.isfinite(n):
            return not_finite(expr, attr, ctx, n)
        if isinstance(n, int) and abs(n) > INT_LIMIT:
            return check_range(n, expr, replace(attr, type="int"), ctx)
        return n
    if isinstance(expr, ast.ListExpr):
        vals = [_literal(e, attr, ctx) for e in expr.items]
        return INVALID if any(v is INVALID for v in vals) else vals
    return _wrong(expr, "a string, number, boolean or list", attr, ctx)


def _path_value(expr: ast.Str, t: str, ctx: Ctx, source: str = "") -> Any:
    if "${" in expr.value:
        m = re.search(r"\$\{([^}]*)\}", expr.value)
        var = m.group(1) if m else "NAME"
        return ctx.error("FT0007", "`${...}` is not expanded inside ftlang strings", expr.span, "interpolation",
                         help=f'read the variable with env("{var}") and write the rest as its own string')
    if t == "str":
        return expr.value
    raw = os.path.expanduser(expr.value)
    base = ctx.base or ctx.project
    try:
        full = (base / raw).resolve() if not os.path.isabs(raw) else Path(raw)
        exists = full.exists()
    except RuntimeError:  # a symlink loop (Python 3.11): the dataset check names it (FT0131)
        full, exists = base / raw, True
    except (OSError, ValueError):  # a name too long, a NUL byte: not a file either way
        full, exists = base / "?", False
    if t == "outpath":
        return OutPath(expr.value, str(full))
    if not exists:
        near = _near_file(full)
        where = f" (from {source})" if source else ""
        return ctx.error("FT0111", f"file not found: {expr.value}{where}", expr.span, "no such file",
                         help=f"did you mean \"{near}\"?" if near else
                         f"paths are relative to the .ft file's folder ({base})")
    return FileValue(expr.value, str(full), expr.span)


def _near_file(full: Path) -> str | None:
    try:
        if not full.parent.is_dir():
            return None
    except OSError:
        return None
    guess = did_you_mean(full.name, [p.name for p in full.parent.iterdir()])
    return guess


def _check_ref(expr: ast.Expr, want: str, ctx: Ctx) -> Any:
    if isinstance(expr, ast.Str):
        if expr.value.split(".")[0] in ctx.symbols.blocks:
            return ctx.error("FT0106", f"expected a reference to a {want}, found a string", expr.span,
                             "quoted", help=f"references are bare names: write `{expr.value}` without quotes")
        return ctx.error("FT0106", f"expected a reference to a {want}, found a string", expr.span, "a string",
                         help=f"name a {want} block defined in this file")
    if isinstance(expr, ast.CallExpr) and want == "template" and expr.dotted in registry.TEMPLATES:
        return ctx.error("FT0106", "templates are defined as their own block", expr.span, "inline template",
                         help=f"add `template chat = {expr.dotted}(...)` at the top level and write `template = chat`")
    if not isinstance(expr, ast.Ref):
        return ctx.error("FT0106", f"expected a reference to a {want}, found {describe(expr)}", expr.span,
                         f"expected a {want}")
    name, *rest = expr.parts
    block = ctx.symbols.blocks.get(name)
    hidden = ctx.symbols.hidden.get(name)
    if block is not None and hidden is not None and ctx.origin != hidden[0]:
        via, needed_by = hidden
        return ctx.error("FT0117", f"`{name}` is not imported", expr.span, "not imported",
                         help=f"`{name}` comes along with `{needed_by}` from {via} but only `{needed_by}` "
                              f"is imported: write use \"{via}\" {{ {needed_by}, {name} }}")
    if block is None:
        visible = [b for b in ctx.symbols.blocks if b not in ctx.symbols.hidden]
        guess = did_you_mean(name, visible)
        hint = f"did you mean `{guess}`?" if guess else f"define a {want} block named `{name}`"
        return ctx.error("FT0102", f"unknown reference `{name}`", expr.span, "not defined", help=hint)
    kind = block.kind.name
    produces = registry.STEPS[kind].output
    if produces != want:
        what = kind if kind == produces else f"{kind} (it produces a {produces})"
        return ctx.error("FT0109", f"expected a {want}, but `{name}` is a {what}",
                         expr.span, f"a {kind}", extra=[Label(block.name.span, f"`{name}` is defined here", False)])
    node = f"{kind}.{name}"
    parts = list(registry.STEPS[kind].ports) or _split_parts(block)
    if len(rest) > 1:
        return ctx.error("FT0102", f"`{expr.dotted}` has too many parts", expr.span, "unknown reference")
    if rest:
        port = rest[0]
        if not parts or port not in parts:
            if parts:
                guess = did_you_mean(port, parts)
                hint = (f"did you mean `{name}.{guess}`? " if guess else "") + f"parts: {', '.join(parts)}"
            else:
                hint = f"`{name}` has no split; refer to it as `{name}`"
            return ctx.error("FT0102", f"`{name}` has no part `{port}`", expr.span, "unknown part", help=hint)
        return RefValue(node, port, expr.span)
    if parts and want == "dataset":
        return ctx.error("FT0102", f"`{name}` is split into {', '.join(parts)}: say which part", expr.span,
                         "which part?", help=f"write `{name}.{parts[0]}`")
    return RefValue(node, None, expr.span)


def _split_parts(block: ast.Block) -> list[str]:
    for stmt in block.body:
        if isinstance(stmt, ast.SubBlock) and stmt.name == "split":
            return [s.name for s in stmt.body if isinstance(s, ast.Attr) and s.name not in ("by", "seed")]
    return []


def _check_call(expr: ast.Expr, family: str, ctx: Ctx, *, sweep: bool = False) -> Any:
    table = registry.CALLS[family]
    if isinstance(expr, ast.Ref) and len(expr.parts) == 1:
        name, args, kwargs, span = expr.parts[0], (), (), expr.span
    elif isinstance(expr, ast.CallExpr):
        name, args, kwargs, span = expr.dotted, expr.args, expr.kwargs, expr.name_span
    elif isinstance(expr, ast.Str) and expr.value in table:
        return ctx.error("FT0106", f"`{expr.value}` is a name, not a string", expr.span, "quoted",
                         help=f"write `{expr.value}` without quotes")
    else:
        return ctx.error("FT0106", f"expected a {family} such as {_examples(table)}, found {describe(expr)}",
                         expr.span, f"expected a {family}")
    sig = table.get(name)
    if sig is None:
        preset = ctx.symbols.presets.get(name)
        if preset is not None and preset.kind.name == family:
            from ftlang.compiler import presets

            return presets.call(preset, list(args), list(kwargs), expr.span, family, ctx, sweep=sweep)
        from ftlang.compiler.symbols import stdlib_presets

        offered = [*table, *(n for n, p in ctx.symbols.presets.items() if p.kind.name == family)]
        shipped = [n for n in stdlib_presets(family) if n not in offered]
        if name in shipped:
            return ctx.error("FT0112", f"`{name}` is a preset in stdlib.{family}s, not imported", span,
                             "not imported", help=f"add `use stdlib.{family}s {{ {name} }}` at the top")
        guess = did_you_mean(name, offered + shipped)
        other = f"`{name}` is a {preset.kind.name} preset, not a {family}. " if preset is not None else ""
        more = f"; stdlib.{family}s has {', '.join(shipped)}" if shipped else ""
        return ctx.error("FT0112", f"unknown {family} `{name}`", span, f"not a {family}",
                         help=other + (f"did you mean `{guess}`? " if guess else "")
                         + f"{family[:-1] + 'ies' if family.endswith('y') else family + 's'}: "
                         f"{', '.join(offered)}{more}")
    return check_args(sig, list(args), list(kwargs), span, ctx, family=family, sweep=sweep)


def _examples(table: dict[str, Signature]) -> str:
    names = list(table)[:3]
    return ", ".join(f"{n}(...)" for n in names)


def check_args(sig: Signature, args: list[ast.Expr], kwargs: list[ast.Kwarg], span: ast.Span,
               ctx: Ctx, *, family: str = "", sweep: bool = False) -> Any:
    """Arguments of a call against its signature; every mistake is reported. The Call
    records the family it was resolved in (`py` is a metric and a reward)."""
    given: dict[str, tuple[ast.Expr, ast.Span]] = {}
    ok = True
    if len(args) > len(sig.positional):
        extra = args[len(sig.positional)]
        ctx.error("FT0106", f"`{sig.name}` takes {len(sig.positional) or 'no'} positional argument"
                  f"{'s' if len(sig.positional) != 1 else ''}", extra.span, "extra argument",
                  help=f"name the arguments: {', '.join(a.name + ' = ...' for a in sig.attrs[:3])}")
        ok = False
    for pname, e in zip(sig.positional, args):
        given[pname] = (e, e.span)
    for kw in kwargs:
        if kw.name in given:
            ctx.error("FT0108", f"argument `{kw.name}` is given twice", kw.span, "again here",
                      extra=[Label(given[kw.name][1], "first here", False)])
            ok = False
            continue
        if sig.attr(kw.name) is None:
            guess = did_you_mean(kw.name, sig.names)
            ctx.error("FT0104", f"`{sig.name}` has no argument `{kw.name}`", kw.span, "unknown argument",
                      help=(f"did you mean `{guess}`? " if guess else "")
                      + (f"arguments: {', '.join(sig.names)}" if sig.names else f"`{sig.name}` takes no arguments"))
            ok = False
            continue
        given[kw.name] = (kw.value, kw.span)
    values: dict[str, Any] = {}
    for a in sig.attrs:
        if a.name in given:
            v = check(given[a.name][0], a, ctx, sweep=sweep)
            ok = ok and v is not INVALID
            values[a.name] = v
        elif a.required:
            ctx.error("FT0105", f"`{sig.name}` needs the argument `{a.name}`", span, f"`{a.name}` missing",
                      help=f"{a.name}: {a.doc}")
            ok = False
        else:
            values[a.name] = _default(a.type, a.default)
    return Call(sig.name, values, family) if ok else INVALID


def default_value(attr: Attr) -> Any:
    """A declared default in IR form: call names become full Calls."""
    return _default(attr.type, attr.default)


def _default(t: str, value: Any) -> Any:
    if value is None:
        return None
    te = parse_type(t)
    if te.kind == "list" and te.item is not None and isinstance(value, list):
        return [_default(te.item.text, v) for v in value]
    if te.kind == "call" and isinstance(value, str):
        sig = registry.CALLS[te.family][value]
        return Call(value, {a.name: _default(a.type, a.default) for a in sig.attrs}, te.family)
    return value
