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

This module is the command and the page around the sections: report_data gathers
the run, report_sections and report_eval write the sections, report_charts and
report_graph draw the pictures, report_format formats the numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ftlang.runtime import userfiles
from ftlang.runtime.report_data import Run, gather
from ftlang.runtime.report_eval import eval_section, samples_section
from ftlang.runtime.report_format import esc
from ftlang.runtime.report_sections import (
    data_section,
    graph_section,
    header,
    steps_section,
    training_section,
)

# The whole stylesheet, inline: the classes the sections, charts and graph write.
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

    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{userfiles.REPORT_MARK.decode()}"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(file.name)} · run {esc(run.id)}</title><style>{CSS}</style></head><body><main>"
            f"{header(run, file)}<nav>{nav}</nav>{''.join(sections)}"
            f"<footer>ftlang {esc(__version__)} · {esc(str(file))} · run {esc(run.id)}</footer>"
            "</main></body></html>\n")


class NotOurs(Exception):
    """-o names a file ft report may not write (userfiles.refusal: the message says why)."""


def write_report(file: Path, ref: str = "last", output: str | Path | None = None) -> Path | None:
    """Renders the report of run `ref` of `file`; returns the HTML path, None if no run matches.
    NotOurs when `output` may not be written (not an earlier report, its folder missing): it
    is left as it is, and no folder is created."""
    if output is not None and (problem := userfiles.refusal(str(output), userfiles.REPORT_MARK, "ft report")):
        raise NotOurs(problem)
    run = gather(file, ref)
    if run is None:
        return None
    if output is None:
        path = run.root / "reports" / f"{run.id}.html"
        path.parent.mkdir(parents=True, exist_ok=True)  # ftlang's own folder, under .ft/
    else:
        path = Path(output)
    userfiles.replace(path, render(run, file).encode("utf-8"))
    return path


def cmd_report(args: argparse.Namespace) -> int:
    file = Path(args.file)
    if not file.is_file():
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return 2
    from ftlang.runtime import ledger

    if not ledger.exists(file.resolve().parent / ".ft"):
        print(f"error: no runs yet for {args.file}: `ft run {args.file}` records one", file=sys.stderr)
        return 1
    try:
        path = write_report(file, args.run, args.output)  # as typed: -o '' is refused, not '.'
    except NotOurs as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if path is None:
        print(f"error: no run matches {args.run!r} (see `ft runs {args.file}`)", file=sys.stderr)
        return 1
    print(path)
    return 0
