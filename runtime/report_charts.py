"""SVG charts of `ft report`: numbers in, one inline `<svg>` string out.

Line plots (loss curves, metric history), horizontal bars (sweep selections) and
stacked histograms (text lengths), drawn here so the page needs no script and no
network. Each function returns "" when there is nothing finite to draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ftlang.runtime.report_format import clip, esc, finite, fmt_num

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563",
           "#65a30d", "#9333ea")
BINS = 20


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
    pts = [(x, y) for s in series for x, y in zip(s.xs, s.ys) if finite(x) and finite(y)]
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
        xy = [(sx(x), sy(y)) for x, y in zip(s.xs, s.ys) if finite(x) and finite(y)]
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
            out.append(f'<text x="{lx + 24:.1f}" y="{ly + 4:.1f}" class="legend">{esc(clip(s.label, 34))}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_plot(labels: Sequence[str], values: Sequence[float], *, title: str = "", highlight: int | None = None,
             width: int = 560, unit: str = "") -> str:
    """Horizontal bars, one per label; `highlight` marks one bar (a sweep's winner)."""
    rows = [(lab, v) for lab, v in zip(labels, values) if finite(v)]
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
        out.append(f'<text x="{label_w - 8}" y="{y + 14}" class="tick" text-anchor="end">{esc(clip(lab, 30))}</text>')
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
