"""`ft report FILE [RUN]`: one self-contained HTML page about a run.

No network is needed to read it: CSS is inline, every picture is inline SVG drawn
here (the pipeline graph is laid out without Graphviz), and there is no script.
It shows the pipeline graph with each node's status and duration, a table of
steps, training loss curves, sweep selections, metric tables of every eval (each
model against the first one), assertion results, metric history across runs,
sample generations side by side, and curation statistics with length histograms.

Everything is read from the ledger (`.ft/ledger.duckdb`) and the committed
artifacts (`.ft/objects/<digest>/`); the file is compiled for the graph and the
assertions only. torch is never imported.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ftlang.runtime import asserts, ledger
from ftlang.runtime.compare import metric_columns, metric_rows, runs_of_file, short_name

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563",
           "#65a30d", "#9333ea")
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
STATUS_STYLE = {  # fill, stroke, text
    "ran": ("#e7f6ec", "#16a34a", "#14532d"),
    "cached": ("#e8effd", "#3b82f6", "#1e3a8a"),
    "failed": ("#fde8e8", "#dc2626", "#7f1d1d"),
    "skipped": ("#f1f2f4", "#9ca3af", "#374151"),
    "not run": ("#ffffff", "#cbd5e1", "#64748b"),
}
MAX_CELL = 400  # characters of a sample shown in a table cell
BINS = 20


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt_num(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.3e}"
    return f"{v:.4g}"


def fmt_seconds(s: Any) -> str:
    if not isinstance(s, (int, float)) or s <= 0:
        return ""
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


# ---- plots -------------------------------------------------------------------------------

def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{v:.6g}"


@dataclass
class Series:
    label: str
    xs: list[float]
    ys: list[float]
    dashed: bool = False
    color: str | None = None


def line_plot(series: Sequence[Series], *, title: str = "", xlabel: str = "", ylabel: str = "",
              width: int = 560, height: int = 280, markers: bool | None = None, integer_x: bool = False) -> str:
    """An SVG line plot with axes, grid, ticks and a legend (`integer_x`: whole-number x ticks)."""
    pts = [(x, y) for s in series for x, y in zip(s.xs, s.ys) if _finite(x) and _finite(y)]
    if not pts:
        return ""
    left, right, top, bottom = 58, 16, 30 if title else 12, 44
    legend_rows = math.ceil(len(series) / 3) if len(series) > 1 else 0
    height += legend_rows * 18
    pw, ph = width - left - right, height - top - bottom - legend_rows * 18
    xt = nice_ticks(min(p[0] for p in pts), max(p[0] for p in pts))
    if integer_x:
        xt = list(range(math.floor(min(p[0] for p in pts)), math.ceil(max(p[0] for p in pts)) + 1))
        xt = xt[:: max(1, math.ceil(len(xt) / 10))]
    yt = nice_ticks(min(p[1] for p in pts), max(p[1] for p in pts))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    if integer_x:  # thinned ticks may stop short of the last point
        x1 = max(x1, max(p[0] for p in pts))

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / ((y1 - y0) or 1) * ph

    out = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(title or ylabel)}">']
    if title:
        out.append(f'<text x="{left}" y="18" class="ptitle">{esc(title)}</text>')
    for t in yt:
        y = sy(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_tick_label(t)}</text>')
    for t in xt:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 4}" class="axis"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 17}" class="tick" text-anchor="middle">{_tick_label(t)}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" class="axis"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" class="axis"/>')
    if xlabel:
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 34}" class="alabel" '
                   f'text-anchor="middle">{esc(xlabel)}</text>')
    if ylabel:
        out.append(f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" class="alabel" '
                   f'text-anchor="middle">{esc(ylabel)}</text>')
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        xy = [(sx(x), sy(y)) for x, y in zip(s.xs, s.ys) if _finite(x) and _finite(y)]
        if not xy:
            continue
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash} '
                   f'stroke-linejoin="round" class="series"><title>{esc(s.label)}</title></polyline>')
        if markers or (markers is None and len(xy) <= 12):
            out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in xy]
    if legend_rows:
        col_w = pw / 3
        for i, s in enumerate(series):
            color = s.color or PALETTE[i % len(PALETTE)]
            lx = left + (i % 3) * col_w
            ly = height - legend_rows * 18 + (i // 3) * 18 + 2
            dash = ' stroke-dasharray="6 4"' if s.dashed else ""
            out.append(f'<line x1="{lx:.1f}" y1="{ly:.1f}" x2="{lx + 18:.1f}" y2="{ly:.1f}" stroke="{color}" '
                       f'stroke-width="2.5"{dash}/>')
            out.append(f'<text x="{lx + 24:.1f}" y="{ly + 4:.1f}" class="legend">{esc(_clip(s.label, 34))}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_plot(labels: Sequence[str], values: Sequence[float], *, title: str = "", highlight: int | None = None,
             width: int = 560, unit: str = "") -> str:
    """Horizontal bars, one per label; `highlight` marks one bar (a sweep's winner)."""
    rows = [(lab, v) for lab, v in zip(labels, values) if _finite(v)]
    if not rows:
        return ""
    label_w = min(220, max(60, 7 * max(len(lab) for lab, _ in rows) + 12))
    top = 28 if title else 8
    bar_h, gap = 20, 8
    height = top + len(rows) * (bar_h + gap) + 8
    hi = max(max(v for _, v in rows), 0.0)
    lo = min(min(v for _, v in rows), 0.0)
    span = (hi - lo) or 1.0
    pw = width - label_w - 80
    zero = label_w + (0 - lo) / span * pw
    out = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(title)}">']
    if title:
        out.append(f'<text x="8" y="18" class="ptitle">{esc(title)}</text>')
    for i, (lab, v) in enumerate(rows):
        y = top + i * (bar_h + gap)
        x_end = label_w + (v - lo) / span * pw
        x, w = min(zero, x_end), abs(x_end - zero)
        color = PALETTE[2] if highlight == i else PALETTE[0]
        out.append(f'<text x="{label_w - 8}" y="{y + 14}" class="tick" text-anchor="end">{esc(_clip(lab, 30))}</text>')
        out.append(f'<rect x="{x:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" rx="3" fill="{color}" '
                   f'opacity="{0.95 if highlight in (None, i) else 0.55}"><title>{esc(lab)}: {fmt_num(v)}</title></rect>')
        out.append(f'<text x="{max(x_end, zero) + 6:.1f}" y="{y + 14}" class="tick">{fmt_num(v)}{esc(unit)}'
                   f'{" ✓" if highlight == i else ""}</text>')
    out.append("</svg>")
    return "".join(out)


def histogram(groups: dict[str, list[int]], *, title: str = "", width: int = 355, height: int = 200,
              bins: int = BINS) -> str:
    """A stacked histogram of integer values (one color per group, e.g. per split part)."""
    values = [v for vs in groups.values() for v in vs]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    bw = max(1, math.ceil((hi - lo + 1) / bins))
    nb = max(1, math.ceil((hi - lo + 1) / bw))
    counts = {g: [0] * nb for g in groups}
    for g, vs in groups.items():
        for v in vs:
            counts[g][min((v - lo) // bw, nb - 1)] += 1
    totals = [sum(counts[g][b] for g in groups) for b in range(nb)]
    left, right, top, bottom = 44, 10, 26 if title else 8, 36
    legend = len(groups) > 1
    if legend:
        bottom += 16
    pw, ph = width - left - right, height - top - bottom
    yt = nice_ticks(0, max(totals), 4)
    ymax = yt[-1] or 1
    out = [f'<svg class="plot hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(title)}">']
    if title:
        out.append(f'<text x="{left}" y="17" class="ptitle">{esc(title)}</text>')
    for t in yt:
        y = top + ph - t / ymax * ph
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 5}" y="{y + 4:.1f}" class="tick" text-anchor="end">{int(t)}</text>')
    slot = pw / nb
    for b in range(nb):
        base = top + ph
        for gi, g in enumerate(groups):
            c = counts[g][b]
            if not c:
                continue
            h = c / ymax * ph
            base -= h
            out.append(f'<rect x="{left + b * slot + 1:.1f}" y="{base:.1f}" width="{max(slot - 2, 1):.1f}" '
                       f'height="{h:.1f}" fill="{PALETTE[gi % len(PALETTE)]}" opacity="0.85">'
                       f'<title>{esc(g)}: {c} rows of length {lo + b * bw}-{lo + (b + 1) * bw - 1}</title></rect>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" class="axis"/>')
    for b in range(0, nb + 1, max(1, nb // 5)):
        x = left + b * slot
        out.append(f'<text x="{x:.1f}" y="{top + ph + 15}" class="tick" text-anchor="middle">{lo + b * bw}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 30}" class="alabel" text-anchor="middle">'
               f'length (characters)</text>')
    if legend:
        x = left
        for gi, g in enumerate(groups):
            out.append(f'<rect x="{x}" y="{height - 12}" width="10" height="10" fill="{PALETTE[gi % len(PALETTE)]}"/>')
            out.append(f'<text x="{x + 14}" y="{height - 3}" class="legend">{esc(g)}</text>')
            x += 24 + 7 * len(g)
    out.append("</svg>")
    return "".join(out)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ---- the pipeline graph ------------------------------------------------------------------------

def layout(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """(layer, row) per node: layer = longest path from a source; rows ordered by the
    barycenter of their neighbours (a few sweeps down and up) to reduce crossings."""
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    succs: dict[str, list[str]] = {n: [] for n in nodes}
    for u, v in edges:
        if u in preds and v in preds:
            preds[v].append(u)
            succs[u].append(v)
    layer: dict[str, int] = {}
    for n in nodes:  # `nodes` is in topological order
        layer[n] = max((layer[p] + 1 for p in preds[n] if p in layer), default=0)
    layers: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for n in nodes:
        layers[layer[n]].append(n)
    pos = {n: i for col in layers for i, n in enumerate(col)}
    for _ in range(4):
        for direction in (preds, succs):
            seq = layers[1:] if direction is preds else list(reversed(layers[:-1]))
            for col in seq:
                def bary(n: str, d: dict[str, list[str]] = direction) -> float:
                    near = d[n]
                    return sum(pos[m] for m in near) / len(near) if near else pos[n]
                col.sort(key=lambda n: (bary(n), pos[n]))
                for i, n in enumerate(col):
                    pos[n] = i
    return {n: (layer[n], pos[n]) for n in nodes}


def graph_svg(nodes: Sequence[str], edges: Sequence[tuple[str, str, str | None]], status: dict[str, str],
              detail: dict[str, str]) -> str:
    """The pipeline as boxes (colored by status) and curved arrows, left to right."""
    if not nodes:
        return ""
    places = layout(nodes, [(u, v) for u, v, _ in edges])
    node_w = min(250, max(130, 7 * max(len(n) for n in nodes) + 28))
    node_h, hgap, vgap, margin = 48, 70, 18, 14
    n_layers = max(p[0] for p in places.values()) + 1
    per_layer = [sum(1 for p in places.values() if p[0] == i) for i in range(n_layers)]
    tallest = max(per_layer)
    width = margin * 2 + n_layers * node_w + (n_layers - 1) * hgap
    height = margin * 2 + tallest * node_h + (tallest - 1) * vgap + 22
    xy: dict[str, tuple[float, float]] = {}
    for n, (lay, row) in places.items():
        offset = (tallest - per_layer[lay]) * (node_h + vgap) / 2
        xy[n] = (margin + lay * (node_w + hgap), margin + offset + row * (node_h + vgap))
    out = [f'<svg class="graph" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="pipeline graph">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#94a3b8"/></marker></defs>']
    ports: list[str] = []  # drawn after every edge, so no edge crosses a label
    for u, v, port in edges:
        if u not in xy or v not in xy:
            continue
        x1, y1 = xy[u][0] + node_w, xy[u][1] + node_h / 2
        x2, y2 = xy[v][0] - 2, xy[v][1] + node_h / 2
        dx = max(30.0, (x2 - x1) / 2)
        out.append(f'<path d="M {x1:.1f} {y1:.1f} C {x1 + dx:.1f} {y1:.1f}, {x2 - dx:.1f} {y2:.1f}, '
                   f'{x2:.1f} {y2:.1f}" class="edge" marker-end="url(#arrow)"/>')
        if port:
            ports.append(f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 + 4:.1f}" class="port" '
                         f'text-anchor="middle">{esc(port)}</text>')
    out += ports
    for n in nodes:
        x, y = xy[n]
        st = status.get(n, "not run")
        fill, stroke, ink = STATUS_STYLE.get(st, STATUS_STYLE["not run"])
        dash = ' stroke-dasharray="5 4"' if st == "not run" else ""
        out.append(f'<g class="node status-{esc(st.replace(" ", "-"))}"><title>{esc(n)}: {esc(st)} '
                   f'{esc(detail.get(n, ""))}</title>')
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{node_w}" height="{node_h}" rx="9" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="1.6"{dash}/>')
        label = _clip(n, (node_w - 20) // 7)
        out.append(f'<text x="{x + 12:.1f}" y="{y + 20:.1f}" class="nlabel" fill="{ink}">{esc(label)}</text>')
        sub = st + (f" · {detail[n]}" if detail.get(n) else "")
        out.append(f'<text x="{x + 12:.1f}" y="{y + 37:.1f}" class="nsub" fill="{ink}">{esc(_clip(sub, 34))}</text>')
        out.append("</g>")
    lx = margin
    for st in ("ran", "cached", "failed", "skipped", "not run"):
        fill, stroke, _ = STATUS_STYLE[st]
        out.append(f'<rect x="{lx}" y="{height - 16}" width="12" height="12" rx="3" fill="{fill}" stroke="{stroke}"/>')
        out.append(f'<text x="{lx + 17}" y="{height - 6}" class="legend">{st}</text>')
        lx += 30 + 7 * len(st)
    out.append("</svg>")
    return "".join(out)


# ---- gathering ------------------------------------------------------------------------------------

@dataclass
class Run:
    info: dict[str, Any]
    nodes: list[dict[str, Any]]
    root: Path
    program: Any = None  # the compiled file, when it compiles
    compile_error: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)  # compare rows of recent runs
    latest: bool = True  # the last run of this file

    @property
    def id(self) -> str:
        return str(self.info["run_id"])

    def object(self, digest: str | None) -> Path | None:
        if not digest:
            return None
        p = self.root / "objects" / digest
        return p if p.is_dir() else None


def _resolve(root: Path, file: str, ref: str) -> str | None:
    """`last`/`last~N` count the runs of this file; anything else is a run id prefix."""
    if ref == "last" or ref.startswith("last~"):
        try:
            back = int(ref[5:] or 0) if ref.startswith("last~") else 0
        except ValueError:
            return None
        runs = runs_of_file(root, file, back + 1)
        return runs[back]["run_id"] if len(runs) > back else None
    return ledger.resolve_run(root, ref)


def _compile(file: Path) -> tuple[Any, str]:
    try:
        from ftlang.compiler import compile_file

        return compile_file(file), ""
    except Exception as exc:  # a file that no longer compiles still has a ledger
        diags = getattr(exc, "diagnostics", None)
        msg = diags[0].message if diags else f"{type(exc).__name__}: {exc}"
        return None, msg


def gather(file: Path, ref: str) -> Run | None:
    root = file.resolve().parent / ".ft"
    rid = _resolve(root, str(file), ref)
    if rid is None:
        return None
    info = ledger.run_info(root, rid)
    if info is None:
        return None
    run = Run(info, ledger.run_nodes(root, rid), root)
    run.program, run.compile_error = _compile(file)
    recent = [r["run_id"] for r in runs_of_file(root, str(file), 10_000)]
    run.latest = bool(recent) and recent[0] == rid
    if rid in recent:  # this run and the ones before it, oldest first
        window = recent[recent.index(rid):][:10]
        run.history = list(reversed(metric_rows(root, window, fold=False)))
    return run


# ---- sections -----------------------------------------------------------------------------------

def _section(title: str, body: str, anchor: str, note: str = "") -> str:
    if not body:
        return ""
    sub = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{sub}{body}</section>'


def _badge(status: str) -> str:
    return f'<span class="badge st-{esc(status.replace(" ", "-"))}">{esc(status)}</span>'


def _summary(meta: dict[str, Any]) -> str:
    bits = []
    if isinstance(meta.get("rows_in"), dict):
        bits.append(f"{sum(v for v in meta['rows_in'].values() if isinstance(v, int)):,} rows in")
    if isinstance(meta.get("rows_out"), int):
        bits.append(f"{meta['rows_out']:,} rows out")
    elif isinstance(meta.get("rows"), int):
        bits.append(f"{meta['rows']:,} rows")
    if isinstance(meta.get("parts"), dict):
        bits.append(", ".join(f"{k} {v:,}" for k, v in meta["parts"].items()))
    if isinstance(meta.get("steps"), int):
        bits.append(f"{meta['steps']} steps")
    if _finite(meta.get("final_loss")):
        bits.append(f"final loss {meta['final_loss']:.4f}")
    if isinstance(meta.get("params"), int):
        bits.append(f"{meta['params']:,} parameters")
    if isinstance(meta.get("selected"), str):
        bits.append(f"kept {short_name(meta['selected'])}")
    if meta.get("error"):
        bits.append(str(meta["error"]))
    return "; ".join(bits)


def header(run: Run, file: Path) -> str:
    info = run.info
    started, finished = info.get("started"), info.get("finished")
    took = (finished - started).total_seconds() if isinstance(started, datetime) and \
        isinstance(finished, datetime) else None
    counts = {s: sum(1 for n in run.nodes if n["status"] == s) for s in ("ran", "cached", "failed", "skipped")}
    cards = [("status", _badge(str(info.get("status")))), ("started", esc(str(started)[:19])),
             ("duration", esc(fmt_seconds(took) or "—")),
             ("steps", " ".join(f'{_badge(s)} {c}' for s, c in counts.items() if c) or "none")]
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
    return _section("Pipeline", f'<div class="scroll">{svg}</div>', "graph", note)


def steps_section(run: Run) -> str:
    rows = []
    for n in run.nodes:
        meta = n["meta"] if isinstance(n["meta"], dict) else {}
        why = "; ".join(n["reasons"]) if n["status"] != "cached" else ""
        rows.append(f'<tr><td class="mono">{esc(n["node"])}</td><td>{_badge(n["status"])}</td>'
                    f'<td class="num">{esc(fmt_seconds(n["seconds"]))}</td><td>{esc(_summary(meta))}</td>'
                    f'<td class="why">{esc(_clip(why, 160))}</td>'
                    f'<td class="mono dim">{esc((n["digest"] or "")[:12])}</td></tr>')
    body = ('<table class="steps"><thead><tr><th>step</th><th>status</th><th>time</th><th>result</th>'
            '<th>why it ran</th><th>artifact</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    return _section("Steps", body, "steps")


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
    return _section("Training", f'<div class="grid">{"".join(plots)}</div>' if plots else "", "training",
                    "loss logged during training (dashed: held-out loss); sweep selections")


def _eval_nodes(run: Run) -> list[dict[str, Any]]:
    return [n for n in run.nodes if n["kind"] == "eval" and n["status"] in ("ran", "cached")
            and isinstance(n["meta"], dict)]


def _per_dataset(n: dict[str, Any], run: Run) -> dict[str, dict[str, Any]]:
    meta = n["meta"]
    per = meta.get("datasets")
    if isinstance(per, dict) and per:
        return per
    label = ""
    if run.program is not None and n["node"] in run.program.nodes:
        ref = run.program.nodes[n["node"]].params.get("data")
        label = getattr(ref, "label", "") or ""
    return {label or "data": {"models": meta.get("models") or {}, "rows": meta.get("rows")}}


def _delta(metric: str, value: Any, base: Any) -> str:
    if not (_finite(value) and _finite(base)) or value == base:
        return ""
    d = value - base
    better = (d < 0) if metric in LOWER_IS_BETTER else (d > 0)
    known = metric in LOWER_IS_BETTER or _is_builtin(metric)
    cls = ("good" if better else "bad") if known else "neutral"
    rel = f" ({d / abs(base) * 100:+.0f}%)" if base and abs(base) > 1e-9 else ""
    return f'<span class="delta {cls}">{"+" if d > 0 else "−"}{fmt_num(abs(d))}{rel}</span>'


def _is_builtin(metric: str) -> bool:
    from ftlang.stdlib.evaluate_spec import METRICS

    return metric in METRICS


def metrics_table(models: dict[str, dict[str, Any]], rows: Any) -> str:
    columns = metric_columns([{"metrics": v} for v in models.values() if isinstance(v, dict)])
    if not columns:
        return ""
    names = list(models)
    base = models[names[0]] if names else {}
    head = "".join(f'<th class="num">{esc(c)}{" ↓" if c in LOWER_IS_BETTER else ""}</th>' for c in columns)
    body = []
    for i, name in enumerate(names):
        vals = models[name] if isinstance(models[name], dict) else {}
        cells = []
        for c in columns:
            v = vals.get(c)
            delta = _delta(c, v, base.get(c)) if i else ""
            cells.append(f'<td class="num">{esc(fmt_num(v))}{delta}</td>')
        tag = ' <span class="dim">(baseline)</span>' if i == 0 and len(names) > 1 else ""
        body.append(f'<tr><td class="mono">{esc(name)}{tag}</td>{"".join(cells)}</tr>')
    caption = f"<caption>{rows:,} rows</caption>" if isinstance(rows, int) else ""
    return (f'<table class="metrics">{caption}<thead><tr><th>model</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _assertions(run: Run, node: str, models: dict[str, dict[str, Any]]) -> str:
    if run.program is None or node not in run.program.nodes:
        return ""
    items = []
    for a in run.program.nodes[node].asserts:
        try:
            ok, detail = asserts.evaluate(a.expr, models)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            ok, detail = None, f"cannot be evaluated: {exc}"
        cls, word = {True: ("pass", "pass"), False: ("fail", "fail"), None: ("neutral", "?")}[ok]
        items.append(f'<li><span class="badge st-{cls}">{word}</span> <code>assert {esc(a.text)}</code> '
                     f'<span class="dim">{esc(detail)}</span></li>')
    return f'<ul class="asserts">{"".join(items)}</ul>' if items else ""


def history_plots(run: Run, node: str, dataset: str, order: Sequence[str] = ()) -> str:
    """One small plot per metric that changed over the recent runs of this file."""
    rows = [r for r in run.history if r["node"] == node and r["dataset"] == dataset]
    runs = list(dict.fromkeys(r["run"] for r in rows))
    if len(runs) < 2:
        return ""
    index = {rid: i + 1 for i, rid in enumerate(runs)}
    models = list(dict.fromkeys([*(m for m in order), *(r["model"] for r in rows)]))
    plots, flat = [], []
    for metric in metric_columns(rows):
        series = []
        for model in models:
            pts = [(index[r["run"]], r["metrics"].get(metric)) for r in rows if r["model"] == model]
            pts = [(x, y) for x, y in pts if _finite(y)]
            if pts:
                series.append(Series(model, [x for x, _ in pts], [y for _, y in pts]))
        if not series:
            continue
        if all(len(set(s.ys)) <= 1 for s in series):
            flat.append(metric)
            continue
        plots.append(f"<figure>{line_plot(series, title=metric, xlabel='run (oldest first)', width=340, height=210, markers=True, integer_x=True)}</figure>")
    note = (f"the last {len(runs)} runs of this file that measured it, oldest first: this run is the last point"
            + (f"; unchanged: {', '.join(flat)}" if flat else ""))
    grid = f'<div class="grid small">{"".join(plots)}</div>' if plots else ""
    return f'<h4>History across runs</h4><p class="note">{esc(note)}</p>{grid}'


def eval_section(run: Run) -> str:
    parts = []
    for n in _eval_nodes(run):
        per = _per_dataset(n, run)
        meta = n["meta"]
        gen = meta.get("generation")
        how = ""
        if isinstance(gen, dict):
            how = ", ".join(f"{k} {v}" for k, v in gen.items())
        parts.append(f'<h3 class="mono">{esc(n["node"])}</h3>' + (f'<p class="note">generation: {esc(how)}</p>' if how else ""))
        models = meta.get("models") if isinstance(meta.get("models"), dict) else {}
        asserts = _assertions(run, n["node"], models)
        if asserts:
            where = "the assert lines of the file as it is now, checked against this run's values"
            if not run.latest:
                where += " (this is an older run: the file may have changed since)"
            parts.append(f'<h4>Assertions</h4><p class="note">{esc(where)}</p>{asserts}')
        for data, block in per.items():
            parts.append(f'<h4>on <span class="mono">{esc(data)}</span></h4>')
            parts.append(metrics_table(block.get("models") or {}, block.get("rows")))
            parts.append(history_plots(run, n["node"], data, list(block.get("models") or {})))
    return _section("Evaluation", "".join(parts), "eval",
                    "each model against the first one (the baseline); ↓ marks metrics where lower is better")


def _samples(path: Path) -> list[dict[str, Any]]:
    out = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
    except (OSError, ValueError):
        return []
    return out


def _same(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _shown(text: str) -> str:
    """A generation as HTML: special cases named, runs of blank lines collapsed, clipped."""
    if not text:
        return '<i class="dim">(empty)</i>'
    if not text.strip():
        return f'<i class="dim">(whitespace only: {len(text)} characters)</i>'
    import re

    return esc(_clip(re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text.strip("\n")), MAX_CELL))


def _sample_rows(items: list[dict[str, Any]], models: list[str], first: int) -> str:
    body = []
    for i, r in enumerate(items, first):
        ref = str(r.get("reference", ""))
        cells = []
        for m in models:
            g = str((r.get("generations") or {}).get(m, ""))
            score = (r.get("scores") or {}).get(m)
            s = f'<div class="score">reward {fmt_num(score)}</div>' if _finite(score) else ""
            hit = " hit" if _same(g, ref) else ""
            cells.append(f'<td class="gen{hit}"><pre>{_shown(g)}</pre>{s}</td>')
        body.append(f'<tr><td class="num dim idx">{i}</td><td class="prompt"><pre>{_shown(str(r.get("prompt", "")))}</pre></td>'
                    f'<td class="ref"><pre>{_shown(ref)}</pre></td>{"".join(cells)}</tr>')
    return "".join(body)


SHOWN_SAMPLES = 8  # rows per dataset shown open; the rest behind a <details>


def samples_section(run: Run) -> str:
    parts = []
    for n in _eval_nodes(run):
        folder = run.object(n["digest"])
        rows = _samples(folder / "samples.jsonl") if folder else []
        if not rows:
            continue
        by_data: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_data.setdefault(str(r.get("dataset") or ""), []).append(r)
        for data, items in by_data.items():
            models = list(dict.fromkeys(m for r in items for m in (r.get("generations") or {})))
            head = (f'<thead><tr><th class="idx">#</th><th>prompt</th><th>reference</th>'
                    f'{"".join(f"<th>{esc(m)}</th>" for m in models)}</tr></thead>')
            title = f'{esc(n["node"])}' + (f' on {esc(data)}' if data else "")
            hits = {m: sum(_same(str((r.get("generations") or {}).get(m, "")), str(r.get("reference", "")))
                           for r in items) for m in models}
            tally = " · ".join(f"{esc(m)} {hits[m]}/{len(items)} equal to the reference" for m in models)
            parts.append(f'<h3 class="mono">{title}</h3><p class="note">{tally}</p>'
                         f'<div class="scroll"><table class="samples">{head}<tbody>'
                         f'{_sample_rows(items[:SHOWN_SAMPLES], models, 1)}</tbody></table></div>')
            rest = items[SHOWN_SAMPLES:]
            if rest:
                parts.append(f'<details><summary>{len(rest)} more rows</summary><div class="scroll">'
                             f'<table class="samples">{head}<tbody>'
                             f'{_sample_rows(rest, models, SHOWN_SAMPLES + 1)}</tbody></table></div></details>')
    return _section("Sample generations", "".join(parts), "samples",
                    "green: the generation equals the reference (ignoring case and surrounding space)")


def _lengths(folder: Path) -> dict[str, dict[str, list[int]]]:
    """column -> part -> character lengths of every string value, from the artifact's Parquet files."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out: dict[str, dict[str, list[int]]] = {}
    for f in sorted(folder.glob("*.parquet")):
        try:
            schema = pq.read_schema(f)
            cols = [x.name for x in schema if pa.types.is_string(x.type) or pa.types.is_large_string(x.type)]
            if not cols:
                continue
            table = pq.read_table(f, columns=cols)
        except (OSError, pa.ArrowException):
            continue
        part = f.stem
        for c in cols:
            lengths = pc.utf8_length(table.column(c)).to_pylist()
            out.setdefault(c, {})[part] = [v for v in lengths if v is not None]
    return out


def data_section(run: Run) -> str:
    nodes = [n for n in run.nodes if n["kind"] in ("dataset", "curate") and isinstance(n["meta"], dict)
             and n["status"] in ("ran", "cached")]
    if not nodes:
        return ""
    rows = []
    peak = max([1] + [v for n in nodes for v in _row_counts(n["meta"]) if isinstance(v, int)])
    for n in nodes:
        meta = n["meta"]
        rin, rout = _row_counts(meta)
        kept = f"{rout / rin * 100:.1f}%" if isinstance(rin, int) and isinstance(rout, int) and rin else ""
        parts = ", ".join(f"{k} {v:,}" for k, v in meta["parts"].items()) if isinstance(meta.get("parts"), dict) else ""
        bar = ""
        if isinstance(rout, int):
            w_in = (rin if isinstance(rin, int) else rout) / peak * 100
            bar = (f'<div class="bar"><div class="in" style="width:{w_in:.1f}%"></div>'
                   f'<div class="out" style="width:{rout / peak * 100:.1f}%"></div></div>')
        rows.append(f'<tr><td class="mono">{esc(n["node"])}</td><td class="num">{fmt_num(rin)}</td>'
                    f'<td class="num">{fmt_num(rout)}</td><td class="num">{kept}</td><td>{esc(parts)}</td>'
                    f'<td class="barcell">{bar}</td></tr>')
    table = ('<table class="data"><thead><tr><th>step</th><th class="num">rows in</th><th class="num">rows out</th>'
             '<th class="num">kept</th><th>parts</th><th>rows (light: in, dark: out)</th></tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>')
    hists = []
    for n in nodes:
        folder = run.object(n["digest"])
        if folder is None:
            continue
        for column, groups in _lengths(folder).items():
            values = [v for vs in groups.values() for v in vs]
            if not values:
                continue
            values.sort()
            stats = (f"{len(values):,} rows · mean {sum(values) / len(values):.1f} · median "
                     f"{values[len(values) // 2]} · max {values[-1]}")
            title = f"{short_name(n['node'])} · {column}"
            hists.append(f'<figure>{histogram(groups, title=title)}<figcaption>{esc(stats)}</figcaption></figure>')
    body = table + (f'<h3>Length histograms</h3><div class="grid small">{"".join(hists)}</div>' if hists else "")
    return _section("Data and curation", body, "data")


def _row_counts(meta: dict[str, Any]) -> tuple[int | None, int | None]:
    """(rows in, rows out) of a dataset or curate step."""
    if isinstance(meta.get("rows_in"), dict):
        rin = sum(v for v in meta["rows_in"].values() if isinstance(v, int))
        return rin, meta.get("rows_out") if isinstance(meta.get("rows_out"), int) else None
    rows = meta.get("rows") if isinstance(meta.get("rows"), int) else None
    return rows, rows


CSS = """
:root{--ink:#0f172a;--dim:#64748b;--line:#e2e8f0;--bg:#f8fafc;--card:#fff;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 28px 60px}
header h1{font-size:24px;margin:0 0 12px;font-weight:650}
.rid{font:500 14px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:var(--dim);margin-left:8px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 16px;min-width:150px}
.card .k{color:var(--dim);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:16px;font-weight:600;margin-top:2px}
nav{margin:18px 0 4px;display:flex;gap:14px;flex-wrap:wrap}
nav a{color:var(--accent);text-decoration:none;font-weight:500}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:18px 22px;margin-top:18px}
h2{font-size:18px;margin:0 0 10px}
h3{font-size:15px;margin:18px 0 6px}
h4{font-size:13px;margin:14px 0 6px;color:#334155}
.note{color:var(--dim);margin:-4px 0 10px;font-size:13px}
table{border-collapse:collapse;width:100%;margin:6px 0 10px}
th,td{border-bottom:1px solid var(--line);padding:6px 10px;text-align:left;vertical-align:top}
th{font-size:12px;color:var(--dim);font-weight:600;text-transform:uppercase;letter-spacing:.03em;background:#f8fafc}
tbody tr:nth-child(even) td{background:#fbfdff}
caption{caption-side:bottom;text-align:left;color:var(--dim);font-size:12px;padding-top:4px}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.mono,code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.dim{color:var(--dim)}
.why{color:var(--dim);font-size:12.5px;max-width:360px}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;font-weight:600;border:1px solid}
.st-ran,.st-ok,.st-pass{background:#e7f6ec;color:#166534;border-color:#86efac}
.st-cached{background:#e8effd;color:#1e40af;border-color:#93c5fd}
.st-failed,.st-fail,.st-interrupted{background:#fde8e8;color:#991b1b;border-color:#fca5a5}
.st-skipped,.st-neutral,.st-not-run{background:#f1f5f9;color:#475569;border-color:#cbd5e1}
.delta{display:block;font-size:11.5px}
.delta.good{color:#15803d}.delta.bad{color:#b91c1c}.delta.neutral{color:var(--dim)}
.scroll{overflow-x:auto}
svg{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
svg.graph{max-width:100%;height:auto}
svg .edge{fill:none;stroke:#94a3b8;stroke-width:1.6}
svg .port{font-size:11px;fill:#475569;paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round}
svg .nlabel{font:600 12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
svg .nsub{font-size:11.5px;opacity:.85}
svg .grid{stroke:#eef2f7}
svg .axis{stroke:#94a3b8}
svg .tick{font-size:11px;fill:#475569}
svg .alabel{font-size:11.5px;fill:#475569}
svg .ptitle{font-size:13px;font-weight:600;fill:#0f172a}
svg .legend{font-size:11.5px;fill:#334155}
.grid{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:10px;padding:8px}
figcaption{color:var(--dim);font-size:12px;padding:2px 6px}
.grid.small figure svg{max-width:100%;height:auto}
ul.asserts{list-style:none;padding:0;margin:4px 0 10px}
ul.asserts li{margin:4px 0}
table.samples td{min-width:140px}
table.samples td.idx,table.samples th.idx{min-width:0;width:1%}
details summary{cursor:pointer;color:var(--accent);margin:4px 0 8px;font-weight:500}
table.samples pre{margin:0;white-space:pre-wrap;word-break:break-word;font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
td.ref{background:#fffbeb !important}
td.gen.hit{background:#ecfdf3 !important;box-shadow:inset 3px 0 0 #22c55e}
.score{color:var(--dim);font-size:11.5px;margin-top:3px}
.barcell{width:28%}
.bar{position:relative;height:12px;background:#f1f5f9;border-radius:6px;overflow:hidden}
.bar .in{position:absolute;left:0;top:0;bottom:0;background:#bfdbfe}
.bar .out{position:absolute;left:0;top:0;bottom:0;background:#2563eb}
footer{color:var(--dim);font-size:12px;margin-top:22px;text-align:center}
"""


def render(run: Run, file: Path) -> str:
    sections = [graph_section(run), steps_section(run), training_section(run), eval_section(run),
                samples_section(run), data_section(run)]
    titles = {"graph": "Pipeline", "steps": "Steps", "training": "Training", "eval": "Evaluation",
              "samples": "Samples", "data": "Data"}
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in titles.items()
                  if any(s.startswith(f'<section id="{a}"') for s in sections))
    from ftlang import __version__

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(file.name)} · run {esc(run.id)}</title><style>{CSS}</style></head><body><main>"
            f"{header(run, file)}<nav>{nav}</nav>{''.join(sections)}"
            f"<footer>ftlang {esc(__version__)} · {esc(str(file))} · run {esc(run.id)}</footer>"
            "</main></body></html>\n")


def write_report(file: Path, ref: str = "last", output: Path | None = None) -> Path | None:
    """Renders the report of run `ref` of `file`; returns the HTML path, None if no run matches."""
    run = gather(file, ref)
    if run is None:
        return None
    path = output or run.root / "reports" / f"{run.id}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(run, file), encoding="utf-8")
    tmp.replace(path)
    return path


def cmd_report(args: argparse.Namespace) -> int:
    file = Path(args.file)
    if not file.is_file():
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return 2
    if not (file.resolve().parent / ".ft" / "ledger.duckdb").exists():
        print(f"error: no runs yet for {args.file}: `ft run {args.file}` records one", file=sys.stderr)
        return 1
    path = write_report(file, args.run or "last", Path(args.output) if args.output else None)
    if path is None:
        print(f"error: no run matches {args.run!r} (see `ft runs {args.file}`)", file=sys.stderr)
        return 1
    print(path)
    return 0
