"""`ft compare FILE [RUN...]`: metrics across runs and sweep points, side by side.

Rows are run x node x dataset x model; columns are the metrics. Nodes are eval steps
(every metric of every dataset) and `select` steps (each sweep point's score on the
selection data, the winner marked). Everything comes from the run ledger: the file
is compiled only to name the datasets of old-format eval results and of `select`
nodes, and compare works without it.

Without RUN arguments the last 10 runs of the file are compared, and a result that
a later run reused from the cache (same node, same artifact digest) is shown once, at
the run that computed it. Listing runs shows each of them in full.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from ftlang.runtime import ledger

DEFAULT_RUNS = 10
KINDS = ("eval", "select")


def short_name(node: str) -> str:
    """"train.sft[lr=1e-4]" -> "sft[lr=1e-4]"."""
    return node.split(".", 1)[1] if "." in node else node


def runs_of_file(root: Path, file: str, limit: int) -> list[dict[str, Any]]:
    """The last `limit` runs of `file` (matched by file name), newest first."""
    return ledger.runs(root, limit=limit, file=file)


def _dataset_labels(file: str) -> dict[str, list[str]]:
    """node -> the labels of the datasets it measures on, from the current file (best effort)."""
    try:
        from ftlang.compiler import compile_file
        from ftlang.compiler.ir import RefValue

        program = compile_file(Path(file))
    except Exception:
        return {}
    out: dict[str, list[str]] = {}
    for nid, node in program.nodes.items():
        refs = [node.params.get("data"), *(node.params.get("extra_data") or [])]
        out[nid] = [r.label for r in refs if isinstance(r, RefValue)]
    return out


def metric_rows(root: Path, run_ids: list[str], *, fold: bool,
                labels: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """One dict per run x node x dataset x model: run, started, run_status, node, dataset,
    model, metrics, digest, selected (select nodes: whether this point won)."""
    labels = labels or {}
    nodes = [n for n in ledger.nodes_of_runs(root, run_ids, KINDS) if n["status"] in ("ran", "cached")]
    if fold:
        # Oldest first, so the run that computed a result keeps it; then newest first again.
        kept, seen = [], set()
        for n in reversed(nodes):
            ident = (n["node"], n["digest"])
            if ident in seen:
                continue
            seen.add(ident)
            kept.append(n)
        nodes = list(reversed(kept))
    rows: list[dict[str, Any]] = []
    for n in nodes:
        meta = n["meta"] if isinstance(n["meta"], dict) else {}
        base = {"run": n["run_id"], "started": str(n["started"])[:19], "run_status": n["run_status"],
                "node": n["node"], "digest": n["digest"]}
        if n["kind"] == "select":
            metric, scores = meta.get("metric") or "score", meta.get("scores") or {}
            data = (labels.get(n["node"]) or [""])[0]
            for point, value in scores.items():
                rows.append({**base, "dataset": data, "model": short_name(point),
                             "metrics": {metric: value}, "selected": point == meta.get("selected")})
            continue
        per = meta.get("datasets")
        if not isinstance(per, dict) or not per:
            name = (labels.get(n["node"]) or [""])[0]
            per = {name: {"models": meta.get("models") or {}, "rows": meta.get("rows")}}
        for data, block in per.items():
            for model, values in (block.get("models") or {}).items():
                rows.append({**base, "dataset": data, "model": model, "rows": block.get("rows"),
                             "metrics": dict(values) if isinstance(values, dict) else {}})
    return rows


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Metric names in a stable order: the stdlib's declaration order, then the rest as seen."""
    from ftlang.stdlib.evaluate_spec import METRICS

    seen: list[str] = []
    for r in rows:
        for k in r["metrics"]:
            if k not in seen:
                seen.append(k)
    known = [m for m in METRICS if m in seen]
    return known + [m for m in seen if m not in known]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return "" if v is None else str(v)


def text_table(headers: list[str], rows: list[list[Any]], text_columns: int) -> str:
    """Text columns (the first `text_columns`) left-aligned, numbers right-aligned."""
    body = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < text_columns else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in body)])


def render_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    body: list[list[Any]] = []
    last: tuple[str, str] | None = None
    for r in rows:
        group = (r["run"], r["node"])
        # A run and node are written once per group: the table reads as blocks.
        run, node = (r["run"], r["node"]) if group != last else ("", "")
        last = group
        model = r["model"] + (" *" if r.get("selected") else "")
        body.append([run, node, r["dataset"], model, *(r["metrics"].get(c) for c in columns)])
    return text_table(["run", "node", "dataset", "model", *columns], body, 4)


def render_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "started", "run_status", "node", "dataset", "model", "selected", *columns])
    for r in rows:
        w.writerow([r["run"], r["started"], r["run_status"], r["node"], r["dataset"], r["model"],
                    "" if "selected" not in r else str(r["selected"]).lower(),
                    *("" if r["metrics"].get(c) is None else r["metrics"][c] for c in columns)])
    return buf.getvalue()


def cmd_compare(args: argparse.Namespace) -> int:
    root = Path(args.file).resolve().parent / ".ft"
    if args.runs:
        run_ids = []
        for ref in args.runs:
            rid = ledger.resolve_run(root, ref, args.file)
            if rid is None:
                print(f"error: no run matches {ref!r} (see `ft runs {args.file}`)", file=sys.stderr)
                return 1
            if rid not in run_ids:
                run_ids.append(rid)
    else:
        run_ids = [r["run_id"] for r in runs_of_file(root, args.file, DEFAULT_RUNS)]
    if not run_ids:
        print("no runs yet: `ft run` records one", file=sys.stderr)
        return 1
    labels = _dataset_labels(args.file) if Path(args.file).is_file() else {}
    rows = metric_rows(root, run_ids, fold=not args.runs, labels=labels)
    columns = metric_columns(rows)
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    if args.csv:
        sys.stdout.write(render_csv(rows, columns))
        return 0
    if not rows:
        print(f"no eval or select results in the {len(run_ids)} run{'s' if len(run_ids) != 1 else ''} compared")
        return 0
    print(render_text(rows, columns))
    if any(r.get("selected") for r in rows):
        print("\n* the sweep point `select` kept")
    return 0
