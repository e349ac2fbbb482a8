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
  seconds DOUBLE, reasons VARCHAR, meta VARCHAR, params VARCHAR);
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS params VARCHAR;
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
    params: dict[str, Any] = field(default_factory=dict)  # the key's components, secrets removed


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
            con.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                [run_id, n.node, n.kind, n.status, n.key, n.digest, n.seconds, json.dumps(n.reasons),
                 json.dumps(n.meta, default=str), json.dumps(n.params, default=str)] for n in nodes])
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


def _decoded(cur: Any) -> list[dict[str, Any]]:
    """Node rows as dicts with their JSON columns parsed."""
    cols = [d[0] for d in cur.description]
    out = [dict(zip(cols, r)) for r in cur.fetchall()]
    for r in out:
        r["meta"] = json.loads(r["meta"] or "{}")
        r["reasons"] = json.loads(r["reasons"] or "[]")
        r["params"] = json.loads(r["params"] or "{}")
    return out


def resolve_run(root: Path, ref: str) -> str | None:
    """A run id from a prefix, `last`, or `last~N` (N runs before the last)."""
    if not (root / "ledger.duckdb").exists():
        return None
    con = _connect(root)
    try:
        if ref == "last" or ref.startswith("last~"):
            back = int(ref[5:] or 0) if ref.startswith("last~") else 0
            row = con.execute("SELECT run_id FROM runs ORDER BY started DESC, rowid DESC LIMIT 1 OFFSET ?",
                              [back]).fetchone()
        else:
            row = con.execute("SELECT run_id FROM runs WHERE run_id LIKE ? ORDER BY started DESC LIMIT 1",
                              [ref + "%"]).fetchone()
        return row[0] if row else None
    finally:
        con.close()


def referenced_digests(root: Path, last_runs: int) -> set[str]:
    """Artifact digests that the last N runs produced or used."""
    if not (root / "ledger.duckdb").exists():
        return set()
    con = _connect(root)
    try:
        rows = con.execute("SELECT DISTINCT digest FROM nodes WHERE digest IS NOT NULL AND run_id IN "
                           "(SELECT run_id FROM runs ORDER BY started DESC LIMIT ?)", [last_runs]).fetchall()
        return {r[0] for r in rows}
    finally:
        con.close()


def run_nodes(root: Path, run_id: str) -> list[dict[str, Any]]:
    rid_value = resolve_run(root, run_id)
    if rid_value is None:
        return []
    con = _connect(root)
    try:
        rid = (rid_value,)
        cur = con.execute("SELECT * FROM nodes WHERE run_id = ? ORDER BY rowid", [rid[0]])
        return _decoded(cur)
    finally:
        con.close()


def run_info(root: Path, run_ref: str) -> dict[str, Any] | None:
    """One run's row (run_id, file, command, started, finished, status, counts) from a
    prefix, `last` or `last~N`; None when no run matches."""
    rid = resolve_run(root, run_ref)
    if rid is None:
        return None
    con = _connect(root)
    try:
        cur = con.execute("SELECT * FROM runs WHERE run_id = ?", [rid])
        cols = [d[0] for d in cur.description]
        row = cur.fetchone()
        return dict(zip(cols, row)) if row else None
    finally:
        con.close()


def nodes_of_runs(root: Path, run_ids: list[str], kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """Nodes of the given kinds in the given runs (meta and params decoded), each with its
    run's `started` and `run_status`; newest run first, then in execution order."""
    if not run_ids or not (root / "ledger.duckdb").exists():
        return []
    con = _connect(root)
    try:
        cur = con.execute(
            "SELECT n.*, r.started, r.status AS run_status FROM nodes n JOIN runs r USING (run_id) "
            "WHERE n.run_id IN (SELECT unnest(?)) AND n.kind IN (SELECT unnest(?)) "
            "ORDER BY r.started DESC, n.run_id DESC, n.rowid", [list(run_ids), list(kinds)])
        return _decoded(cur)
    finally:
        con.close()


def train_history(root: Path, limit: int = 50) -> list[tuple[dict[str, Any], float]]:
    """(meta, seconds) of the last training nodes that ran, newest first."""
    con = _connect(root)
    try:
        rows = con.execute("SELECT meta, seconds FROM nodes WHERE kind = 'train' AND status = 'ran' "
                           "ORDER BY rowid DESC LIMIT ?", [limit]).fetchall()
    finally:
        con.close()
    return [(json.loads(m or "{}"), s) for m, s in rows]
