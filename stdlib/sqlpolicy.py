"""What a curate query may do: its output must be a function of its input rows and its text.

`review(sql, con)` lists what breaks that, with offsets into `sql`. The compiler turns each
finding into a diagnostic inside the .ft file (compiler/sqlrules.py); the curate step runs the
same review before it executes anything, so a program built without the compiler is held to
the same rules. It reads DuckDB's own tokens and statement split, so strings, comments and
quoted identifiers (a column named "now") are never mistaken for calls.

Two kinds of finding:
- `nondeterministic` (FT0127): the clock, unseeded randomness, DuckDB's own state (settings,
  versions, counters). Allowed with `deterministic = false`, and then the block reruns every
  time. random(), the uuid functions and USING SAMPLE are deterministic after a
  `SELECT setseed(x);` statement: the step runs on one thread (measured: 4 runs, 4 equal
  digests; with 4 threads a seeded ORDER BY random() gave 4 different results).
- `refused` (FT0128): statements that change the session (SET, PRAGMA, ATTACH, LOAD, CALL,
  ...), functions that read files, run SQL built at run time, or reach DuckDB internals.
  `CALL enable_logging(storage = 'file', ...)` under disabled file access ends the whole
  process (a C++ terminate, rc 134): such calls never reach DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

NONDETERMINISTIC = "nondeterministic"
REFUSED = "refused"

_FALSE_HELP = "or set `deterministic = false` in the block: it then reruns every time"
_SEED_HELP = ("seed it: put `SELECT setseed(0.42);` before the query (a seeded curate runs on one "
              "thread, so a seeded sequence repeats), " + _FALSE_HELP)

# Functions whose value can change between two runs over the same rows. name -> (why, help).
_CLOCK = ("reads the clock: the result changes from run to run, and the cache key cannot see it",
          "compare with a fixed value such as DATE '2024-06-01', " + _FALSE_HELP)
_STATE = ("reads DuckDB's own state (settings, versions, paths, counters), not the data",
          "a curate query reads only its `from` tables; " + _FALSE_HELP)
_RANDOM = ("changes from run to run unless it is seeded", _SEED_HELP)
NONDETERMINISTIC_FUNCTIONS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("now", "today", "current_date", "current_time", "current_timestamp",
                     "current_localtime", "current_localtimestamp", "localtime", "localtimestamp",
                     "get_current_time", "get_current_timestamp", "transaction_timestamp",
                     "statement_timestamp", "uuidv7"), _CLOCK),
    **dict.fromkeys(("random", "gen_random_uuid", "uuid", "uuidv4"), _RANDOM),
    **dict.fromkeys(("current_setting", "version", "current_connection_id", "current_query_id",
                     "current_transaction_id", "txid_current", "stats", "vector_type"), _STATE),
    **dict.fromkeys(("nextval", "currval", "setval"),
                    ("numbers rows in execution order, which the optimiser may change",
                     "number rows with row_number() OVER (ORDER BY ...), " + _FALSE_HELP)),
}
# Meta table functions by prefix: duckdb_settings() shows the absolute temp path, and so on.
NONDETERMINISTIC_PREFIXES = ("duckdb_", "pragma_")
_RANDOMS = {"random", "gen_random_uuid", "uuid", "uuidv4"}  # allowed after setseed
# Written without parentheses these are still calls (SQL keywords); `t.current_date` is a column.
_BARE_CLOCK = {"current_date", "current_time", "current_timestamp", "localtime", "localtimestamp"}

_FILES = ("reads a file, whose content the cache key cannot see (file access is off in a curate)",
          "files enter through dataset blocks, e.g. dataset extra { source = csv(\"data/x.csv\") }: "
          "declare it as one and read its table")
_SESSION = ("changes DuckDB's configuration or logging, which the cache key cannot see",
            "remove it: a curate runs with fixed settings (threads chosen by ftlang, UTC, no file access)")
_DYNAMIC = ("runs SQL built while the query runs, which cannot be checked",
            "write that SQL into the query itself")
_INTERNAL = ("is DuckDB-internal", "remove it: a curate query reads only its `from` tables")
REFUSED_FUNCTIONS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("read_csv", "read_csv_auto", "read_json", "read_json_auto", "read_json_objects",
                     "read_json_objects_auto", "read_ndjson", "read_ndjson_auto", "read_ndjson_objects",
                     "read_parquet", "parquet_scan", "read_text", "read_blob", "read_duckdb", "glob",
                     "sniff_csv", "parquet_metadata", "parquet_schema", "parquet_file_metadata",
                     "parquet_kv_metadata", "parquet_full_metadata", "parquet_page_index",
                     "parquet_bloom_probe", "read_single_csv_file", "read_single_json_file",
                     "read_single_parquet_file"), _FILES),
    **dict.fromkeys(("enable_logging", "disable_logging", "truncate_duckdb_logs", "write_log",
                     "enable_profiling", "disable_profiling", "checkpoint", "force_checkpoint",
                     "which_secret", "add_grammar_extension", "remove_grammar_extension",
                     "register_external_resource", "register_external_resource_type",
                     "deregister_external_resource", "destroy_external_resource",
                     "create_external_resource"), _SESSION),
    **dict.fromkeys(("query", "query_table", "json_execute_serialized_sql"), _DYNAMIC),
    **dict.fromkeys(("arrow_scan", "arrow_scan_dumb", "python_arrow_scan", "pandas_scan",
                     "python_map_function", "test_vector_types"), _INTERNAL),
}

# Considered and allowed: DuckDB marks these VOLATILE or CONSISTENT_WITHIN_QUERY, but in a
# curate step they are functions of the sql and the rows. A test checks that every such DuckDB
# function is listed in one of these tables, so a new DuckDB release forces a decision.
_UTC = "its TIMESTAMPTZ variants follow the TimeZone setting, which the step fixes to UTC"
ALLOWED_FUNCTIONS: dict[str, str] = {
    **dict.fromkeys(("+", "-", "century", "date_diff", "date_part", "date_sub", "date_trunc", "datediff",
                     "datepart", "datesub", "datetrunc", "day", "dayname", "dayofmonth", "dayofweek",
                     "dayofyear", "decade", "era", "hour", "isodow", "isoyear", "julian", "last_day",
                     "make_timestamptz", "microsecond", "millennium", "millisecond", "minute", "month",
                     "monthname", "quarter", "second", "strftime", "time_bucket", "timezone",
                     "timezone_hour", "timezone_minute", "week", "weekday", "weekofyear", "year",
                     "yearweek", "generate_series", "range"), _UTC),
    **dict.fromkeys(("current_database", "current_schema", "current_schemas", "in_search_path"),
                    "constants of the step's fresh in-memory connection"),
    "getvariable": "reads a SET VARIABLE of the same sql",
    "current_query": "the statement's own text",
    "error": "raises: the step fails",
    "sleep_ms": "only waits",
    "setseed": "allowed as a statement before the query; refused inside it",
    "age": "refused with one argument (it measures from now); age(a, b) is a function of a and b",
    **dict.fromkeys(("unnest", "repeat", "repeat_row", "json_each", "json_tree", "summary", "seq_scan",
                     "test_all_types", "icu_calendar_names", "pg_timezone_names"),
                    "a table function of its arguments (or a constant of the DuckDB version)"),
}

# Statements allowed before the query. Their effects live in the connection, which is thrown
# away after the step: CREATE MACRO / TEMP TABLE / VIEW, changes to those tables, setseed.
SETUP_STATEMENTS = {"SELECT", "CREATE", "INSERT", "UPDATE", "DELETE", "DROP", "ALTER"}
_ALLOWED_HELP = ("allowed before the query: CREATE (macros, temp tables, views), INSERT/UPDATE/"
                 "DELETE/DROP/ALTER on them, SET VARIABLE, and SELECT (e.g. SELECT setseed(0.42))")


@dataclass(frozen=True)
class Finding:
    kind: str  # NONDETERMINISTIC or REFUSED
    message: str
    start: int  # offsets into the sql
    end: int
    label: str
    help: str


@dataclass(frozen=True)
class Token:
    start: int
    text: str  # without trailing whitespace
    kind: str  # identifier, keyword, operator, string_const, numeric_const, comment

    @property
    def word(self) -> str:
        return self.text.strip('"').lower() if self.kind in ("identifier", "keyword") else ""

    @property
    def end(self) -> int:
        return self.start + len(self.text)


def statements(sql: str, con: duckdb.DuckDBPyConnection) -> list[tuple[int, Any]]:
    """(offset in `sql`, DuckDB statement) for each statement. Raises duckdb.ParserException."""
    out, pos = [], 0
    for stmt in con.extract_statements(sql):
        at = sql.find(stmt.query, pos)  # the pieces concatenate to `sql`; find() is a safety net
        at = pos if at < 0 else at
        out.append((at, stmt))
        pos = at + len(stmt.query)
    return out


def review(sql: str, con: duckdb.DuckDBPyConnection, deterministic: bool = True) -> list[Finding]:
    """Everything in `sql` that is refused, or nondeterministic (unless `deterministic` is False).

    SQL that DuckDB cannot parse yields no findings: its syntax error is reported elsewhere."""
    import duckdb

    try:
        stmts = statements(sql, con)
    except duckdb.Error:
        return []
    found: list[Finding] = []
    seeded = False
    for i, (at, stmt) in enumerate(stmts):
        text = stmt.query
        toks = tokens(text, at)
        last = i == len(stmts) - 1
        refused = _statement(stmt, toks, last, text, at)
        calls = _calls(toks)
        found += refused or _functions(toks, calls, seeded, last) + _samples(toks, seeded)
        seeded = seeded or any(toks[j].word == "setseed" for j in calls)
    return [f for f in found if deterministic or f.kind != NONDETERMINISTIC]


def tokens(text: str, at: int = 0) -> list[Token]:
    """DuckDB's tokens of `text` (comments dropped), their offsets shifted by `at`."""
    import duckdb

    raw = duckdb.tokenize(text)
    out = []
    for k, (off, kind) in enumerate(raw):
        end = raw[k + 1][0] if k + 1 < len(raw) else len(text)
        piece = text[off:end].rstrip()
        if kind.name != "comment" and piece:
            out.append(Token(at + off, piece, kind.name))
    return out


def _statement(stmt: Any, toks: list[Token], last: bool, text: str, at: int) -> list[Finding]:
    kind = stmt.type.name
    if not toks:
        return []
    head = toks[0]
    words = [t.word for t in toks[:6]]
    line_end = text.find("\n", head.start - at)
    body = [t for t in toks if not t.text.startswith(";")] or toks
    end = min(at + line_end if line_end >= 0 else len(text) + at, body[-1].end)
    end = max(head.end, end)
    shown = head.text.upper() if head.kind == "keyword" else kind
    written = text[head.start - at:end - at]
    written = written if len(written) <= 60 else written[:57] + "..."
    if last:
        if kind != "SELECT":
            return [Finding(REFUSED, f"the last SQL statement must be a query (SELECT ...), not {shown}",
                            head.start, end, "not a query", "end the sql with the SELECT whose rows "
                            "the block produces")]
        return []
    if kind == "SET" and words[:2] in (["set", "variable"], ["reset", "variable"]):
        return []
    if kind == "CREATE" and "secret" in words:
        return [Finding(REFUSED, "CREATE SECRET is not allowed in a curate query", head.start, end,
                        "not allowed here", "a curate query reads only its `from` tables")]
    if kind in SETUP_STATEMENTS:
        return []
    if kind in ("SET", "PRAGMA", "CALL") or shown in ("LOAD", "INSTALL"):
        why = ("changes DuckDB's configuration, which the cache key cannot see"
               if kind != "CALL" else "runs a DuckDB procedure (settings, logging, checkpoints)")
        help_ = ("remove it: a curate runs with fixed settings (threads chosen by ftlang, UTC, no file access). "
                 "For a value, use SET VARIABLE x = ...; and getvariable('x')")
        return [Finding(REFUSED, f"`{written}` {why}: not allowed in a curate query",
                        head.start, end, "not allowed here", help_)]
    return [Finding(REFUSED, f"{shown} statements are not allowed in a curate query", head.start, end,
                    "not allowed here", _ALLOWED_HELP)]


# `name(` after these defines a name (a table, a macro, a CTE's columns), it calls nothing.
_DEFINES = {"table", "into", "macro", "function", "view", "with", "exists", "type"}


def _calls(toks: list[Token]) -> list[int]:
    """Indexes of tokens that name a called function (`name(` or a bare clock keyword)."""
    out = []
    for j, t in enumerate(toks):
        if not t.word:
            continue
        nxt = toks[j + 1].text if j + 1 < len(toks) else ""
        prev = toks[j - 1] if j else None
        if nxt.startswith("("):
            if prev is None or prev.word not in _DEFINES:
                out.append(j)
        elif t.word in _BARE_CLOCK and not t.text.startswith('"') and \
                not (prev is not None and prev.text.endswith(".")):
            out.append(j)
    return out


def _functions(toks: list[Token], calls: list[int], seeded: bool, last: bool) -> list[Finding]:
    found = []
    for j in calls:
        t = toks[j]
        name = t.word
        shown = f"{name}()" if j + 1 < len(toks) and toks[j + 1].text.startswith("(") else t.text
        if name in REFUSED_FUNCTIONS:
            why, help_ = REFUSED_FUNCTIONS[name]
            found.append(Finding(REFUSED, f"`{shown}` {why}", t.start, t.end, "not allowed here", help_))
        elif name == "setseed" and last:
            found.append(Finding(NONDETERMINISTIC, "setseed() inside the query does not seed it",
                                 t.start, t.end, "too late to seed",
                                 "make it its own statement before the query: SELECT setseed(0.42); SELECT ..."))
        elif name in _RANDOMS and seeded:
            continue
        elif name == "age" and _arg_count(toks, j) == 1:
            found.append(Finding(NONDETERMINISTIC, "`age(x)` with one argument measures from now, so the "
                                 "result changes from run to run", t.start, t.end, "reads the clock",
                                 "give the reference time: age(TIMESTAMP '2024-06-01', x), " + _FALSE_HELP))
        elif name in NONDETERMINISTIC_FUNCTIONS or name.startswith(NONDETERMINISTIC_PREFIXES):
            why, help_ = NONDETERMINISTIC_FUNCTIONS.get(name, _STATE)
            label = "random" if name in _RANDOMS else "reads the clock" if (why, help_) == _CLOCK \
                else "not a function of the data"
            found.append(Finding(NONDETERMINISTIC, f"`{shown}` {why}", t.start, t.end, label, help_))
    return found


def _arg_count(toks: list[Token], j: int) -> int:
    """Arguments of the call whose name is toks[j] (commas at depth 1, plus one)."""
    depth, commas, empty = 0, 0, True
    for t in toks[j + 1:]:
        for ch in t.text if t.kind == "operator" else "x":
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    return 0 if empty else commas + 1
            elif ch == "," and depth == 1:
                commas += 1
            elif depth >= 1 and not ch.isspace():
                empty = False
    return commas + 1


_SAMPLE_WORDS = {"rows", "percent", "repeatable", "bernoulli", "system", "reservoir"}


def _samples(toks: list[Token], seeded: bool) -> list[Finding]:
    """USING SAMPLE / TABLESAMPLE without a seed: `(method, seed)` or REPEATABLE (seed)."""
    if seeded:
        return []
    found = []
    for j, t in enumerate(toks):
        if t.kind != "keyword" or t.word not in ("sample", "tablesample"):
            continue
        depth, seed = 0, False
        for u in toks[j + 1:]:
            if u.kind == "keyword" and depth == 0 and u.word not in _SAMPLE_WORDS:
                break
            if u.word == "repeatable":
                seed = True
            if u.kind == "operator":
                stop = False
                for ch in u.text:
                    if ch == "(":
                        depth += 1
                    elif ch == ")":
                        depth -= 1
                        stop = stop or depth < 0
                    elif ch in ",;" and depth == 0:
                        stop = True
                    elif ch == "," and depth == 1:
                        seed = True
                if stop:
                    break
        if not seed:
            using = j > 0 and toks[j - 1].word == "using"
            start = toks[j - 1].start if using else t.start
            found.append(Finding(NONDETERMINISTIC, f"`{'USING SAMPLE' if using else t.text.upper()}` without "
                                 "a seed picks different rows each run", start, t.end, "random",
                                 "give it a seed: USING SAMPLE 10% (bernoulli, 42), or REPEATABLE (42), "
                                 "or put `SELECT setseed(0.42);` before the query, " + _FALSE_HELP))
    return found
