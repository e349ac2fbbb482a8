"""The pipeline graph of `ft report`: node names, edges and statuses in, an SVG out.

Laid out here (layers by longest path, rows by barycenter) so no Graphviz is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

from ftlang.runtime.report_format import clip, esc

STATUS_STYLE = {  # fill, stroke, text
    "ran": ("#e7f6ec", "#16a34a", "#14532d"),
    "cached": ("#e8effd", "#3b82f6", "#1e3a8a"),
    "failed": ("#fde8e8", "#dc2626", "#7f1d1d"),
    "skipped": ("#f1f2f4", "#9ca3af", "#374151"),
    "not run": ("#ffffff", "#cbd5e1", "#64748b"),
}


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
        label = clip(n, (node_w - 20) // 7)
        out.append(f'<text x="{x + 12:.1f}" y="{y + 20:.1f}" class="nlabel" fill="{ink}">{esc(label)}</text>')
        sub = st + (f" · {detail[n]}" if detail.get(n) else "")
        out.append(f'<text x="{x + 12:.1f}" y="{y + 37:.1f}" class="nsub" fill="{ink}">{esc(clip(sub, 34))}</text>')
        out.append("</g>")
    lx = margin
    for st in ("ran", "cached", "failed", "skipped", "not run"):
        fill, stroke, _ = STATUS_STYLE[st]
        out.append(f'<rect x="{lx}" y="{height - 16}" width="12" height="12" rx="3" fill="{fill}" stroke="{stroke}"/>')
        out.append(f'<text x="{lx + 17}" y="{height - 6}" class="legend">{st}</text>')
        lx += 30 + 7 * len(st)
    out.append("</svg>")
    return "".join(out)
