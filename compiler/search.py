"""Bayesian hyperparameter search (Optuna): `lr = search(loguniform(1e-5, 1e-3))` and the
train block's `search { trials = 8, sampler = tpe, objective = min loss on d, pruner = median }`.

In:  search(...) expressions where types.check meets them (`space`), the `search` sub-block
     (`settings`), and after sweeps.expand the checked nodes (`expand`).
Out: a `Call("search", {...})` standing for the searched value; the settings as a dict; and
     per searched block, one ordinary train node per trial, `train.sft[trial=0]` ...
     `train.sft[trial=N-1]`, plus `search.sft`, which keeps the best trial's model (every other
     reference to the block means it, as with `select`).

How trials can be static nodes although trial k's values depend on earlier results: trial k
refers to trials 0..k-1 (`search.history`), so its key holds their output digests, the
sampler settings and the seed, but not `trials`. At run time (stdlib/search.py) it replays
trials 0..k-1 through Optuna's ask/tell from their committed metadata and asks for its own
values; the values are a deterministic function of the seed and the earlier results. So a
rerun finds every trial cached, and raising `trials` adds nodes without changing the keys of
the ones before. Trials run one after another (each waits on the one before); `ft plan`
shows a trial whose predecessor must run as waiting on it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ftlang.compiler import types as T
from ftlang.compiler.ir import DESCEND, Node, RefValue, transform
from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, Label
from ftlang.stdlib import search as S
from ftlang.stdlib.spec import REQUIRED, Attr, Call

SPACES = ("loguniform", "uniform", "choice")


def space(expr: ast.CallExpr, attr: Attr, ctx: T.Ctx, *, allowed: bool) -> Any:
    """`search(loguniform(a, b))` / `search(uniform(a, b))` / `search(choice([...]))` for `attr`."""
    if not allowed:
        return ctx.error("FT0400", "`search(...)` is not allowed here", expr.span, "search",
                         help="search a train attribute (lr = search(loguniform(1e-5, 1e-3))) or an "
                              "argument of its method (lora(r = search(choice([8, 16]))))")
    if attr.of.kind not in ("int", "float"):
        return ctx.error("FT0400", f"`{attr.name}` is not numeric: it cannot be searched", expr.span,
                         f"`{attr.name}` takes {attr.type}",
                         help="search numbers (a learning rate, a rank, a dropout); sweep other values "
                              f"with `{attr.name} = sweep [...]`")
    inner = expr.args[0] if len(expr.args) == 1 and not expr.kwargs else None
    if not isinstance(inner, ast.CallExpr) or inner.dotted not in SPACES:
        return ctx.error("FT0401", "`search(...)` takes one space", expr.span, "no space",
                         help="write search(loguniform(1e-5, 1e-3)), search(uniform(0, 0.1)) or "
                              "search(choice([8, 16, 32]))")
    name = inner.dotted
    if name == "choice":
        items = inner.args[0].items if len(inner.args) == 1 and isinstance(inner.args[0], ast.ListExpr) else None
        if not items:
            return ctx.error("FT0401", "choice(...) takes a non-empty list", inner.span, "no choices",
                             help="e.g. choice([8, 16, 32])")
        values = [T.check(e, attr, ctx) for e in items]
        if any(v is T.INVALID for v in values):
            return T.INVALID
        if len(set(values)) != len(values):
            return ctx.error("FT0401", "choice(...) repeats a value", inner.span, "repeated value",
                             help="each choice must differ")
        return Call("search", {"space": name, "type": attr.of.kind, "low": None, "high": None,
                               "choices": values}, "search")
    if len(inner.args) != 2 or inner.kwargs:
        return ctx.error("FT0401", f"{name}(...) takes two numbers: low, high", inner.span, "low, high",
                         help=f"e.g. {name}(1e-5, 1e-3)")
    low, high = (T.check(e, attr, ctx) for e in inner.args)
    if low is T.INVALID or high is T.INVALID:
        return T.INVALID
    if not low < high:
        return ctx.error("FT0401", f"{name}({low:g}, {high:g}) is empty: low must be below high",
                         inner.span, "empty range", help="write the smaller bound first")
    if name == "loguniform" and low <= 0:
        return ctx.error("FT0401", "loguniform needs a positive low bound", inner.args[0].span, "<= 0",
                         help="use uniform(...) for ranges that include 0")
    return Call("search", {"space": name, "type": attr.of.kind, "low": low, "high": high, "choices": None},
                "search")


def settings(stmt: ast.SubBlock, ctx: T.Ctx) -> Any:
    """The `search { ... }` sub-block: its attributes (stdlib.search.SIGNATURE), with
    `objective = min loss on <dataset>` written like select's."""
    out: dict[str, Any] = {}
    seen: dict[str, ast.Span] = {}
    ok = True
    for s in stmt.body:
        if not isinstance(s, ast.Attr):
            ctx.error("FT0402", "search entries are `name = value`", s.span, "not an attribute",
                      help=f"search takes: {', '.join(S.SIGNATURE.names)}")
            ok = False
            continue
        attr = S.SIGNATURE.attr(s.name)
        if attr is None:
            ctx.error("FT0104", f"search has no attribute `{s.name}`", s.name_span, "unknown attribute",
                      help=f"search takes: {', '.join(S.SIGNATURE.names)}")
            ok = False
            continue
        if s.name in seen:
            ctx.error("FT0108", f"`{s.name}` is set twice in search", s.name_span, "set again here",
                      extra=[Label(seen[s.name], "first set here", False)])
            ok = False
            continue
        seen[s.name] = s.name_span
        if s.name == "objective":
            e = s.value
            if not isinstance(e, ast.Select):
                ctx.error("FT0402", "`objective` is written `objective = min loss on <dataset>`", e.span,
                          f"found {T.describe(e)}", help="e.g. objective = min loss on clean.heldout")
                ok = False
                continue
            if e.metric not in S.METRICS:
                ctx.error("FT0402", f"`{e.metric}` cannot be a search objective", e.span, "unknown metric",
                          help=f"objectives: {', '.join(S.METRICS)} (measured on the dataset after training)")
                ok = False
                continue
            data = T.check(e.data, Attr("objective", "dataset", REQUIRED), ctx)
            if data is T.INVALID:
                ok = False
                continue
            out.update(mode=e.mode, metric=e.metric, data=data)
            continue
        v = T.check(s.value, attr, ctx)
        if v is T.INVALID:
            ok = False
        else:
            out[s.name] = v
    if ok and "data" not in out:
        ctx.error("FT0402", "search needs `objective = min loss on <dataset>`", stmt.name_span, "no objective",
                  help="the dataset each trial's model is measured on, e.g. objective = min loss on clean.heldout")
        ok = False
    if not ok:
        return T.INVALID
    for a in S.SIGNATURE.attrs:
        if a.name not in ("objective",):
            out.setdefault(a.name, T.default_value(a))
    return out


def spaces(value: Any, path: str = "") -> list[tuple[str, Call]]:
    """Every search(...) inside a node's params, with its dotted place (lr, method.r)."""
    return S.find(value, path)


def expand(nodes: dict[str, Node], ctx: T.Ctx) -> dict[str, Node]:
    """One node per trial for each searched train block, and its `search.<name>` winner."""
    out: dict[str, Node] = {}
    redirect: dict[str, str] = {}
    swept: set[str] = set()
    for nid, node in nodes.items():
        found = S.find({k: v for k, v in node.params.items() if k != S.NAME}, "")
        conf = node.params.get(S.NAME)
        where = node.attr_spans.get(found[0][0].split(".", 1)[0], node.span) if found else node.span
        if not found and conf is None:
            out[nid] = node
            continue
        if node.kind != "train":
            ctx.diagnostics.append(Diagnostic("FT0400", f"only train blocks can be searched, not {node.kind}",
                                              [Label(where, "search")], help="sweep it: `sweep [...]`"))
            continue
        if conf is None:
            ctx.diagnostics.append(Diagnostic(
                "FT0402", f"`{found[0][0]}` is searched but train `{node.name}` has no `search {{ ... }}`",
                [Label(where, "searched here")],
                help="add search { trials = 8, objective = min loss on <dataset> }"))
            continue
        if not found:
            ctx.diagnostics.append(Diagnostic(
                "FT0402", f"train `{node.name}` has `search {{ ... }}` but nothing to search",
                [Label(node.attr_spans.get(S.NAME, node.span), "search settings")],
                help="write a value as search(...), e.g. lr = search(loguniform(1e-5, 1e-3))"))
            continue
        if "[" in nid:
            if node.block not in swept:  # once per block, not once per sweep point
                swept.add(node.block)
                ctx.diagnostics.append(Diagnostic(
                    "FT0403", f"train `{node.name}` is swept ({nid.split('[', 1)[1][:-1]}, ...): a block is "
                    "either swept or searched", [Label(where, "search")],
                    help="search the swept value too (x = search(choice([...]))), or sweep without search"))
            continue
        if node.params.get("distributed") is not None:
            ctx.diagnostics.append(Diagnostic(
                "FT0405", "a searched train block runs its trials in one process",
                [Label(node.attr_spans.get("distributed", node.span), "distributed")],
                help="remove `distributed { ... }` from the searched block (trials run one after another)"))
            continue
        if conf["pruner"] != "none" and node.params.get("eval_data") is None:
            ctx.diagnostics.append(Diagnostic(
                "FT0404", f"pruner = {conf['pruner']} needs validation losses",
                [Label(node.attr_spans.get(S.NAME, node.span), "pruner")],
                help="add eval_data = <dataset> and eval_steps = N to the train block, or pruner = none"))
            continue
        spec = replace(node.spec, run=S.TRIAL_RUN, summary=S.trial_summary)
        span = node.attr_spans.get(S.NAME, node.span)
        trial_ids: list[str] = []
        for k in range(int(conf["trials"])):
            tid = f"{nid}[trial={k}]"
            # Everything but `trials` enters trial k's key: more trials leave these as they are.
            setting = {key: v for key, v in conf.items() if key != "trials"}
            setting.update(trial=k, optuna=S.optuna_version(),
                           history=[RefValue(t, None, span, many=True) for t in trial_ids])
            out[tid] = Node(tid, node.kind, node.name, spec, {**node.params, S.NAME: setting}, node.span,
                            node.attr_spans, node.asserts, None, {"trial": str(k)})
            trial_ids.append(tid)
        wid = f"search.{node.name}"
        out[wid] = Node(wid, "search", node.name, S.SPEC,
                        {"trials": [RefValue(t, None, span, many=True) for t in trial_ids],
                         "mode": conf["mode"], "metric": conf["metric"]}, span, {"trials": span})
        redirect[nid] = wid
    if redirect:
        for n in out.values():
            if n.kind != "search":
                n.params = _redirect(n.params, redirect)
    return out


def _redirect(value: Any, redirect: dict[str, str]) -> Any:
    def fn(v: Any) -> Any:
        if isinstance(v, RefValue):
            return replace(v, node=redirect[v.node]) if v.node in redirect else v
        return DESCEND

    return transform(value, fn)


def has_search(nodes: dict[str, Node]) -> bool:
    return any(n.params.get(S.NAME) is not None or S.has_space(n.params) for n in nodes.values())
