"""The run ledger: every run and every node of it, in a DuckDB file under .ft/.

A run appends one JSON line to `.ft/ledger.journal` (no DuckDB import, no database write on
the path of every `ft run`: a no-op run stays fast); the first reader folds the journal into
`ledger.duckdb` under the journal's flock, each run in one transaction, then empties it, so
a crash mid-fold never loses or doubles a run (runs already in the database are skipped)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
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


class LedgerError(Exception):
    """The ledger file cannot be read or written; the cache itself is unaffected."""


@contextlib.contextmanager
def _db(root: Path, write: bool = False) -> Iterator[Any]:
    """A connection; readers open the file read-only, so `ft runs` works on a read-only
    `.ft/`. Any DuckDB or OS error becomes one LedgerError that names the file."""
    import duckdb

    path = root / "ledger.duckdb"
    try:
        con = duckdb.connect(str(path), read_only=not write)
        try:
            if write:
                con.execute(SCHEMA)
            yield con
        finally:
            con.close()
    except (duckdb.Error, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LedgerError(f"the run ledger {path} cannot be {'written' if write else 'read'}: {first}") from None


JOURNAL = "ledger.journal"


def record(root: Path, run_id: str, file: str, command: str, started: float, finished: float,
           status: str, nodes: list[NodeRecord]) -> None:
    """Appends the run to the journal in one write, under the journal's lock (a reader
    folding it waits for the line, or the line waits for the fold)."""
    import fcntl
    import os

    counts = {s: sum(1 for n in nodes if n.status == s) for s in ("ran", "cached", "failed")}
    run = [run_id, file, command, started, finished, status, counts["ran"], counts["cached"], counts["failed"]]
    rows = [[run_id, n.node, n.kind, n.status, n.key, n.digest, n.seconds, json.dumps(n.reasons),
             json.dumps(n.meta, default=str), json.dumps(n.params, default=str)] for n in nodes]
    line = (json.dumps({"run": run, "nodes": rows}, default=str) + "\n").encode("utf-8")
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:
        raise LedgerError(f"the run ledger {root / JOURNAL} cannot be written: {exc.strerror or exc}") from None


REJECTED = "ledger.journal.rejected"  # journal lines of the wrong shape, kept (never deleted)
_STR, _NUM = (str,), (int, float)
_RUN = (_STR, _STR, _STR, _NUM, _NUM, _STR, (int,), (int,), (int,))  # the runs table's columns
_NODE = (_STR, _STR, _STR, _STR, (str, type(None)), (str, type(None)), _NUM, _STR, _STR, _STR)
_warned: set[Path] = set()


def _fits(row: Any, types: tuple[tuple[type, ...], ...]) -> bool:
    return isinstance(row, list) and len(row) == len(types) and all(
        isinstance(v, t) and not isinstance(v, bool) for v, t in zip(row, types))


def _shaped(r: Any) -> bool:
    """Whether a journal line is what `record` writes: one malformed line must not make every
    reader fail forever."""
    return isinstance(r, dict) and _fits(r.get("run"), _RUN) and isinstance(r.get("nodes"), list) \
        and all(_fits(n, _NODE) and n[0] == r["run"][0] for n in r["nodes"])


def _reject(root: Path, lines: list[bytes]) -> bool:
    """Sets wrong-shaped lines aside in REJECTED (appended: ftlang did not write them, so they
    are kept) and says so once per process; False when they could not be moved."""
    try:
        with (root / REJECTED).open("ab") as f:
            f.write(b"".join(raw + b"\n" for raw in lines))
        moved, where = True, f"moved to {root / REJECTED}"
    except OSError as exc:
        moved, where = False, f"left in the journal ({root / REJECTED}: {exc.strerror or exc})"
    if root not in _warned:
        _warned.add(root)
        import sys

        print(f"warning: {len(lines)} line(s) of {root / JOURNAL} are not runs ftlang recorded; skipped "
              f"and {where}", file=sys.stderr)
    return moved


def _fold(root: Path) -> None:
    """Moves the journal's runs into ledger.duckdb, holding the journal's lock: each run in
    one transaction, then the journal emptied. A fold killed between the two leaves runs
    that are already in the database: the next fold skips them by run id. A torn last line
    (a run killed mid-write) is dropped; a line of the wrong shape is set aside (_reject).
    On a read-only `.ft/` nothing moves."""
    import fcntl
    import os

    journal = root / JOURNAL
    try:
        fd = os.open(journal, os.O_RDWR)
    except OSError:
        return  # no journal, or read-only: readers see the database as it is
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        runs: list[tuple[bytes, dict[str, Any]]] = []
        rejected: list[bytes] = []
        for raw in data.splitlines():
            try:
                r = json.loads(raw)
            except ValueError:
                continue
            if _shaped(r):
                runs.append((raw, r))
            else:
                rejected.append(raw)
        if runs:
            import duckdb

            with _db(root, write=True) as con:
                for raw, r in runs:
                    if con.execute("SELECT 1 FROM runs WHERE run_id = ?", [r["run"][0]]).fetchone():
                        continue  # folded before, by a fold killed before it emptied the journal
                    con.execute("BEGIN")
                    try:
                        con.execute("INSERT INTO runs VALUES (?, ?, ?, to_timestamp(?), to_timestamp(?), ?, ?, ?, ?)",
                                    r["run"])
                        if r["nodes"]:
                            con.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", r["nodes"])
                    except (duckdb.ConversionException, duckdb.OutOfRangeException,
                            duckdb.InvalidInputException):  # a value the columns cannot hold
                        con.execute("ROLLBACK")
                        rejected.append(raw)
                        continue
                    con.execute("COMMIT")
        os.ftruncate(fd, 0)
        if rejected and not _reject(root, rejected):
            os.pwrite(fd, b"".join(raw + b"\n" for raw in rejected), 0)  # never lost
    finally:
        os.close(fd)


def exists(root: Path) -> bool:
    """Whether any run was recorded under `root` (folded or not)."""
    return (root / "ledger.duckdb").exists() or (root / JOURNAL).exists()


def _ready(root: Path) -> bool:
    """Folds pending runs in; True when there is a database to read."""
    try:
        _fold(root)
    except LedgerError:
        pass  # locked by another DuckDB writer, or unreadable: read what the database has
    return (root / "ledger.duckdb").exists()


def last_run(root: Path, file: str | None = None) -> dict[str, Any] | None:
    """The newest run (of `file`'s name when given): from the journal's tail when it is
    there, which needs no DuckDB (`ft status` after a run), else from the database."""
    journal = root / JOURNAL
    name = Path(file).name if file else None
    if journal.exists():
        try:
            lines = journal.read_bytes().splitlines()
        except OSError:
            lines = []
        for raw in reversed(lines):
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if not _shaped(line):
                continue  # the next fold sets it aside
            run = line["run"]
            if name is None or run[1] == name or str(run[1]).endswith("/" + name):
                keys = ("run_id", "file", "command", "started", "finished", "status", "ran", "cached", "failed")
                return dict(zip(keys, run))
    rows = runs(root, limit=1, file=file)
    return rows[0] if rows else None


def _of_file(file: str | None) -> tuple[str, list[Any]]:
    """SQL and params restricting runs to one .ft file, matched by its name (runs record the
    file name; older ledgers a path relative to where ft ran)."""
    if not file:
        return "TRUE", []
    name = Path(file).name
    return "(file = ? OR file LIKE ?)", [name, f"%/{name}"]


def runs(root: Path, limit: int = 20, file: str | None = None) -> list[dict[str, Any]]:
    """The last `limit` runs, newest first; only those of `file` when given."""
    if not _ready(root):
        return []
    where, params = _of_file(file)
    with _db(root) as con:
        cur = con.execute("SELECT run_id, file, started, finished, status, ran, cached, failed FROM runs "
                          f"WHERE {where} ORDER BY started DESC, rowid DESC LIMIT ?", [*params, max(limit, 0)])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def _decoded(cur: Any) -> list[dict[str, Any]]:
    """Node rows as dicts with their JSON columns parsed."""
    cols = [d[0] for d in cur.description]
    out = [dict(zip(cols, r)) for r in cur.fetchall()]
    for r in out:
        r["meta"] = json.loads(r["meta"] or "{}")
        r["reasons"] = json.loads(r["reasons"] or "[]")
        r["params"] = json.loads(r.get("params") or "{}")  # ledgers older than the column
    return out


def resolve_run(root: Path, ref: str, file: str | None = None) -> str | None:
    """A run id from a prefix, `last`, or `last~N` (N runs before the last). With `file`,
    `last~N` counts that file's runs only, and a prefix must name one of them: every
    command (show, diff, report, compare) means the same run by the same words."""
    if not ref or not _ready(root):
        return None  # an empty prefix would match every run
    where, params = _of_file(file)
    with _db(root) as con:
        if ref == "last" or ref.startswith("last~"):
            if ref != "last" and not ref[5:].isdigit():
                return None  # last~-1, last~x: no such run (a negative OFFSET is a DuckDB error)
            back = int(ref[5:]) if ref != "last" else 0
            row = con.execute(f"SELECT run_id FROM runs WHERE {where} ORDER BY started DESC, rowid DESC "
                              "LIMIT 1 OFFSET ?", [*params, back]).fetchone()
        else:
            row = con.execute(f"SELECT run_id FROM runs WHERE run_id LIKE ? AND {where} "
                              "ORDER BY started DESC LIMIT 1", [ref + "%", *params]).fetchone()
        return row[0] if row else None


def referenced_digests(root: Path, last_runs: int) -> set[str]:
    """Artifact digests that the last N runs produced or used."""
    if not _ready(root):
        return set()
    with _db(root) as con:
        rows = con.execute("SELECT DISTINCT digest FROM nodes WHERE digest IS NOT NULL AND run_id IN "
                           "(SELECT run_id FROM runs ORDER BY started DESC LIMIT ?)", [max(last_runs, 0)]).fetchall()
        return {r[0] for r in rows}


def run_nodes(root: Path, run_id: str, file: str | None = None) -> list[dict[str, Any]]:
    rid_value = resolve_run(root, run_id, file)
    if rid_value is None:
        return []
    with _db(root) as con:
        rid = (rid_value,)
        cur = con.execute("SELECT * FROM nodes WHERE run_id = ? ORDER BY rowid", [rid[0]])
        return _decoded(cur)


def run_info(root: Path, run_ref: str, file: str | None = None) -> dict[str, Any] | None:
    """One run's row (run_id, file, command, started, finished, status, counts) from a
    prefix, `last` or `last~N`; None when no run matches."""
    rid = resolve_run(root, run_ref, file)
    if rid is None:
        return None
    with _db(root) as con:
        cur = con.execute("SELECT * FROM runs WHERE run_id = ?", [rid])
        cols = [d[0] for d in cur.description]
        row = cur.fetchone()
        return dict(zip(cols, row)) if row else None


def nodes_of_runs(root: Path, run_ids: list[str], kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """Nodes of the given kinds in the given runs (meta and params decoded), each with its
    run's `started` and `run_status`; newest run first, then in execution order."""
    if not run_ids or not _ready(root):
        return []
    with _db(root) as con:
        cur = con.execute(
            "SELECT n.*, r.started, r.status AS run_status FROM nodes n JOIN runs r USING (run_id) "
            "WHERE n.run_id IN (SELECT unnest(?)) AND n.kind IN (SELECT unnest(?)) "
            "ORDER BY r.started DESC, n.run_id DESC, n.rowid", [list(run_ids), list(kinds)])
        return _decoded(cur)


def train_history(root: Path, limit: int = 50) -> list[tuple[dict[str, Any], float]]:
    """(meta, seconds) of the last training nodes that ran, newest first."""
    if not _ready(root):
        return []
    with _db(root) as con:
        rows = con.execute("SELECT meta, seconds FROM nodes WHERE kind = 'train' AND status = 'ran' "
                           "ORDER BY rowid DESC LIMIT ?", [limit]).fetchall()
    return [(json.loads(m or "{}"), s) for m, s in rows]
