"""What `ft report` shows, read from the ledger and the artifacts: a file and a run ref in, a `Run` out.

`gather` reads the run's row and node rows from `.ft/ledger.duckdb`, compiles the
file (for the graph and the assertions only; a file that no longer compiles still
gets a report) and the metric history of the runs before it. The readers below
turn a node's committed artifact or meta into plain lists and dicts for the
sections. Nothing here writes HTML, and torch is never imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftlang.runtime import ledger
from ftlang.runtime.compare import metric_rows, runs_of_file

HISTORY_RUNS = 10  # runs of metric history shown, this one included


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


def _compile(file: Path) -> tuple[Any, str]:
    try:
        from ftlang.compiler import compile_file

        return compile_file(file), ""
    except Exception as exc:  # a file that no longer compiles still has a ledger
        diags = getattr(exc, "diagnostics", None)
        msg = diags[0].message if diags else f"{type(exc).__name__}: {exc}"
        return None, msg


def gather(file: Path, ref: str) -> Run | None:
    """The run `ref` of `file` (`last`, `last~N` or a run id prefix); None if none matches."""
    root = file.resolve().parent / ".ft"
    rid = ledger.resolve_run(root, ref, str(file))
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
        window = recent[recent.index(rid):][:HISTORY_RUNS]
        run.history = list(reversed(metric_rows(root, window, fold=False)))
    return run


def eval_nodes(run: Run) -> list[dict[str, Any]]:
    """The eval nodes that have results in this run."""
    return [n for n in run.nodes if n["kind"] == "eval" and n["status"] in ("ran", "cached")
            and isinstance(n["meta"], dict)]


def per_dataset(n: dict[str, Any], run: Run) -> dict[str, dict[str, Any]]:
    """dataset label -> {"models": ..., "rows": ...} of an eval node (old results hold one dataset)."""
    meta = n["meta"]
    per = meta.get("datasets")
    if isinstance(per, dict) and per:
        return per
    label = ""
    if run.program is not None and n["node"] in run.program.nodes:
        ref = run.program.nodes[n["node"]].params.get("data")
        label = getattr(ref, "label", "") or ""
    return {label or "data": {"models": meta.get("models") or {}, "rows": meta.get("rows")}}


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The rows of an eval's samples.jsonl; [] when it is missing or unreadable."""
    out = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
    except (OSError, ValueError):
        return []
    return out


def string_lengths(folder: Path) -> dict[str, dict[str, list[int]]]:
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


def row_counts(meta: dict[str, Any]) -> tuple[int | None, int | None]:
    """(rows in, rows out) of a dataset or curate step."""
    if isinstance(meta.get("rows_in"), dict):
        rin = sum(v for v in meta["rows_in"].values() if isinstance(v, int))
        return rin, meta.get("rows_out") if isinstance(meta.get("rows_out"), int) else None
    rows = meta.get("rows") if isinstance(meta.get("rows"), int) else None
    return rows, rows
