"""Pass 2: every block against its step's signature -> IR nodes. All errors at once."""

from __future__ import annotations

from typing import Any

from ftlang.compiler import numbers, presets
from ftlang.compiler import types as T
from ftlang.compiler.ir import AssertIR, Node, SelectIR
from ftlang.compiler.symbols import desugar
from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, Label, did_you_mean
from ftlang.stdlib import registry
from ftlang.stdlib import select as select_step
from ftlang.stdlib.dataset import SCHEMA_TYPES
from ftlang.stdlib.spec import Attr, BlockView, StepSpec, Written


def check_blocks(ctx: T.Ctx) -> dict[str, Node]:
    presets.check_definitions(ctx)
    nodes: dict[str, Node] = {}
    for name, block in ctx.symbols.blocks.items():
        ctx.base = ctx.symbols.dirs.get(name)
        ctx.origin = ctx.symbols.origin.get(name)
        definition = ctx.symbols.definitions.get(name)
        before = len(ctx.diagnostics)
        if definition is not None and _is_preset_call(definition.value, ctx):
            block = _expand_definition(definition, ctx)
            if block is None:
                continue
        positional_in_definition(definition, ctx)
        node = check_block(block, ctx)
        if definition is not None and block.body_span is None and isinstance(definition.value, ast.CallExpr) \
                and definition.value.dotted in ctx.symbols.presets:
            # A block preset's body: an error there also shows the call that led to it.
            presets.point_at_call(ctx.diagnostics[before:], definition.value.span, definition.value.dotted)
        if node is not None:
            nodes[node.id] = node
    ctx.base = ctx.origin = None
    return nodes


def positional_in_definition(d: ast.Definition | None, ctx: T.Ctx) -> None:
    """`template qa = plain("x")`: desugaring drops positional arguments (the family's
    signatures take none), so they are reported here, as a call of that family would be."""
    if d is None or not isinstance(d.value, ast.CallExpr) or not d.value.args or _is_preset_call(d.value, ctx):
        return
    sig = registry.CALLS.get(d.kind.name, {}).get(d.value.dotted)
    if sig is None:  # an unknown family: the `style` check says so, one error is enough
        return
    names = sig.names
    ctx.error("FT0106", f"`{d.value.dotted}` takes no positional arguments", d.value.args[0].span,
              "extra argument", help=f"name the arguments: {', '.join(n + ' = ...' for n in names)}" if names
              else f"`{d.value.dotted}` takes no arguments: write `{d.value.dotted}()`")


def _is_preset_call(value: ast.Expr, ctx: T.Ctx) -> bool:
    return isinstance(value, ast.CallExpr) and value.dotted in ctx.symbols.presets \
        and value.dotted not in registry.CALLS.get("template", {})


def _expand_definition(d: ast.Definition, ctx: T.Ctx) -> ast.Block | None:
    """`template chat = mine(system = "x")` with `mine` a template preset: its body's call
    becomes the definition, then the usual desugaring applies."""
    value: ast.Expr = d.value
    for _ in range(33):
        if not _is_preset_call(value, ctx):
            return desugar(ast.Definition(d.kind, d.name, value, d.span))
        assert isinstance(value, ast.CallExpr)
        preset = ctx.symbols.presets[value.dotted]
        if preset.kind.name != d.kind.name:
            ctx.error("FT0112", f"`{value.dotted}` is a {preset.kind.name} preset, not a {d.kind.name}",
                      value.name_span, f"not a {d.kind.name}")
            return None
        if value.dotted in ctx.broken_presets:
            return None
        if preset.value is None:  # a block preset: its body, the arguments substituted
            return presets.expand_block(preset, ast.Definition(d.kind, d.name, value, d.span), ctx)
        expanded = presets.expand(preset, list(value.args), list(value.kwargs), value.span, ctx)
        if expanded is T.INVALID:
            return None
        value = expanded
    return None


def check_block(block: ast.Block, ctx: T.Ctx) -> Node | None:
    kind = block.kind.name
    spec = registry.STEPS[kind]
    sig = spec.signature
    before = len(ctx.diagnostics)
    seen: dict[str, ast.Span] = {}
    params: dict[str, Any] = {}
    spans: dict[str, ast.Span] = {}
    asserts: list[AssertIR] = []
    select: SelectIR | None = None

    for stmt in block.body:
        key = getattr(stmt, "name", None) or type(stmt).__name__.lower()
        stmt_span = getattr(stmt, "name_span", stmt.span)
        if key in seen and not isinstance(stmt, ast.Assert):
            ctx.error("FT0108", f"`{key}` is set twice in {kind} `{block.name.name}`", stmt_span, "set again here",
                      help="each attribute appears at most once per block; keep one",
                      extra=[Label(seen[key], "first set here", False)])
            continue
        seen[key] = stmt_span
        if isinstance(stmt, ast.Attr):
            attr = sig.attr(stmt.name)
            if attr is None and stmt.name == "select" and spec.trains:
                select = _check_select(stmt, ctx)
                continue
            if attr is None:
                _unknown_attr(stmt, spec, ctx)
                continue
            # An attribute's value (or its call's arguments) may be swept.
            value = T.check(stmt.value, attr, ctx, sweep=True)
            if value is not T.INVALID:
                params[stmt.name] = value
            spans[stmt.name] = stmt.span
            if isinstance(stmt.value, ast.CallExpr):  # init.heads: for rules that blame one argument
                spans.update({f"{stmt.name}.{kw.name}": kw.value.span for kw in stmt.value.kwargs})
        elif isinstance(stmt, ast.Sql):
            if "sql" not in spec.statements:
                ctx.error("FT0115", f"`sql` is not allowed in a {kind} block", stmt.span, "sql here",
                          help="SQL belongs in a `curate` block")
                continue
            if not _has_sql(stmt.text.value):
                # Nothing for DuckDB to run: the step could only fail (or write no table) at run time.
                ctx.error("FT0126", f"the query of {kind} `{block.name.name}` is empty", stmt.text.span,
                          "no SQL statement", help='write the query, e.g. sql """SELECT * FROM <dataset>"""')
                continue
            params["sql"] = stmt.text.value
            spans["sql"] = stmt.text.span
        elif isinstance(stmt, ast.Assert):
            if "assert" not in spec.statements:
                ctx.error("FT0115", f"`assert` is not allowed in a {kind} block", stmt.span, "assert here",
                          help="assertions belong in an `eval` block")
                continue
            if numbers.literal_out_of_range(stmt.expr, ctx):
                continue
            asserts.append(AssertIR(stmt.expr, stmt.text or _source_text(ctx, stmt.expr.span), stmt.span))
        elif isinstance(stmt, ast.SubBlock):
            sub = spec.subblocks.get(stmt.name)
            if sub is None:
                if sig.attr(stmt.name) is not None:
                    ctx.error("FT0106", f"`{stmt.name}` is an attribute, not a sub-block", stmt.name_span,
                              "written as a block", help=f"write `{stmt.name} = ...`")
                else:
                    guess = did_you_mean(stmt.name, list(spec.subblocks))
                    ctx.error("FT0119", f"{kind} has no sub-block `{stmt.name}`", stmt.name_span,
                              "unknown sub-block",
                              help=(f"did you mean `{guess}`?" if guess else
                                    f"{kind} sub-blocks: {', '.join(spec.subblocks) or 'none'}"))
                continue
            value = _check_subblock(kind, stmt, ctx)
            if value is not T.INVALID:
                params[stmt.name] = value
            spans[stmt.name] = stmt.span
            for s in stmt.body:
                if isinstance(s, ast.Attr):  # split.by, for errors about the column it names
                    spans[f"{stmt.name}.{s.name}"] = s.value.span
        elif isinstance(stmt, ast.Typed):
            ctx.error("FT0005", "`:` declares a type; attributes are set with `=`", stmt.span,
                      "written like YAML", help=f"write `{stmt.name} = {stmt.type}`")

    for attr in sig.attrs:
        if attr.name not in params and attr.name not in seen:
            if attr.required:
                ctx.error("FT0105", f"{kind} `{block.name.name}` needs `{attr.name}`", block.name.span,
                          f"`{attr.name}` missing", help=f"add `{attr.name} = ...`: {attr.doc}")
            else:
                params[attr.name] = T.default_value(attr)
    for sub in spec.subblocks:
        params.setdefault(sub, None)
    if "sql" in spec.statements and "sql" not in seen:
        ctx.error("FT0105", f"{kind} `{block.name.name}` needs a `sql` statement", block.name.span,
                  "no query", help='add sql """SELECT ... FROM <dataset>"""')
    if spec.rules is not None:  # the step kind's own rules across attributes (its stdlib module)
        view = BlockView(kind, block.name.name, block.name.span, params, spans, tuple(a.expr for a in asserts),
                         lambda name: _written(ctx.symbols.blocks.get(name)), T.describe)
        ctx.diagnostics += spec.rules(view)
    if len(ctx.diagnostics) > before and any(d.level == "error" for d in ctx.diagnostics[before:]):
        return None
    return Node(f"{kind}.{block.name.name}", kind, block.name.name, spec, params, block.span, spans, asserts,
                select)


def _has_sql(text: str) -> bool:
    """Whether a query holds anything but whitespace, `;` and comments (`--` to the end of the
    line, `/* ... */`): the first other character ends the scan, so strings need no parsing."""
    i = 0
    while i < len(text):
        if text[i].isspace() or text[i] == ";":  # `;` alone ends an empty statement
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
        else:
            return True
    return False


def _check_select(stmt: ast.Attr, ctx: T.Ctx) -> SelectIR | None:
    """`select = min loss on clean.heldout`: which point of this block's sweep wins."""
    e = stmt.value
    if not isinstance(e, ast.Select):
        ctx.error("FT0121", "`select` is written `select = min <metric> on <dataset>`", e.span,
                  f"found {T.describe(e)}", help="e.g. select = min loss on clean.heldout")
        return None
    metric = select_step.ALIASES.get(e.metric, e.metric)
    if metric not in select_step.METRICS:
        names = [n for m in select_step.METRICS
                 for n in (m, *(a for a, target in select_step.ALIASES.items() if target == m))]
        lower = [m for m in select_step.METRICS if select_step.BEST[m] == "min"]
        higher = [m for m in select_step.METRICS if select_step.BEST[m] == "max"]
        guess = did_you_mean(e.metric, names)
        ctx.error("FT0121", f"`{e.metric}` cannot select a model", e.span, "unknown metric",
                  help=(f"did you mean `{guess}`? " if guess else "")
                  + f"metrics: {', '.join(lower)} (lower is better), {', '.join(higher)} (higher is better)")
        return None
    data = T.check(e.data, Attr("on", "dataset", None), ctx)
    if data is T.INVALID:
        return None
    better = select_step.BEST[metric]
    if e.mode != better:
        ctx.diagnostics.append(Diagnostic(
            "FT0121", f"`{e.mode} {e.metric}` keeps the {'worst' if e.mode != better else 'best'} point",
            [Label(e.span, f"{'higher' if e.mode == 'max' else 'lower'} {e.metric} wins")], level="warning",
            help=f"write `select = {better} {e.metric} on {e.data.dotted}` unless the worst point is wanted"))
    return SelectIR(e.mode, metric, data, e.span)


def _unknown_attr(stmt: ast.Attr, spec: StepSpec, ctx: T.Ctx) -> None:
    names = spec.signature.names
    guess = did_you_mean(stmt.name, names)
    if stmt.name in spec.subblocks:
        help_ = f"`{stmt.name}` is a sub-block: write `{stmt.name} {{ ... }}`"
    elif stmt.name == "sql" or stmt.name in spec.statements:
        help_ = f'write `{stmt.name} """..."""` without `=`'
    else:
        help_ = (f"did you mean `{guess}`? " if guess else "") + f"{spec.kind} takes: {', '.join(names)}"
    ctx.error("FT0104", f"{spec.kind} has no attribute `{stmt.name}`", stmt.name_span, "unknown attribute",
              help=help_)


def _source_text(ctx: T.Ctx, span: ast.Span) -> str:
    # An imported block's spans point into its own file, not the one being compiled.
    lines = ast.source_lines(ctx.sources.get(span.file) or ctx.source)
    if span.line != span.end_line or span.line > len(lines):
        return " ".join(lines[span.line - 1:span.end_line]).strip()
    return lines[span.line - 1][span.col - 1:span.end_col - 1]


def _check_subblock(kind: str, stmt: ast.SubBlock, ctx: T.Ctx) -> Any:
    if stmt.name == "schema":
        cols: dict[str, str] = {}
        first: dict[str, ast.Span] = {}
        for s in stmt.body:
            if not isinstance(s, ast.Typed):
                ctx.error("FT0106", "schema entries are `column: type`", s.span, "not a column declaration",
                          help="write e.g. `prompt: str`")
                continue
            if s.name in first:  # the later type would silently win over the first
                ctx.error("FT0108", f"column `{s.name}` is declared twice in the schema", s.name_span,
                          "declared again here", help="each column appears once in a schema; keep one",
                          extra=[Label(first[s.name], "first declared here", False)])
                continue
            first[s.name] = s.name_span
            if s.type not in SCHEMA_TYPES:
                guess = did_you_mean(s.type, list(SCHEMA_TYPES))
                ctx.error("FT0106", f"unknown column type `{s.type}`", s.span, "unknown type",
                          help=(f"did you mean `{guess}`? " if guess else "") + f"types: {', '.join(SCHEMA_TYPES)}")
                continue
            cols[s.name] = s.type
        return cols
    if stmt.name == "split":
        sig = registry.STEPS[kind].subblocks["split"]
        parts: dict[str, float] = {}
        out: dict[str, Any] = {"parts": parts, "by": None, "seed": 0}
        ok = True
        for s in stmt.body:
            if not isinstance(s, ast.Attr):
                ctx.error("FT0113", "split entries are `part = fraction`, `by = column`, `seed = n`", s.span,
                          "not an entry")
                ok = False
                continue
            attr = sig.attr(s.name) or Attr(s.name, "float", None, gt=0, le=1)
            v = T.check(s.value, attr, ctx)
            if v is T.INVALID:
                ok = False
            elif s.name in ("by", "seed"):
                out[s.name] = v
            else:
                parts[s.name] = v
        if out["by"] is None and ok:
            ctx.error("FT0113", "split needs `by = column`", stmt.name_span, "no `by`",
                      help="the column whose hash assigns a row to a part, e.g. `by = prompt`")
            ok = False
        total = sum(parts.values())
        if ok and abs(total - 1.0) > 1e-6:
            ctx.error("FT0113", f"split fractions sum to {total:g}, not 1", stmt.span, "fractions",
                      help="make the parts add up to 1, e.g. train = 0.9, heldout = 0.1")
            ok = False
        if ok and len(parts) < 1:
            ctx.error("FT0113", "split needs at least one part", stmt.span, "no parts")
            ok = False
        return out if ok else T.INVALID
    if stmt.name == "search" and kind == "train":  # `objective = min loss on d` is select's syntax
        from ftlang.compiler import search

        return search.settings(stmt, ctx)
    return _check_attr_subblock(registry.STEPS[kind].subblocks[stmt.name], stmt, ctx)


def _check_attr_subblock(sig: Any, stmt: ast.SubBlock, ctx: T.Ctx) -> Any:
    """A sub-block of plain `name = value` attributes (train's `distributed { ... }`): each
    checked against the sub-block's signature; the written ones only (a rule fills defaults)."""
    out: dict[str, Any] = {}
    seen: dict[str, ast.Span] = {}
    ok = True
    for s in stmt.body:
        if not isinstance(s, ast.Attr):
            ctx.error("FT0106", f"{stmt.name} entries are `name = value`", s.span, "not an attribute",
                      help=f"{stmt.name} takes: {', '.join(sig.names)}")
            ok = False
            continue
        attr = sig.attr(s.name)
        if attr is None:
            guess = did_you_mean(s.name, sig.names)
            ctx.error("FT0104", f"{stmt.name} has no attribute `{s.name}`", s.name_span, "unknown attribute",
                      help=(f"did you mean `{guess}`? " if guess else "") + f"{stmt.name} takes: {', '.join(sig.names)}")
            ok = False
            continue
        if s.name in seen:
            ctx.error("FT0108", f"`{s.name}` is set twice in {stmt.name}", s.name_span, "set again here",
                      extra=[Label(seen[s.name], "first set here", False)])
            ok = False
            continue
        seen[s.name] = s.name_span
        v = T.check(s.value, attr, ctx)
        if v is T.INVALID:
            ok = False
        else:
            out[s.name] = v
    return out if ok else T.INVALID


def _written(block: ast.Block | None) -> Written | None:
    """A block as its kind's rules may see another block: each attribute written as a call or
    a name, with the calls or names among its arguments (BlockView.lookup)."""
    if block is None:
        return None
    calls: dict[str, tuple[str, dict[str, str]]] = {}
    for stmt in block.body:
        if isinstance(stmt, ast.Attr) and isinstance(stmt.value, (ast.CallExpr, ast.Ref)):
            kwargs = stmt.value.kwargs if isinstance(stmt.value, ast.CallExpr) else ()
            calls[stmt.name] = (stmt.value.dotted, {kw.name: kw.value.dotted for kw in kwargs
                                                    if isinstance(kw.value, (ast.CallExpr, ast.Ref))})
    return Written(block.kind.name, calls)
