"""Pass 2: every block against its step's signature -> IR nodes. All errors at once."""

from __future__ import annotations

import re
from typing import Any

from ftlang.compiler import presets
from ftlang.compiler import types as T
from ftlang.compiler.ir import AssertIR, Node, RefValue, SelectIR
from ftlang.compiler.symbols import desugar
from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, Label, did_you_mean
from ftlang.stdlib import registry
from ftlang.stdlib.spec import Attr, Call, StepSpec

SCHEMA_TYPES = ("str", "int", "float", "bool")


SELECT_METRICS = {"loss": "loss", "eval_loss": "loss", "perplexity": "perplexity",
                  "exact_match": "exact_match"}


def check_blocks(ctx: T.Ctx) -> dict[str, Node]:
    presets.check_definitions(ctx)
    nodes: dict[str, Node] = {}
    for name, block in ctx.symbols.blocks.items():
        ctx.base = ctx.symbols.dirs.get(name)
        ctx.origin = ctx.symbols.origin.get(name)
        definition = ctx.symbols.definitions.get(name)
        if definition is not None and _is_preset_call(definition.value, ctx):
            block = _expand_definition(definition, ctx)
            if block is None:
                continue
        node = check_block(block, ctx)
        if node is not None:
            nodes[node.id] = node
    ctx.base = ctx.origin = None
    return nodes


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
            ctx.sweep_ok = True  # an attribute's value (or its call's arguments) may be swept
            try:
                value = T.check(stmt.value, attr, ctx)
            finally:
                ctx.sweep_ok = False
            if value is not T.INVALID:
                params[stmt.name] = value
            spans[stmt.name] = stmt.span
        elif isinstance(stmt, ast.Sql):
            if "sql" not in spec.statements:
                ctx.error("FT0115", f"`sql` is not allowed in a {kind} block", stmt.span, "sql here",
                          help="SQL belongs in a `curate` block")
                continue
            params["sql"] = stmt.text.value
            spans["sql"] = stmt.text.span
        elif isinstance(stmt, ast.Assert):
            if "assert" not in spec.statements:
                ctx.error("FT0115", f"`assert` is not allowed in a {kind} block", stmt.span, "assert here",
                          help="assertions belong in an `eval` block")
                continue
            asserts.append(AssertIR(stmt.expr, _source_text(ctx, stmt.expr.span), stmt.span))
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
            if kind == "curate" and attr.name == "from" and "sql" in seen:
                params["from"] = None  # the tables the query reads (contracts.check fills it in)
            elif attr.required:
                ctx.error("FT0105", f"{kind} `{block.name.name}` needs `{attr.name}`", block.name.span,
                          f"`{attr.name}` missing", help=f"add `{attr.name} = ...`: {attr.doc}")
            else:
                params[attr.name] = T.default_value(attr)
    for sub in spec.subblocks:
        params.setdefault(sub, None)
    if "sql" in spec.statements and "sql" not in seen:
        ctx.error("FT0105", f"{kind} `{block.name.name}` needs a `sql` statement", block.name.span,
                  "no query", help='add sql """SELECT ... FROM <dataset>"""')
    _block_rules(kind, block, params, spans, asserts, ctx)
    if len(ctx.diagnostics) > before and any(d.level == "error" for d in ctx.diagnostics[before:]):
        return None
    return Node(f"{kind}.{block.name.name}", kind, block.name.name, spec, params, block.span, spans, asserts,
                select)


def _check_select(stmt: ast.Attr, ctx: T.Ctx) -> SelectIR | None:
    """`select = min loss on clean.heldout`: which point of this block's sweep wins."""
    e = stmt.value
    if not isinstance(e, ast.Select):
        ctx.error("FT0121", "`select` is written `select = min <metric> on <dataset>`", e.span,
                  f"found {T.describe(e)}", help="e.g. select = min loss on clean.heldout")
        return None
    metric = SELECT_METRICS.get(e.metric)
    if metric is None:
        guess = did_you_mean(e.metric, list(SELECT_METRICS))
        ctx.error("FT0121", f"`{e.metric}` cannot select a model", e.span, "unknown metric",
                  help=(f"did you mean `{guess}`? " if guess else "")
                  + "metrics: loss, perplexity (lower is better), exact_match (higher is better)")
        return None
    data = T.check(e.data, Attr("on", "dataset", None), ctx)
    if data is T.INVALID:
        return None
    better = "max" if metric == "exact_match" else "min"
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
    lines = (ctx.sources.get(span.file) or ctx.source).splitlines()
    if span.line != span.end_line or span.line > len(lines):
        return " ".join(lines[span.line - 1:span.end_line]).strip()
    return lines[span.line - 1][span.col - 1:span.end_col - 1]


def _check_subblock(kind: str, stmt: ast.SubBlock, ctx: T.Ctx) -> Any:
    if stmt.name == "schema":
        cols: dict[str, str] = {}
        for s in stmt.body:
            if not isinstance(s, ast.Typed):
                ctx.error("FT0106", "schema entries are `column: type`", s.span, "not a column declaration",
                          help="write e.g. `prompt: str`")
                continue
            if s.type not in SCHEMA_TYPES:
                guess = did_you_mean(s.type, SCHEMA_TYPES)
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
    raise AssertionError(stmt.name)


def _block_rules(kind: str, block: ast.Block, params: dict[str, Any], spans: dict[str, ast.Span],
                 asserts: list[AssertIR], ctx: T.Ctx) -> None:
    """Rules across attributes of one block."""
    if kind == "model":
        given = [k for k in ("path", "hub", "init", "gguf") if k in spans]
        if len(given) != 1:
            where = [Label(spans[k], f"`{k}`", False) for k in given[1:]]
            ctx.diagnostics.append(Diagnostic(
                "FT0114", f"model `{block.name.name}` needs exactly one of path, hub, init or gguf"
                + (f" (found {', '.join(given)})" if given else ""),
                [Label(block.name.span, "this model"), *where],
                help="path = \"models/x\" (a local folder), hub = \"org/name\" with revision, "
                     "gguf = \"x.gguf\", or init = tiny(...)"))
        elif params.get("hub") is not None and params.get("revision") is None:
            ctx.diagnostics.append(Diagnostic(
                "FT0114", f"model `{block.name.name}` is not pinned to a revision", [Label(spans["hub"], "unpinned")],
                level="warning", help="add `revision = \"<commit>\"`: cache keys need a fixed revision"))
        elif isinstance(params.get("revision"), str) and not _looks_like_commit(params["revision"]):
            ctx.diagnostics.append(Diagnostic(
                "FT0114", f"`revision = \"{params['revision']}\"` names a branch or tag, not a commit",
                [Label(spans["revision"], "moves when the repository changes")], level="warning",
                help="pin a commit hash: the cache key sees only this string, not what it points at"))
    if kind == "train" and params.get("objective") == "clm" and params.get("template") is not None:
        ctx.diagnostics.append(Diagnostic(
            "FT0114", "a template has no effect with objective = clm", [Label(spans["template"], "ignored")],
            level="warning", help="remove `template`, or use objective = sft"))
    if kind == "train":
        _method_rules(block, params, spans, ctx)
        _cadence_rules(params, spans, ctx)
    if kind == "merge":
        _merge_rules(block, params, spans, ctx)
    if kind == "eval":
        models = {r.node.split(".", 1)[1] for r in params.get("models") or [] if isinstance(r, RefValue)}
        from ftlang.stdlib.evaluate_spec import metric_key

        metrics = {metric_key(c) for c in params.get("metrics") or [] if hasattr(c, "name")}
        for a in asserts:
            _check_assert(a.expr, models, metrics, ctx)


def _looks_like_commit(rev: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{7,40}", rev))


def _cadence_rules(params: dict[str, Any], spans: dict[str, ast.Span], ctx: T.Ctx) -> None:
    """Settings that are legal one by one but cannot do what they say together: warnings."""
    warmup, steps = params.get("warmup"), params.get("max_steps")
    if isinstance(warmup, (int, float)) and isinstance(steps, int) and warmup >= 1 and 0 < steps < warmup:
        ctx.diagnostics.append(Diagnostic(
            "FT0114", f"`warmup` ({warmup:g} steps) is longer than `max_steps` ({steps})",
            [Label(spans["warmup"], "never finishes")], level="warning",
            help="the learning rate never reaches `lr`: shorten warmup, or give it as a ratio (< 1)"))
    if "eval_steps" in spans and params.get("eval_data") is None:
        ctx.diagnostics.append(Diagnostic(
            "FT0114", "`eval_steps` has no effect without `eval_data`", [Label(spans["eval_steps"], "ignored")],
            level="warning", help="add `eval_data = <dataset>` (validation rows), or remove eval_steps"))


def _attr_expr(block: ast.Block, name: str) -> ast.Expr | None:
    for stmt in block.body:
        if isinstance(stmt, ast.Attr) and stmt.name == name:
            return stmt.value
    return None


def _upstream_adapter(ref: Any, ctx: T.Ctx) -> str | None:
    """The method name written in the train block `ref` points at, when that block trains an
    adapter (anything but full weights); None otherwise."""
    if not isinstance(ref, RefValue) or not ref.node.startswith("train."):
        return None
    block = ctx.symbols.blocks.get(ref.node.split(".", 1)[1].split("[", 1)[0])
    if block is None:
        return None
    expr = _attr_expr(block, "method")
    name = expr.dotted if isinstance(expr, (ast.CallExpr, ast.Ref)) else None
    if name is None or name == "full":
        return None
    if name in registry.METHODS and name not in registry.ADAPTERS:
        adapter = next((kw.value for kw in expr.kwargs if kw.name == "adapter"), None) \
            if isinstance(expr, ast.CallExpr) else None
        inner = adapter.dotted if isinstance(adapter, (ast.CallExpr, ast.Ref)) else None
        return None if inner in (None, "full") else inner
    return name


def _method_rules(block: ast.Block, params: dict[str, Any], spans: dict[str, ast.Span], ctx: T.Ctx) -> None:
    """Method/model compatibility inside one train block."""
    method = params.get("method")
    if not isinstance(method, Call):
        return
    mspan = spans.get("method", block.name.span)
    name = method.name
    warn = lambda msg, span, label, help_: ctx.diagnostics.append(  # noqa: E731
        Diagnostic("FT0114", msg, [Label(span, label)], level="warning", help=help_))
    adapter = method.args.get("adapter")
    if isinstance(adapter, Call) and adapter.name not in registry.ADAPTERS:
        ctx.error("FT0114", f"`adapter = {adapter.name}(...)` is not a way to train weights", mspan,
                  "not an adapter", help=f"adapter is one of: {', '.join(registry.ADAPTERS)}")
        return
    quant = method.args.get("quant") if name == "lora" else None
    if name == "lora" and method.args.get("double_quant") and quant not in ("nf4", "fp4"):
        warn("double_quant applies to 4-bit quantisation only", mspan, "no effect",
             'use quant = "nf4" (or "fp4") with double_quant = true')
    if name not in registry.ADAPTERS and "objective" in spans:
        warn(f"`objective` has no effect with method = {name}(...): the method is the objective",
             spans["objective"], "ignored", "remove `objective`")
    if params.get("patience") is not None and params.get("eval_data") is None:
        ctx.error("FT0114", "early stopping needs validation data", spans.get("patience", block.name.span),
                  "`patience` without `eval_data`", help="add `eval_data = <dataset>`, or remove `patience`")
    if params.get("optimizer") == "adamw_8bit" and params.get("device") in ("cpu", "mps"):
        ctx.error("FT0114", "adamw_8bit runs on CUDA only", spans.get("optimizer", block.name.span),
                  f"device = {params.get('device')}", help="use optimizer = adamw on this device")
    if params.get("packing") and name not in registry.ADAPTERS:
        warn(f"packing applies to sft, chat and clm training, not {name}", spans["packing"], "ignored",
             "remove `packing`")
    if name in ("dpo", "kto", "online_dpo", "rloo") or (name == "grpo" and (method.args.get("beta") or 0) > 0):
        lower = _upstream_adapter(params.get("from"), ctx)
        if lower is not None:
            ref = params["from"]
            ctx.diagnostics.append(Diagnostic(
                "FT0114", f"the reference model of {name} is `{ref.label}` with its {lower} adapter merged",
                [Label(spans.get("from", block.name.span), "policy and reference start here")],
                level="note", help=None))
    for r in method.args.get("reward") or []:
        if isinstance(r, Call) and r.name == "rm" and isinstance(r.args.get("model"), RefValue):
            target = r.args["model"]
            tb = ctx.symbols.blocks.get(target.node.split(".", 1)[1].split("[", 1)[0])
            expr = _attr_expr(tb, "method") if tb is not None and tb.kind.name == "train" else None
            if tb is not None and not (isinstance(expr, (ast.CallExpr, ast.Ref)) and expr.dotted == "reward_model"):
                warn(f"`{target.label}` is not trained with method = reward_model(...)", target.span or mspan,
                     "not a reward model", "rm(...) scores with a sequence-classification model")


def _merge_rules(block: ast.Block, params: dict[str, Any], spans: dict[str, ast.Span], ctx: T.Ctx) -> None:
    models, weights = params.get("models"), params.get("weights")
    if isinstance(models, list) and isinstance(weights, list) and len(models) != len(weights):
        ctx.error("FT0114", f"{len(weights)} weights for {len(models)} models", spans["weights"],
                  "one weight per model", help=f"give {len(models)} weights, or leave `weights` out")
    if isinstance(models, list) and len(models) < 2 and isinstance(params.get("method"), Call) \
            and params["method"].name != "linear":
        ctx.error("FT0114", "merging needs at least two models", spans.get("models", block.name.span),
                  "one model", help="to fold an adapter into its base, export it with merge = true")


def _check_assert(expr: ast.Expr, models: set[str], metrics: set[str], ctx: T.Ctx) -> None:
    if isinstance(expr, ast.BinOp):
        _check_assert(expr.left, models, metrics, ctx)
        _check_assert(expr.right, models, metrics, ctx)
    elif isinstance(expr, ast.Neg):
        _check_assert(expr.operand, models, metrics, ctx)
    elif isinstance(expr, ast.Ref):
        if len(expr.parts) != 2:
            ctx.error("FT0118", f"`{expr.dotted}`: assertions compare `model.metric` values", expr.span,
                      "not model.metric", help="e.g. assert sft.exact_match >= base.exact_match")
            return
        model, metric = expr.parts
        if model not in models:
            guess = did_you_mean(model, models)
            ctx.error("FT0118", f"`{model}` is not one of this eval's models", expr.span, "not evaluated here",
                      help=(f"did you mean `{guess}`? " if guess else "") + f"models: {', '.join(sorted(models))}")
        elif metric not in metrics:
            guess = did_you_mean(metric, metrics)
            ctx.error("FT0118", f"`{metric}` is not measured by this eval", expr.span, "unknown metric",
                      help=(f"did you mean `{guess}`? " if guess else "") + f"metrics: {', '.join(sorted(metrics))}")
    elif not isinstance(expr, (ast.Num,)):
        ctx.error("FT0118", f"assertions use numbers and model.metric values, found {T.describe(expr)}",
                  expr.span, "not allowed here")
