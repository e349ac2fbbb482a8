"""Pass 3: sweeps. Block-level nodes -> one node per point.

- `lr = sweep [1e-4, 2e-4]` makes `train.sft[lr=1e-4]` and `train.sft[lr=2e-4]`; several
  swept attributes make their cartesian product.
- A block that refers to a swept block from a single-valued attribute (`from = sft`) fans
  out too, one node per upstream point: `train.aligned[sft.lr=1e-4]` (an inherited
  dimension is named after the block that sweeps it).
- A reference from a list-typed attribute (eval `models = [base, sft]`) takes every point.
- Points are joined, not crossed: two references that both depend on the same sweep
  agree on its value.
- `select = min loss on data` on a swept train block adds `select.sft`, which measures
  every point and commits the winner's files; every other reference to `sft` means it.

Node ids stay valid file names for the runtime (it writes .ft/state/<id>.json): labels
never contain `/`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from ftlang.compiler import types as T
from ftlang.compiler.ir import (
    DESCEND,
    Node,
    RefValue,
    SelectIR,
    Splice,
    SweepValue,
    contains,
    refs_in,
    transform,
    walk,
)
from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, Label

Dim = tuple[str, str]  # (block-level id that sweeps it, dimension name)
MAX_NODES = 10_000  # fan-out multiplies: past this a typo, not a plan, is the likely cause


def label(expr: ast.Expr, value: Any, ctx: T.Ctx) -> str:
    """A short, stable, file-name-safe text for one value of a sweep."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, str):
        return _safe(re.sub(r"\s+", "_", value))
    if isinstance(value, RefValue):
        return value.label
    # Calls, lists, env values: the expression as written, without spaces.
    return _safe(re.sub(r"\s+", "", _source(expr, ctx)) or type(value).__name__)


def format_number(v: float) -> str:
    """1e-4 -> "1e-4", 0.05 -> "0.05", 2.0 -> "2": the shorter of positional and scientific."""
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    if v.is_integer() and abs(v) < 1e6:
        return str(int(v))
    positional = repr(v)
    if "e" in positional:
        positional = format(Decimal(positional), "f")
    sci = format(Decimal(repr(v)).normalize(), "e").replace("e+", "e")
    sci = re.sub(r"e(-?)0+(\d)", r"e\1\2", sci)
    return sci if len(sci) < len(positional) else positional


def _safe(text: str) -> str:
    text = re.sub(r"[^\w.+\-=(),\[\]:*]", "_", text)
    return text[:48] or "_"


def _source(expr: ast.Expr, ctx: T.Ctx) -> str:
    span = expr.span
    lines = ast.source_lines(ctx.sources.get(span.file) or (ctx.source if span.file == _main(ctx) else ""))
    if not 1 <= span.line <= len(lines):
        return ""
    if span.line == span.end_line:
        return lines[span.line - 1][span.col - 1:span.end_col - 1]
    part = [lines[span.line - 1][span.col - 1:], *lines[span.line:span.end_line - 1],
            lines[span.end_line - 1][:span.end_col - 1] if span.end_line <= len(lines) else ""]
    return " ".join(part)


def _main(ctx: T.Ctx) -> str:
    return next(iter(ctx.sources), "")


# ---- expansion --------------------------------------------------------------------


@dataclass
class _Point:
    id: str
    dims: dict[Dim, str]  # dimension -> label


def has_sweeps(nodes: dict[str, Node]) -> bool:
    return any(n.select is not None or contains(n.params, SweepValue) for n in nodes.values())


def select_nodes(nodes: dict[str, Node], ctx: T.Ctx) -> dict[str, Node]:
    """Adds `select.<name>` for each train block with `select = ...`; later references
    to the block mean the winner."""
    from ftlang.stdlib.select import SPEC

    out = dict(nodes)
    redirect: dict[str, str] = {}
    for nid, node in nodes.items():
        sel = node.select
        if sel is None:
            continue
        if not _find_sweeps(node.params, ""):
            ctx.diagnostics.append(Diagnostic(
                "FT0121", f"`select` needs a sweep in {node.kind} `{node.name}`", [Label(sel.span, "nothing to choose from")],
                help="sweep an attribute of this block (lr = sweep [1e-4, 2e-4]), or remove `select`"))
            continue
        sid = f"select.{node.name}"
        if sid in nodes:
            continue
        params = {
            "models": [RefValue(nid, None, sel.span, many=True)],
            "data": sel.data,
            "metric": sel.metric,
            "mode": sel.mode,
            "prompt_field": _plain(node.params.get("prompt_field"), "prompt"),
            "completion_field": _plain(node.params.get("completion_field"), "completion"),
            "text_field": _plain(node.params.get("text_field"), "text"),
            "objective": _plain(node.params.get("objective"), "sft"),
        }
        for a in SPEC.signature.attrs:
            params.setdefault(a.name, T.default_value(a))
        out[sid] = Node(sid, "select", node.name, SPEC, params, sel.span, {"models": sel.span})
        redirect[nid] = sid
    if redirect:
        for node in out.values():
            if node.kind != "select":
                node.params = _redirect(node.params, redirect)
    return out


def _plain(value: Any, default: str) -> Any:
    return default if value is None or isinstance(value, SweepValue) else value


def _redirect(value: Any, redirect: dict[str, str]) -> Any:
    def fn(v: Any) -> Any:
        if isinstance(v, RefValue):
            return replace(v, node=redirect[v.node]) if v.node in redirect else v
        return DESCEND

    return transform(value, fn)


def expand(nodes: dict[str, Node], order: list[str], ctx: T.Ctx) -> dict[str, Node]:
    """One node per point, in the topological `order` of the block-level graph."""
    points: dict[str, list[_Point]] = {}
    own: dict[str, set[Dim]] = {}
    out: dict[str, Node] = {}
    for bid in order:
        node = nodes[bid]
        sweeps = _find_sweeps(node.params, "")
        names = _dim_names(sweeps)
        own[bid] = {(bid, n) for n in names}
        result: list[_Point] = []
        for choice in itertools.product(*(range(len(sv.values)) for _, sv in sweeps)):
            picked = {id(sv): i for (_, sv), i in zip(sweeps, choice)}
            params = _pick(node.params, picked)
            mine = {(bid, n): sweeps[k][1].labels[i] for k, (n, i) in enumerate(zip(names, choice))}
            singles = sorted({r.node for r in refs_in(params) if not r.many and r.node in points})
            if node.kind == "select":
                # Chooses among the points of one train block, once per point of what that
                # block inherits from upstream.
                cand = [r.node for r in refs_in(params) if r.many][0]
                inherited = [_Point("", {k: v for k, v in p.dims.items() if k not in own[cand]})
                             for p in points[cand]]
                options = [[p for i, p in enumerate(inherited) if p.dims not in [q.dims for q in inherited[:i]]]]
            else:
                options = []
            options += [points[u] for u in singles]
            combos = _join(options, mine)
            if len(out) + len(combos) > MAX_NODES:
                ctx.diagnostics.append(Diagnostic(
                    "FT0123", f"the sweeps make more than {MAX_NODES} steps", [Label(node.span, "here")],
                    help="sweep fewer values, or add `select = ...` so that later blocks use one winner"))
                return nodes
            for dims, chosen in combos:
                # The single references' points were chosen by the join: no search needed.
                fixed = dict(zip(singles, chosen[len(chosen) - len(singles):]))
                concrete = _resolve(params, points, dims, fixed)
                pid = bid + _suffix(bid, dims, own[bid])
                n = Node(pid, node.kind, node.name, node.spec, concrete, node.span, node.attr_spans,
                         node.asserts, None, {_dim_text(bid, d): v for d, v in dims.items()})
                out[pid] = n
                result.append(_Point(pid, dims))
        points[bid] = result
    _check_asserts(out, ctx)
    return out


def _find_sweeps(value: Any, name: str) -> list[tuple[str, SweepValue]]:
    """Every SweepValue inside `value`, with the attribute or argument name it sits at."""
    return [(v.name or n, v) for n, v in walk(value, name) if isinstance(v, SweepValue)]


def _dim_names(sweeps: list[tuple[str, SweepValue]]) -> list[str]:
    names: list[str] = []
    for n, _ in sweeps:
        base, k = n, 2
        while n in names:
            n, k = f"{base}{k}", k + 1
        names.append(n)
    return names


def _pick(value: Any, picked: dict[int, int]) -> Any:
    def fn(v: Any) -> Any:
        return _pick(v.values[picked[id(v)]], picked) if isinstance(v, SweepValue) else DESCEND

    return transform(value, fn)


def _join(options: list[list[_Point]], start: dict[Dim, str]) -> list[tuple[dict[Dim, str], list[_Point]]]:
    """Consistent combinations: one point per option, agreeing on every shared dimension."""
    combos: list[tuple[dict[Dim, str], list[_Point]]] = [(dict(start), [])]
    for opts in options:
        nxt = []
        for dims, chosen in combos:
            for p in opts:
                if all(dims.get(k, v) == v for k, v in p.dims.items()):
                    nxt.append(({**dims, **p.dims}, chosen + [p]))
        combos = nxt
    return combos


def _consistent(p: _Point, dims: dict[Dim, str]) -> bool:
    return all(dims.get(k, v) == v for k, v in p.dims.items())


def _resolve(value: Any, points: dict[str, list[_Point]], dims: dict[Dim, str],
             fixed: dict[str, _Point]) -> Any:
    """Block-level references -> the points that agree with `dims`."""
    def fn(v: Any) -> Any:
        if not isinstance(v, RefValue):
            return DESCEND
        if v.node not in points:
            return v
        if not v.many and v.node in fixed:
            return replace(v, node=fixed[v.node].id)
        match = [p for p in points[v.node] if _consistent(p, dims)]
        if v.many:  # a list entry: every agreeing point takes its place in the list
            return Splice([replace(v, node=p.id) for p in match])
        return replace(v, node=match[0].id) if match else v

    return transform(value, fn)


def _dim_text(bid: str, d: Dim) -> str:
    origin, name = d
    return name if origin == bid else f"{origin.split('.', 1)[1]}.{name}"


def _suffix(bid: str, dims: dict[Dim, str], own: set[Dim]) -> str:
    if not dims:
        return ""
    # This block's own dimensions first, in the order written; inherited ones after.
    keys = [d for d in dims if d in own] + sorted(d for d in dims if d not in own)
    return "[" + ",".join(f"{_dim_text(bid, d)}={dims[d]}" for d in keys) + "]"


def _check_asserts(nodes: dict[str, Node], ctx: T.Ctx) -> None:
    """`assert sft.loss < ...` is ambiguous when `sft` became several points."""
    for node in nodes.values():
        if not node.asserts:
            continue
        names = {_model_name(r.node) for r in node.refs() if r.node in nodes}
        for a in node.asserts:
            for ref in _assert_refs(a.expr):
                model = ref.parts[0]
                points = sorted(n for n in names if n.startswith(model + "["))
                if model not in names and points:
                    ctx.diagnostics.append(Diagnostic(
                        "FT0118", f"`{model}` is swept: `{ref.dotted}` names {len(points)} models",
                        [Label(ref.span, "which point?")],
                        help=f"add `select = min loss on <dataset>` to `{model}` to compare its winner, "
                             f"or assert on a model that is not swept ({', '.join(points[:3])}"
                             f"{', ...' if len(points) > 3 else ''} are evaluated)"))


def _model_name(nid: str) -> str:
    return nid.split(".", 1)[1] if "." in nid else nid


def _assert_refs(e: ast.Expr) -> list[ast.Ref]:
    if isinstance(e, ast.Ref):
        return [e] if len(e.parts) == 2 else []
    if isinstance(e, ast.BinOp):
        return _assert_refs(e.left) + _assert_refs(e.right)
    if isinstance(e, ast.Neg):
        return _assert_refs(e.operand)
    return []


__all__ = ["SelectIR", "expand", "format_number", "has_sweeps", "label", "select_nodes"]
