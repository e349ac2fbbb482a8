"""What the contracts need to know of a curate query, as plain data: `of(sql)` parses the
query with sqlglot (DuckDB dialect) once and returns a `Shape` (the tables it reads, its
SELECT list, its column references, each with offsets into the query), or a syntax error.

A Shape is independent of the .ft file around the query (offsets are into the query text)
and of the input columns, so the compile memo keeps it by query text
(runtime/parsememo.py): after an edit that changes no query, `ft check` does not import
sqlglot at all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class SqlError:
    message: str
    start: int
    end: int
    label: str
    help: str | None = None


@dataclass(frozen=True)
class Star:
    """`*` or `t.*` in the SELECT list."""

    qualifier: str  # "" for a bare `*`
    dropped: tuple[str, ...]  # EXCLUDE (...)
    renames: bool  # REPLACE / RENAME: the columns cannot be named here


@dataclass(frozen=True)
class Column:
    """A column reference (not a star) and the offsets of its name."""

    name: str
    qualifier: str
    start: int
    end: int


@dataclass(frozen=True)
class Shape:
    error: SqlError | None = None  # sqlglot's syntax error that DuckDB's parser shares
    known: bool = True  # False: no statement, or sqlglot cannot read a query DuckDB accepts
    tables: tuple[tuple[str, int, int], ...] = ()  # tables read (not CTEs): name, offsets
    select: bool = False  # the result is a SELECT (the left one of a UNION)
    extent: tuple[int, int] | None = None  # offsets of the SELECT list
    simple: bool = False  # no subquery, CTE, lambda, unnest or table function: columns can be checked
    renamed: bool = False  # FROM t AS x(a, b): the columns are renamed
    aliases: tuple[tuple[str, str], ...] = ()  # table alias -> table name
    selected: tuple[str, ...] = ()  # aliases the SELECT list defines
    columns: tuple[Column, ...] = ()  # every plain column reference
    outputs: tuple[str | Star | None, ...] = ()  # per SELECT item: its name, a star, or None (unknown)


def of(sql: str) -> Shape:
    """The Shape of `sql`'s last statement."""
    tree = _parse(sql)
    if isinstance(tree, SqlError):
        # sqlglot does not know every DuckDB form: DuckDB's own parser is the judge
        return Shape(known=False) if _duckdb_accepts(sql) else Shape(error=tree, known=False)
    if tree is None:
        return Shape(known=False)
    return _shape(tree)


def _shape(tree: Any) -> Shape:
    from sqlglot import exp

    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    tables: dict[str, tuple[int, int]] = {}
    for t in tree.find_all(exp.Table):
        ident = t.this
        if not isinstance(ident, exp.Identifier) or t.name in ctes or t.db:
            continue
        meta = ident.meta or {}
        tables.setdefault(t.name, (int(meta.get("start", 0)), int(meta.get("end", 0)) + 1))
    table_list = tuple((n, s, e) for n, (s, e) in tables.items())
    select = tree
    while isinstance(select, exp.Union | exp.Intersect | exp.Except):
        select = select.left
    if not isinstance(select, exp.Select):
        return Shape(tables=table_list)
    aliases: dict[str, str] = {}
    renamed = False
    for t in tree.find_all(exp.Table):
        alias = t.args.get("alias")
        if alias is not None and getattr(alias, "columns", None):
            renamed = True
        aliases[t.alias_or_name] = t.name
    simple = not any(True for _ in tree.find_all(exp.Subquery, exp.CTE, exp.Lambda, exp.Unnest)) \
        and not any(isinstance(t.this, exp.Func) for t in tree.find_all(exp.Table)) \
        and select is tree
    columns = []
    for col in tree.find_all(exp.Column):
        if isinstance(col.this, exp.Star) or not isinstance(col.this, exp.Identifier):
            continue
        meta = col.this.meta or {}
        columns.append(Column(col.name, col.table, int(meta.get("start", 0)), int(meta.get("end", 0)) + 1))
    outputs: list[str | Star | None] = []
    for p in select.expressions:
        if isinstance(p, exp.Star) or (isinstance(p, exp.Column) and isinstance(p.this, exp.Star)):
            star = p.this if isinstance(p, exp.Column) else p
            dropped = tuple(c.name for c in (star.args.get("except_") or star.args.get("except") or []))
            outputs.append(Star(p.table if isinstance(p, exp.Column) else "", dropped,
                                bool(star.args.get("rename"))))
        elif isinstance(p, exp.Columns | exp.Explode | exp.Unnest) or any(
                isinstance(x, exp.Columns) for x in p.walk()):
            outputs.append(None)  # COLUMNS(...) and unnest(...) make columns we cannot name here
        else:
            outputs.append(p.alias_or_name or p.sql(dialect="duckdb"))
    return Shape(tables=table_list, select=True,
                 extent=_extent(select.expressions) if select.expressions else None,
                 simple=simple, renamed=renamed, aliases=tuple(aliases.items()),
                 selected=tuple(p.alias for p in tree.expressions if isinstance(p, exp.Alias)),
                 columns=tuple(columns), outputs=tuple(outputs))


@lru_cache(maxsize=4096)
def _parse(sql: str) -> Any:
    """The query's last statement (sqlglot), a SqlError, or None when there is none."""
    import sqlglot
    from sqlglot.errors import ParseError, TokenError

    try:
        with quiet_sqlglot():  # its "falling back to Command" warnings: FT0128 says it better
            statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        highlight = str(err.get("highlight") or "")
        line, col = int(err.get("line") or 1), int(err.get("col") or 1)
        end = _offset(sql, line, col)
        start = max(0, end - max(len(highlight), 1) + 1)
        desc = str(err.get("description") or exc).split("\n")[0]
        desc = re.sub(r" for <class '[\w.]+\.(\w+)'>", r" in \1", desc)
        near = f" near `{highlight}`" if highlight.strip() else ""
        if desc.startswith("Required keyword"):
            return SqlError(f"incomplete expression{near}", start, end + 1, "something is missing here",
                            help=f"sqlglot (DuckDB dialect) says: {desc}")
        return SqlError(f"{desc}{near}", start, end + 1, "here")
    except TokenError as exc:
        m = re.search(r"'(.*)'", str(exc), re.S)
        start = max(0, len(m.group(1)) - 1) if m and sql.startswith(m.group(1)[:1]) else 0
        return SqlError("the query cannot be read (an unclosed quote?)", start, len(sql), "here",
                        help="close every 'string' and \"identifier\"")
    except Exception as exc:  # sqlglot raises plain errors on some inputs: not a user error to crash on
        return SqlError(f"the query cannot be parsed ({type(exc).__name__})", 0, len(sql), "here")
    return statements[-1] if statements else None


@contextlib.contextmanager
def quiet_sqlglot() -> Iterator[None]:
    """sqlglot's own warnings (to stderr) off while it parses."""
    log = logging.getLogger("sqlglot")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _duckdb_accepts(sql: str) -> bool:
    """DuckDB's own parser (no tables needed): the judge when sqlglot disagrees."""
    try:
        import duckdb

        row = duckdb.sql("SELECT json_serialize_sql(?::VARCHAR)", params=[sql]).fetchone()  # type: ignore[call-arg]
    except Exception:
        try:
            import duckdb

            con = duckdb.connect()
            row = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
        except Exception:
            return False
    if not row:
        return False
    try:
        return not json.loads(row[0]).get("error", False)
    except (TypeError, ValueError):
        return False


def _offset(sql: str, line: int, col: int) -> int:
    """0-based offset of a 1-based (line, col) in `sql`."""
    lines = sql.split("\n")
    line = max(1, min(line, len(lines)))
    return min(len(sql), sum(len(x) + 1 for x in lines[:line - 1]) + max(col, 1) - 1)


def _extent(nodes: list[Any]) -> tuple[int, int]:
    starts, ends = [], []
    for n in nodes:
        for leaf in n.walk():
            meta = getattr(leaf, "meta", None) or {}
            if "start" in meta:
                starts.append(int(meta["start"]))
                ends.append(int(meta["end"]) + 1)
    return (min(starts), max(ends)) if starts else (0, 1)


__all__ = ["Column", "Shape", "SqlError", "Star", "of"]
