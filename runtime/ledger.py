"""The run ledger: every run and every node of it, in a DuckDB file under .ft/."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id VARCHAR PRIMARY KEY, file VARCHAR, command VARCHAR, started TIMESTAMP,
  finished TIMESTAMP, status VARCHAR, ran INTEGER, cached INTEGER, failed INTEGER);
CREATE TABLE IF NOT EXISTS nodes (
  run_id VARCHAR, node VARCHAR, kind VARCHAR, status VARCHAR, key VARCHAR, digest VARCHAR,
  seconds DOUBLE, reasons VARCHAR, meta VARCHAR);
"""


@dataclass
class NodeRecord:
    node: str
    kind: str
    status: str  # ran | cached | failed | skipped
    key: str | None = None
    digest: str | None = None
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def _connect(root: Path) -> Any:
    import duckdb

    con = duckdb.connect(str(root / "ledger.duckdb"))
    con.execute(SCHEMA)
    return con


def record(root: Path, run_id: str, file: str, command: str, started: float, finished: float,
           status: str, nodes: list[NodeRecord]) -> None:
    con = _connect(root)
    try:
        counts = {s: sum(1 for n in nodes if n.status == s) for s in ("ran", "cached", "failed")}
        con.execute("INSERT INTO runs VALUES (?, ?, ?, to_timestamp(?), to_timestamp(?), ?, ?, ?, ?)",
                    [run_id, file, command, started, finished, status, counts["ran"], counts["cached"],
                     counts["failed"]])
        if nodes:
            con.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                [run_id, n.node, n.kind, n.status, n.key, n.digest, n.seconds, json.dumps(n.reasons),
                 json.dumps(n.meta, default=str)] for n in nodes])
    finally:
        con.close()


def runs(root: Path, limit: int = 20) -> list[dict[str, Any]]:
    if not (root / "ledger.duckdb").exists():
        return []
    con = _connect(root)
    try:
        cur = con.execute("SELECT run_id, file, started, finished, status, ran, cached, failed FROM runs "
                          "ORDER BY started DESC LIMIT ?", [limit])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()


def run_nodes(root: Path, run_id: str) -> list[dict[str, Any]]:
    con = _connect(root)
    try:
        rid = con.execute("SELECT run_id FROM runs WHERE run_id LIKE ? ORDER BY started DESC LIMIT 1",
                          [run_id + "%"]).fetchone()
        if rid is None:
            return []
        cur = con.execute("SELECT * FROM nodes WHERE run_id = ? ORDER BY rowid", [rid[0]])
        cols = [d[0] for d in cur.description]
        out = [dict(zip(cols, r)) for r in cur.fetchall()]
        for r in out:
            r["meta"] = json.loads(r["meta"] or "{}")
            r["reasons"] = json.loads(r["reasons"] or "[]")
        return out
    finally:
        con.close()
