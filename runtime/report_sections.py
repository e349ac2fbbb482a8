"""The run-level sections of `ft report`: a `Run` in, HTML strings out.

The header cards, the pipeline graph, the table of steps, the training curves and
sweep selections, and the data and curation statistics. The evaluation sections are
in report_eval.py; `section` and `badge` are the building blocks both use.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from ftlang.runtime.compare import short_name
from ftlang.runtime.report_charts import PALETTE, Series, bar_plot, histogram, line_plot
from ftlang.runtime.report_data import Run, row_counts, string_lengths
from ftlang.runtime.report_format import clip, esc, fmt_num, fmt_seconds
from ftlang.runtime.report_graph import graph_svg


def section(title: str, body: str, anchor: str, note: str = "") -> str:
    if not body:
        return ""
    sub = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{sub}{body}</section>'


def badge(status: str) -> str:
    return f'<span class="badge st-{esc(status.replace(" ", "-"))}">{esc(status)}</span>'


def _summary(node: str, meta: dict[str, Any]) -> str:
    """A step's result: the one-line summary its kind declares (StepSpec.summary, the text
    of `ft run`'s "done" line), or why it failed."""
    from ftlang.stdlib import registry

    spec = registry.SPECS.get(node.split(".", 1)[0])
    bits = [spec.summary(meta)] if spec is not None else []
    if meta.get("error"):
        bits.append(str(meta["error"]))
    return "; ".join(b for b in bits if b)


def header(run: Run, file: Path) -> str:
    info = run.info
    started, finished = info.get("started"), info.get("finished")
    took = (finished - started).total_seconds() if isinstance(started, datetime) and \
        isinstance(finished, datetime) else None
    counts = {s: sum(1 for n in run.nodes if n["status"] == s) for s in ("ran", "cached", "failed", "skipped")}
    cards = [("status", badge(str(info.get("status")))), ("started", esc(str(started)[:19])),
             ("duration", esc(fmt_seconds(took) or "—")),
             ("steps", " ".join(f'{badge(s)} {c}' for s, c in counts.items() if c) or "none")]
    cells = "".join(f'<div class="card"><div class="k">{k}</div><div class="v">{v}</div></div>' for k, v in cards)
    return (f'<header><h1>{esc(file.name)} <span class="rid">run {esc(run.id)}</span></h1>'
            f'<div class="cards">{cells}</div></header>')


def graph_section(run: Run) -> str:
    status = {n["node"]: n["status"] for n in run.nodes}
    detail = {n["node"]: fmt_seconds(n["seconds"]) for n in run.nodes if n["status"] in ("ran", "failed")}
    if run.program is not None:
        order = run.program.order()
        edges = [(u, v, d.get("port")) for u, v, d in run.program.graph.edges(data=True)]
        note = ""
    else:
        order = [n["node"] for n in run.nodes]
        edges = []
        note = f"the file does not compile now ({esc(run.compile_error)}): steps are drawn without edges"
    svg = graph_svg(order, edges, status, detail)
    return section("Pipeline", f'<div class="scroll">{svg}</div>', "graph", note)


def steps_section(run: Run) -> str:
    rows = []
    for n in run.nodes:
        meta = n["meta"] if isinstance(n["meta"], dict) else {}
        why = "; ".join(n["reasons"]) if n["status"] != "cached" else ""
        rows.append(f'<tr><td class="mono">{esc(n["node"])}</td><td>{badge(n["status"])}</td>'
                    f'<td class="num">{esc(fmt_seconds(n["seconds"]))}</td><td>{esc(_summary(n["node"], meta))}</td>'
                    f'<td class="why">{esc(clip(why, 160))}</td>'
                    f'<td class="mono dim">{esc((n["digest"] or "")[:12])}</td></tr>')
    body = ('<table class="steps"><thead><tr><th>step</th><th>status</th><th>time</th><th>result</th>'
            '<th>why it ran</th><th>artifact</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    return section("Steps", body, "steps")


def training_section(run: Run) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for n in run.nodes:
        meta = n["meta"] if isinstance(n["meta"], dict) else {}
        if n["kind"] == "train" and isinstance(meta.get("train_loss"), list) and meta["train_loss"]:
            groups.setdefault(n["node"].split("[", 1)[0], []).append(n)
    plots = []
    for block, members in groups.items():
        series = []
        for i, n in enumerate(members):
            meta = n["meta"]
            losses = meta["train_loss"]
            steps = meta.get("loss_steps") or list(range(1, len(losses) + 1))
            color = PALETTE[i % len(PALETTE)]
            label = short_name(n["node"]) if len(members) > 1 else "train loss"
            series.append(Series(label, list(steps), list(losses), color=color))
            ev = meta.get("eval_loss")
            if isinstance(ev, list) and ev:
                ev_steps = meta.get("eval_steps") or list(range(1, len(ev) + 1))
                series.append(Series(label + " (eval)" if len(members) > 1 else "eval loss", list(ev_steps),
                                     list(ev), dashed=True, color=color))
        plots.append(f'<figure>{line_plot(series, title=short_name(block), xlabel="step", ylabel="loss", width=530)}'
                     f'</figure>')
    for n in run.nodes:
        meta = n["meta"] if isinstance(n["meta"], dict) else {}
        if n["kind"] == "select" and isinstance(meta.get("scores"), dict) and meta["scores"]:
            points = list(meta["scores"])
            win = points.index(meta["selected"]) if meta.get("selected") in points else None
            title = f"{short_name(n['node'])}: {meta.get('mode', 'min')} {meta.get('metric', 'score')}"
            plots.append(f'<figure>{bar_plot([short_name(p) for p in points], list(meta["scores"].values()), title=title, highlight=win, width=530)}'
                         f'<figcaption>the sweep point kept is marked ✓</figcaption></figure>')
    return section("Training", f'<div class="grid">{"".join(plots)}</div>' if plots else "", "training",
                    "loss logged during training (dashed: held-out loss); sweep selections")


# Steps whose output is a dataset: their rows in and out, and why rows went (the funnel).
DATA_KINDS = ("dataset", "curate", "clean", "mix", "generate", "judge_pairs", "critique")


def funnel(meta: dict[str, Any]) -> str:
    """Why rows went or came: clean's stages, mix's realised counts, generate's unparsable,
    judge_pairs' ties, critique's unchanged revisions."""
    bits = []
    if isinstance(meta.get("funnel"), list):
        bits.append(" → ".join(f"{stage} {n:,}" for stage, n in meta["funnel"]))
    if isinstance(meta.get("removed"), dict) and meta["removed"]:
        bits.append("removed: " + ", ".join(f"{why} {n:,}" for why, n in meta["removed"].items()))
    if isinstance(meta.get("pii"), dict) and any(meta["pii"].values()):
        bits.append("pii: " + ", ".join(f"{k} {v:,}" for k, v in meta["pii"].items() if v))
    if isinstance(meta.get("mix"), dict):
        bits.append("mix: " + ", ".join(f"{k} {v:,}" for k, v in meta["mix"].items()))
    if isinstance(meta.get("unparsable"), int):
        bits.append(f"unparsable dropped: {meta['unparsable']:,}")
    if isinstance(meta.get("ties"), int):  # judge_pairs: pairs the judge could not separate
        bits.append(f"ties dropped: {meta['ties']:,}")
    if isinstance(meta.get("unchanged"), int):  # critique: revisions equal to the original
        bits.append(f"revision unchanged: {meta['unchanged']:,}")
    return "; ".join(bits)


def data_section(run: Run) -> str:
    nodes = [n for n in run.nodes if n["kind"] in DATA_KINDS and isinstance(n["meta"], dict)
             and n["status"] in ("ran", "cached")]
    if not nodes:
        return ""
    rows = []
    peak = max([1] + [v for n in nodes for v in row_counts(n["meta"]) if isinstance(v, int)])
    for n in nodes:
        meta = n["meta"]
        rin, rout = row_counts(meta)
        kept = f"{rout / rin * 100:.1f}%" if isinstance(rin, int) and isinstance(rout, int) and rin else ""
        parts = ", ".join(f"{k} {v:,}" for k, v in meta["parts"].items()) if isinstance(meta.get("parts"), dict) else ""
        parts = "; ".join(p for p in (parts, funnel(meta)) if p)
        bar = ""
        if isinstance(rout, int):
            w_in = (rin if isinstance(rin, int) else rout) / peak * 100
            bar = (f'<div class="bar"><div class="in" style="width:{w_in:.1f}%"></div>'
                   f'<div class="out" style="width:{rout / peak * 100:.1f}%"></div></div>')
        rows.append(f'<tr><td class="mono">{esc(n["node"])}</td><td class="num">{fmt_num(rin)}</td>'
                    f'<td class="num">{fmt_num(rout)}</td><td class="num">{kept}</td><td>{esc(parts)}</td>'
                    f'<td class="barcell">{bar}</td></tr>')
    table = ('<table class="data"><thead><tr><th>step</th><th class="num">rows in</th><th class="num">rows out</th>'
             '<th class="num">kept</th><th>parts, funnel</th><th>rows (light: in, dark: out)</th></tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>')
    hists = []
    for n in nodes:
        folder = run.object(n["digest"])
        if folder is None:
            continue
        for column, groups in string_lengths(folder).items():
            values = [v for vs in groups.values() for v in vs]
            if not values:
                continue
            values.sort()
            stats = (f"{len(values):,} rows · mean {sum(values) / len(values):.1f} · median "
                     f"{values[len(values) // 2]} · max {values[-1]}")
            title = f"{short_name(n['node'])} · {column}"
            hists.append(f'<figure>{histogram(groups, title=title)}<figcaption>{esc(stats)}</figcaption></figure>')
    body = table + (f'<h3>Length histograms</h3><div class="grid small">{"".join(hists)}</div>' if hists else "")
    return section("Data and curation", body, "data")
