"""The evaluation sections of `ft report`: a `Run` in, HTML strings out.

Per eval node: its assertions checked against this run's values, a metric table per
dataset (each model against the first one), the metric history of the recent runs,
and the sample generations side by side with the reference.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ftlang.runtime import asserts
from ftlang.runtime.compare import metric_columns
from ftlang.runtime.report_charts import Series, line_plot
from ftlang.runtime.report_data import Run, eval_nodes, per_dataset, read_samples
from ftlang.runtime.report_format import clip, esc, finite, fmt_num
from ftlang.runtime.report_sections import section
from ftlang.stdlib.evaluate_spec import LOWER_IS_BETTER, higher_is_better  # the metric declarations

MAX_CELL = 400  # characters of a sample shown in a table cell
SHOWN_SAMPLES = 8  # rows per dataset shown open; the rest behind a <details>


def _delta(metric: str, value: Any, base: Any) -> str:
    if not (finite(value) and finite(base)) or value == base:
        return ""
    d = value - base
    higher = higher_is_better(metric)  # None: a py(...) metric or one not declared
    cls = "neutral" if higher is None else "good" if (d > 0) == higher else "bad"
    rel = f" ({d / abs(base) * 100:+.0f}%)" if base and abs(base) > 1e-9 else ""
    return f'<span class="delta {cls}">{"+" if d > 0 else "−"}{fmt_num(abs(d))}{rel}</span>'


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
            pts = [(x, y) for x, y in pts if finite(y)]
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
    for n in eval_nodes(run):
        per = per_dataset(n, run)
        meta = n["meta"]
        gen = meta.get("generation")
        how = ""
        if isinstance(gen, dict):
            how = ", ".join(f"{k} {v}" for k, v in gen.items())
        parts.append(f'<h3 class="mono">{esc(n["node"])}</h3>' + (f'<p class="note">generation: {esc(how)}</p>' if how else ""))
        models = meta.get("models") if isinstance(meta.get("models"), dict) else {}
        checks = _assertions(run, n["node"], models)
        if checks:
            where = "the assert lines of the file as it is now, checked against this run's values"
            if not run.latest:
                where += " (this is an older run: the file may have changed since)"
            parts.append(f'<h4>Assertions</h4><p class="note">{esc(where)}</p>{checks}')
        for data, block in per.items():
            parts.append(f'<h4>on <span class="mono">{esc(data)}</span></h4>')
            parts.append(metrics_table(block.get("models") or {}, block.get("rows")))
            parts.append(history_plots(run, n["node"], data, list(block.get("models") or {})))
    return section("Evaluation", "".join(parts), "eval",
                    "each model against the first one (the baseline); ↓ marks metrics where lower is better")


def _same(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _shown(text: str) -> str:
    """A generation as HTML: special cases named, runs of blank lines collapsed, clipped."""
    if not text:
        return '<i class="dim">(empty)</i>'
    if not text.strip():
        return f'<i class="dim">(whitespace only: {len(text)} characters)</i>'
    return esc(clip(re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text.strip("\n")), MAX_CELL))


def _sample_rows(items: list[dict[str, Any]], models: list[str], first: int) -> str:
    body = []
    for i, r in enumerate(items, first):
        ref = str(r.get("reference", ""))
        cells = []
        for m in models:
            g = str((r.get("generations") or {}).get(m, ""))
            score = (r.get("scores") or {}).get(m)
            s = f'<div class="score">reward {fmt_num(score)}</div>' if finite(score) else ""
            hit = " hit" if _same(g, ref) else ""
            cells.append(f'<td class="gen{hit}"><pre>{_shown(g)}</pre>{s}</td>')
        body.append(f'<tr><td class="num dim idx">{i}</td><td class="prompt"><pre>{_shown(str(r.get("prompt", "")))}</pre></td>'
                    f'<td class="ref"><pre>{_shown(ref)}</pre></td>{"".join(cells)}</tr>')
    return "".join(body)


def samples_section(run: Run) -> str:
    parts = []
    for n in eval_nodes(run):
        folder = run.object(n["digest"])
        rows = read_samples(folder / "samples.jsonl") if folder else []
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
    return section("Sample generations", "".join(parts), "samples",
                    "green: the generation equals the reference (ignoring case and surrounding space)")
