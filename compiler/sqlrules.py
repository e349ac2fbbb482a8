"""Curate SQL checked with DuckDB itself, at compile time (part of pass 3, `contracts`).

- `review`: the rules of ftlang.stdlib.sqlpolicy as diagnostics inside the .ft file:
  FT0127 (nondeterministic: the clock, unseeded randomness, DuckDB's own state; allowed with
  `deterministic = false`) and FT0128 (statements and functions a curate may not run).
- `bind`: the query is bound, never run, against empty tables with the upstream columns, so
  what DuckDB's binder rejects (an unknown function, a wrong argument type, a deprecated
  `x -> x + 1` lambda) is FT0129 with the .ft line, not a failed step. Only where every input's
  columns are known; a column whose type is unknown binds as NULL (DuckDB casts it to
  anything), and an error that involves such a column proves nothing, so it is not reported.
  The output types feed the curate blocks downstream.

DuckDB is imported only here, only when a file has a curate block; one in-memory connection
per compile, each query in its own transaction that is rolled back.

What DuckDB says depends only on the query's text, the `deterministic` flag and the input
columns' names and types (and on DuckDB and ftlang, which the caller's memo is kept for):
`memo` (a dict kept between compiles, runtime/parsememo.py) holds each answer under those,
so a compile after an edit asks DuckDB only about the queries whose answer may differ, and
imports DuckDB only if there is one. `used` holds the answers this compile used.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ftlang.compiler import sqlshape
from ftlang.compiler import types as T
from ftlang.compiler.ir import Node
from ftlang.stdlib import sqlpolicy
from ftlang.stdlib.dataset import SCHEMA_TYPES  # the one declaration: schema type -> DuckDB type

if TYPE_CHECKING:
    import duckdb
    from ftlang.compiler.contracts import Columns, _SqlPosition

BIND_SECONDS = 2.0  # set-up statements run on empty tables; a slow one (range(1e12)) is cut off
_CODES = {sqlpolicy.NONDETERMINISTIC: "FT0127", sqlpolicy.REFUSED: "FT0128"}
REFUSED = sqlpolicy.REFUSED


class SqlChecker:
    """Reviews and binds the curate queries of one compile."""

    def __init__(self, nodes: dict[str, Node], ctx: T.Ctx, memo: dict[Any, Any] | None = None) -> None:
        self.nodes = nodes
        self.ctx = ctx
        self.types: dict[str, dict[str, str]] = {}  # curate node -> output column -> DuckDB type
        self._con: duckdb.DuckDBPyConnection | None = None
        self.memo = memo or {}
        self.used: dict[Any, Any] = {}

    def _answer(self, key: Any, ask: Callable[[], Any]) -> Any:
        """DuckDB's answer for `key`, from the memo or asked now; None answers (an
        interrupted bind) are not kept."""
        value = self.memo[key] if key in self.memo else ask()
        if value is not None:
            self.used[key] = value
        return value

    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            import duckdb

            con = duckdb.connect(":memory:", config={"threads": 1, "autoinstall_known_extensions": False,
                                                     "autoload_known_extensions": False})
            from ftlang.stdlib import sqlmacros

            sqlmacros.define(con)  # the quality macros a curate query may call, as at run time
            for setting in ("enable_external_access = false", "TimeZone = 'UTC'", "lock_configuration = true"):
                con.execute(f"SET {setting}")
            self._con = con
        return self._con

    def review(self, node: Node, sql: str, where: _SqlPosition) -> str:
        """Reports what the curate rules refuse. Returns "ok", NONDETERMINISTIC (still a plain
        query) or REFUSED (statements other checks would misread: they should stop)."""
        deterministic = node.params.get("deterministic") is not False
        found = self._answer(("review", sql, deterministic), lambda: [
            (f.kind, f.message, f.start, f.end, f.label, f.help)
            for f in sqlpolicy.review(sql, self.con(), deterministic)])
        for kind, message, start, end, label, help_ in found:
            self.ctx.error(_CODES[kind], message, where.span(start, end), label, help=help_)
        kinds = {f[0] for f in found}
        return sqlpolicy.REFUSED if sqlpolicy.REFUSED in kinds else \
            sqlpolicy.NONDETERMINISTIC if kinds else "ok"

    def bind(self, node: Node, sql: str, where: _SqlPosition, tables: dict[str, Columns],
             inputs: dict[str, str]) -> None:
        """Binds the query against empty tables (table name -> columns; `inputs`: table -> node)."""
        typed = {name: self.column_types(inputs[name], cols) for name, cols in tables.items()}
        if not typed or any(not cols for cols in typed.values()):
            return
        key = ("bind", sql, tuple((n, tuple(cols.items())) for n, cols in typed.items()))
        answer = self._answer(key, lambda: self._bind(sql, typed))
        if answer is None:
            return  # too slow to bind at compile time: the step will tell
        if answer[0] == "types":
            known = all(t for cols in typed.values() for t in cols.values())
            # with an untyped input, an output type may be a guess: downstream binds it as unknown
            self.types[node.id] = {c: t if known else "" for c, t in answer[1]}
        else:
            _, parser_error, message, at, text = answer
            self.report(parser_error, message, at, text, where)

    def _bind(self, sql: str, typed: dict[str, dict[str, str]]) -> tuple[Any, ...] | None:
        """("types", ((column, type), ...)), ("error", is a parser error, DuckDB's message,
        offset of the statement, its text), or None when interrupted."""
        import duckdb

        con = self.con()
        timer: threading.Timer | None = None
        con.begin()
        stmt_at, text = 0, sql
        try:
            for name, cols in typed.items():
                select = ", ".join(f"CAST(NULL AS {t}) AS {_quote(c)}" if t else f"NULL AS {_quote(c)}"
                                   for c, t in cols.items())
                con.execute(f"CREATE TEMP VIEW {_quote(name)} AS SELECT {select} WHERE false")
            stmts = sqlpolicy.statements(sql, con)
            if len(stmts) > 1:  # only set-up statements run; binding the query runs nothing. A timer
                # is a thread, whose start cost more than binding a short query.
                timer = threading.Timer(BIND_SECONDS, con.interrupt)
                timer.start()
            for pos, stmt in stmts[:-1]:
                stmt_at, text = pos, stmt.query  # where an error points
                con.sql(text)  # CREATE ... runs (on empty tables); a SELECT is only bound
            stmt_at, last = stmts[-1]
            text = last.query
            rel = con.sql(text)  # binds; runs nothing
            return ("types", tuple((c, str(t)) for c, t in zip(rel.columns, rel.types)))
        except duckdb.InterruptException:
            return None
        except duckdb.Error as e:
            return ("error", isinstance(e, duckdb.ParserException), str(e), stmt_at, text)
        finally:
            if timer is not None:
                timer.cancel()
            try:
                con.rollback()
            except duckdb.Error:
                pass

    def shape(self, sql: str) -> sqlshape.Shape:
        """`sqlshape.of(sql)`, from the memo when it has it (then sqlglot is not imported)."""
        return self._answer(("shape", sql), lambda: sqlshape.of(sql))

    def created(self, sql: str) -> set[str]:
        """`created(sql)`, from the memo when it has it."""
        return set(self._answer(("created", sql), lambda: frozenset(created(sql))))

    def column_types(self, nid: str, cols: Columns) -> dict[str, str]:
        """Column -> DuckDB type ('' when unknown) of an input, in its column order."""
        node = self.nodes.get(nid)
        known: dict[str, str] = {}
        if node is not None and node.kind == "dataset":
            schema = node.params.get("schema") or {}
            known = {c: SCHEMA_TYPES.get(str(t), "") for c, t in schema.items()}
        elif nid in self.types:
            known = self.types[nid]
        return {c: known.get(c, "") for c in cols.names}

    def report(self, parser_error: bool, message: str, at: int, text: str, where: _SqlPosition) -> None:
        """DuckDB's error `message` in statement `text` (at offset `at` of the sql) as a diagnostic."""
        lines = [ln for ln in message.split("\n") if ln.strip()]
        first = re.sub(r"^[\w ]+ Error: ", "", lines[0]) if lines else "Error"
        first = re.split(r"(?<=[.!])\s", first)[0]  # DuckDB's advice after it is in the help
        if '"NULL"' in first:
            return  # an input column of unknown type: the binder's guess, not the user's error
        start, end = _locate(first, text, at)
        if parser_error:
            self.ctx.error("FT0126", f"SQL syntax error: {first}", where.span(start, end), "here",
                           help="DuckDB's parser rejects the query")
            return
        self.ctx.error("FT0129", f"DuckDB rejects the query: {first}", where.span(start, end),
                       "rejected here", help=_help(first, lines[1:]))


def created(sql: str) -> set[str]:
    """Tables and views the statements before the query create (lower case)."""
    import duckdb

    try:
        toks = sqlpolicy.tokens(sql)
    except duckdb.Error:
        return set()
    out = set()
    for i, t in enumerate(toks):
        if t.word not in ("table", "view") or not any(u.word == "create" for u in toks[max(0, i - 4):i]):
            continue
        rest = [u for u in toks[i + 1:i + 5] if u.word not in ("if", "not", "exists")]
        if rest and rest[0].word:
            out.add(rest[0].word)
    return out


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


# What a DuckDB error message is about, most specific first.
_SUBJECTS = (r"argument types '([^'(]+)\(", r'column "([^"]+)"', r"with name (\S+) does not exist",
             r'at or near "([^"]+)"')


def _locate(message: str, text: str, at: int) -> tuple[int, int]:
    """Offsets in the whole sql of what `message` is about; the statement's start if unknown."""
    toks = sqlpolicy.tokens(text, at)
    if not toks:
        return at, at + 1
    if "lambda arrow" in message:  # not a JSON `j -> '$.a'`, whose right side is a string
        for i, t in enumerate(toks):
            if t.text.startswith("->") and not (i + 1 < len(toks) and toks[i + 1].kind == "string_const"):
                return t.start, t.start + 2
    m = None
    for pattern in _SUBJECTS:
        m = m or re.search(pattern, message)
    if m:
        name = m.group(1).lower().split(".")[-1]
        calls = [t for i, t in enumerate(toks) if t.word == name and i + 1 < len(toks)
                 and toks[i + 1].text.startswith("(")]
        for t in calls or [t for t in toks if t.word == name]:
            return t.start, t.end
    return toks[0].start, toks[0].end


def _help(first: str, rest: list[str]) -> str:
    if "lambda arrow" in first:
        return "DuckDB 2.0 no longer reads `x -> x + 1`: write `lambda x: x + 1`"
    for line in rest:
        m = re.match(r"\s*(?:Did you mean|Candidate bindings:)\s*\"?([^\"?]+)", line)
        if m:
            return f"did you mean `{m.group(1)}`?"
    candidates = [ln.strip() for ln in rest if "(" in ln and "Candidate" not in ln][:3] \
        if any("Candidate functions" in ln for ln in rest) else []
    if candidates:
        return "it takes " + "; ".join(candidates) + ": add a cast, e.g. CAST(x AS DOUBLE)"
    return " ".join(ln.strip() for ln in rest[:2]) or \
        "the query was bound against empty tables with the upstream columns"


__all__ = ["SCHEMA_TYPES", "SqlChecker"]
