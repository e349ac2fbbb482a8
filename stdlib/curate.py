"""curate: a DuckDB SQL query over datasets, optionally split into named parts.

In:  params["from"], dataset Artifacts, each a table named after its block
     (`dataset.chats` -> `chats`, `curate.clean.train` -> `clean`); params["sql"], DuckDB SQL
     whose last statement is a query; params["split"], None or
     {"parts": {name: fraction, ...}, "by": column, "seed": int}.
Out: `data.parquet`, or one `<part>.parquet` per part (empty ones too), written by DuckDB's
     own Parquet writer (`write_parts`: no row passes through Python), and
     {"rows_in": {table: n}, "rows_out": n, "parts": {part: n}} ("parts" only with a split).

Output bytes depend only on the input rows and the params:
- the query runs on one thread unless its rows cannot depend on the order they arrive in:
  with several, DISTINCT ON, LIMIT, first() and the order of ORDER BY ties depend on thread
  timing (measured: 5 different tie orders in 5 runs). A single query whose plan is only
  scans, filters, projections, joins, unions, DISTINCT / GROUP BY with min/max/count, and
  no top-level ORDER BY runs on all the cores ftlang may use (`_threads`): its rows are a
  set, sorted by all columns below, so the bytes are the same on any number of threads;
- without a top-level ORDER BY the result is sorted by all columns, so a reordered input
  gives the same file; a top-level ORDER BY is kept (it is how curriculum order is written);
- the query may read only the `from` tables (file access is off), so no data outside the
  cache key can slip in;
- the clock, unseeded randomness and DuckDB's own state are refused unless
  params["deterministic"] is False (ftlang.stdlib.sqlpolicy, the rules the compiler checks too);
  TimeZone is UTC, so TIMESTAMPTZ functions do not depend on the machine;
- the configuration is locked before the user's SQL runs: a SET that slipped through fails,
  and `CALL enable_logging(storage = 'file', ...)` fails cleanly instead of ending the
  process (measured: a C++ terminate, rc 134, without the lock).
The split hashes `by` with md5, so a row's part depends only on its key and the seed: adding
rows never moves old ones, and equal keys (duplicate prompts) land in the same part.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlang.stdlib.spec import REQUIRED, Artifact, Attr, Signature, StepContext, StepError, StepSpec

if TYPE_CHECKING:  # heavy imports stay inside functions: commands that do not run steps are fast
    import duckdb

# A key's position in [0, 1) is (md5_number(key) mod 2^52) / 2^52: exact in a double, and the
# modulo is written as a bit mask, which DuckDB computes 10x faster than % on a UHUGEINT.
_HASH_BITS = 52
_PART_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def summary(meta: dict[str, Any]) -> str:
    bits = [f"{meta['rows_out']} rows"] if isinstance(meta.get("rows_out"), int) else []
    if isinstance(meta.get("parts"), dict):
        bits += [f"{k} {v}" for k, v in meta["parts"].items()]
    return ", ".join(bits)


SPEC = StepSpec(
    kind="curate", version=1, output="dataset", run="ftlang.stdlib.curate:run",
    signature=Signature("curate", (
        Attr("from", "list[dataset]", None, "the datasets the query reads, each a table named after "
             "its block; default: the tables the query names"),
        Attr("deterministic", "bool", True, "false allows the clock, unseeded random() and DuckDB's "
             "own state in the query (refused otherwise); the block then reruns on every run: a "
             "per-run nonce replaces this flag in its cache key"),
    ), "A DuckDB SQL query over datasets, optionally split into named parts. The output must "
       "be a function of the input rows: no SET, PRAGMA, ATTACH, CALL, file reads; random() "
       "only after a `SELECT setseed(x);` statement."),
    subblocks={"split": Signature("split", (
        Attr("by", "ident", REQUIRED, "the column whose hash decides the part"),
        Attr("seed", "int", 0, "changes the assignment"),
    ), "name = fraction pairs summing to 1, plus `by` and `seed`")},
    statements=("sql",),
    summary=summary,
)


def run(ctx: StepContext) -> dict[str, Any]:
    """Run the query over the input datasets and write the result, split or whole."""
    import duckdb

    tables = _tables(list(ctx.params["from"]))
    sql: str = ctx.params["sql"]
    split: dict[str, Any] | None = ctx.params.get("split") or None
    if split is not None:
        _check_split(split)

    # threads=1 until _threads says more are safe: see the module docstring. temp_directory: a
    # large sort may spill, and must not spill into the project folder (the default is ./.tmp).
    # allowed_paths: with file access off, DuckDB still reads the input files themselves, with
    # its own Parquet reader (an Arrow dataset instead was slower, held more memory and
    # imported pandas), and writes the output files with ftlang's own COPY (write_parts); the
    # query cannot name them (sqlpolicy refuses file functions, COPY and ATTACH). No
    # extension is fetched or loaded behind the query's back. preserve_insertion_order (the
    # default, said here because write_parts relies on it): an ordered query's parts keep
    # its order.
    con = _connect({"threads": 1, "preserve_insertion_order": True,
                    "temp_directory": str(ctx.cache / "duckdb-tmp"),
                    "autoinstall_known_extensions": False,
                    "autoload_known_extensions": False})
    columns: dict[str, list[str]] = {}
    out = {p: ctx.out / f"{p}.parquet" for p in split["parts"]} if split else {"data": ctx.out / "data.parquet"}
    try:
        rows_in: dict[str, int] = {}
        con.execute("SET allowed_paths = $paths",
                    {"paths": [str(p) for p in [*tables.values(), *out.values()]]})
        for name, path in tables.items():
            quoted = str(path).replace("'", "''")
            con.execute(f"CREATE TEMP VIEW {_quote(name)} AS SELECT * FROM read_parquet('{quoted}')")
            columns[name] = list(con.table(name).columns)
            rows_in[name] = con.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0]
        from ftlang.stdlib import sqlmacros

        sqlmacros.define(con)  # the stdlib's quality filters: ft_words(...), ft_repetition(...), ...
        _sandbox(con)
        deterministic = ctx.params.get("deterministic") is not False
        _review(con, sql, deterministic)
        statements = _statements(con, sql, columns)
        ordered = _has_top_level_order(con, statements[-1].query)  # the query orders its rows itself
        con.execute(f"SET threads = {_threads(con, statements, ordered, deterministic)}")
        con.execute("SET lock_configuration = true")  # last: nothing can be set after this
        names = _query(con, statements)
        # One query, a pure function of the inputs (set-up statements may seed random()),
        # runs again for each part; anything else runs once, into a table the parts are cut from.
        once = split is not None and (len(statements) > 1 or not deterministic)
        counts = write_parts(con, names, out, split, ordered, once)
        meta: dict[str, Any] = {"rows_in": rows_in, "rows_out": sum(counts.values())}
        if split is not None:
            meta["parts"] = counts
    except duckdb.Error as e:  # whatever DuckDB raises is the user's SQL or data: say so, no traceback
        raise _sql_error(e, columns) from None
    finally:
        con.close()
    ctx.log(f"{sum(rows_in.values())} rows in, {meta['rows_out']} out"
            + (f", parts {meta['parts']}" if split else ""))
    return meta


MEMORY_VAR = "FT_CURATE_MEMORY"


def _connect(config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """The curate's DuckDB. FT_CURATE_MEMORY (DuckDB's size syntax: 2GB, 500MB) caps the
    memory it holds; past it, sorts, DISTINCT, GROUP BY and joins spill to temp_directory.
    Unset, DuckDB's own limit holds (80% of RAM: fastest, but it grows with the rows). Not in
    any key: the rows, sorted by all columns, are the same bytes under any cap
    (tests/test_curate_memory.py)."""
    import duckdb

    limit = os.environ.get(MEMORY_VAR, "").strip()
    if limit:
        config = {**config, "memory_limit": limit}
    try:
        return duckdb.connect(":memory:", config=config)
    except duckdb.Error as e:
        if not limit:
            raise
        raise StepError(f"{MEMORY_VAR}={limit} is not a memory size DuckDB takes: {e}",
                        hint=f"write it like 2GB or 500MB, or unset {MEMORY_VAR}") from None


def _sandbox(con: duckdb.DuckDBPyConnection) -> None:
    """Settings the query cannot change: file access off, UTC (the caller then sets the
    threads and locks the configuration)."""
    # No progress bar: DuckDB draws one on stdout for queries over ~2 s, across ft's own output.
    con.execute("SET enable_progress_bar = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET TimeZone = 'UTC'")


# Physical operators whose output rows, as a set, do not depend on the order rows arrive
# in, and the aggregates that do not either (min/max/count; not first(), list(), or a float
# sum, whose rounding follows the order). A plan made only of these, sorted by all its
# columns at the end, gives the same file on any number of threads.
_ORDER_FREE_OPS = frozenset({
    "READ_PARQUET", "PYTHON_ARROW_SCAN", "ARROW_SCAN", "SEQ_SCAN", "TABLE_SCAN", "DUMMY_SCAN", "COLUMN_DATA_SCAN",
    "EMPTY_RESULT", "FILTER", "PROJECTION", "HASH_GROUP_BY", "PERFECT_HASH_GROUP_BY",
    "UNGROUPED_AGGREGATE", "HASH_JOIN", "NESTED_LOOP_JOIN", "PIECEWISE_MERGE_JOIN",
    "CROSS_PRODUCT", "UNION", "CTE", "CTE_SCAN"})
_ORDER_FREE_AGG = re.compile(r'"?(count_star|count|min|max)"?\(')


def _threads(con: duckdb.DuckDBPyConnection, statements: list[Any], ordered: bool,
             deterministic: bool) -> int:
    """The query's threads: the cores ftlang may use (cputhreads.choose) when its rows do
    not depend on the order they are produced in, else 1 (module docstring).

    Several threads only for one plain query (no set-up statements, no top-level ORDER BY,
    whose ties keep the input's order on one thread) whose plan is made of _ORDER_FREE_OPS:
    the result is then sorted by all columns, so the file is the same bytes on any number
    of threads (tests/test_curate_threads.py)."""
    import duckdb
    from ftlang.stdlib import cputhreads

    cores = cputhreads.choose()
    if cores == 1 or not deterministic or ordered or len(statements) != 1:
        return 1
    try:
        plan = json.loads(con.sql("EXPLAIN (FORMAT json) " + statements[0].query).fetchall()[0][1])
    except duckdb.Error:
        return 1  # the query itself fails later, with its own error
    return cores if all(_order_free(node) for node in plan) else 1


def _order_free(node: dict[str, Any]) -> bool:
    if node.get("name") not in _ORDER_FREE_OPS:
        return False
    aggs = node.get("extra_info", {}).get("Aggregates") or []
    aggs = [aggs] if isinstance(aggs, str) else aggs
    if any(not _ORDER_FREE_AGG.match(a) for a in aggs):
        return False
    return all(_order_free(child) for child in node.get("children", []))


def _review(con: duckdb.DuckDBPyConnection, sql: str, deterministic: bool) -> None:
    """The compiler's SQL rules, again: a program built without `ft check` meets them too."""
    from ftlang.stdlib import sqlpolicy

    found = sqlpolicy.review(sql, con, deterministic)
    if found:
        f = found[0]
        raise StepError(f"SQL refused: {f.message} (at `{sql[f.start:f.end]}`)", hint=f.help)


def _tables(inputs: list[Artifact]) -> dict[str, Path]:
    """Table name -> Parquet file of each input, in the order given."""
    tables: dict[str, Path] = {}
    refs: dict[str, str] = {}
    for art in inputs:
        name = art.node.split(".", 1)[1] if "." in art.node else art.node
        path = art.dataset_file()
        ref = name + (f".{art.port}" if art.port else "")
        if name in tables and tables[name] != path:
            raise StepError(f"inputs {refs[name]} and {ref} would both be table '{name}'",
                            hint=f"list '{name}' once and filter its rows in the query, "
                                 "or curate the parts in separate blocks")
        if not path.is_file():
            raise StepError(f"input {ref} has no rows file {path.name}", path=art.path,
                            hint="its producing step did not write this part")
        tables[name], refs[name] = path, ref
    return tables


def _check_split(split: dict[str, Any]) -> None:
    # The compiler checks these; the step checks again because a bad split writes wrong files.
    parts = split.get("parts") or {}
    if not parts:
        raise StepError("split has no parts", hint="write split { train = 0.9, heldout = 0.1, by = prompt }")
    for part, frac in parts.items():
        if not _PART_RE.fullmatch(part):
            raise StepError(f"split part '{part}' is not a plain name")
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac <= 1:
            raise StepError(f"split part '{part}' = {frac!r}: a fraction must be between 0 and 1")
    if not math.isclose(sum(parts.values()), 1.0, abs_tol=1e-6):
        raise StepError(f"split fractions sum to {sum(parts.values()):g}, not 1")
    if not split.get("by"):
        raise StepError("split needs `by`: the column whose hash decides the part")


def _statements(con: duckdb.DuckDBPyConnection, sql: str, columns: dict[str, list[str]]) -> list[Any]:
    """`sql`'s statements, the last one a query."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise _sql_error(e, columns) from None
    if not statements:
        raise StepError("the sql is empty", hint="write a query: SELECT ... FROM "
                        + next(iter(columns), "table"))
    if statements[-1].type != duckdb.StatementType.SELECT:
        raise StepError(f"the last SQL statement must be a query (SELECT ...), "
                        f"not {statements[-1].type.name}")
    return statements


def _query(con: duckdb.DuckDBPyConnection, statements: list[Any]) -> list[str]:
    """Run the set-up statements and make the query the view `_RESULT`; its columns."""
    *setup, last = statements
    for stmt in setup:  # e.g. CREATE MACRO: allowed, the connection is thrown away
        # A SELECT (setseed) comes back as a lazy relation: run it, or it never happens;
        # con.execute(...) would leave an unread result that blocks the next statement.
        rel = con.sql(stmt.query)
        if rel is not None:
            rel.to_arrow_table()
    names = list(con.sql(last.query).columns)
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise StepError(f"the query returns two columns named '{dupes[0]}'",
                        hint=f"give one an alias: ... AS {dupes[0]}_2")
    # The newline: a query that ends in a -- comment must not comment out what follows.
    con.execute(f"CREATE TEMP VIEW {_RESULT} AS\n{last.query}\n")
    return names


def _has_top_level_order(con: duckdb.DuckDBPyConnection, query: str) -> bool:
    """Whether the query's outermost SELECT (or set operation) has an ORDER BY.

    sqlglot reads the query; where it cannot, DuckDB's own parse tree answers."""
    import sqlglot
    from sqlglot import exp

    try:
        trees = [t for t in sqlglot.parse(query, read="duckdb") if t is not None]
    except sqlglot.errors.SqlglotError:
        trees = []
    if not trees:
        return _duckdb_has_order(con, query)
    node: exp.Expression | None = trees[-1]
    # `(SELECT ... ORDER BY x)` as a whole statement is ordered too
    while isinstance(node, (exp.Subquery, exp.Paren)):
        if node.args.get("order"):
            return True
        node = node.this
    return node is not None and bool(node.args.get("order"))


def _duckdb_has_order(con: duckdb.DuckDBPyConnection, query: str) -> bool:
    tree = json.loads(con.sql("SELECT json_serialize_sql(?)", params=[query]).fetchall()[0][0])
    if tree.get("error") or not tree.get("statements"):
        return False  # sorting an ordered result loses order; a failing query errors anyway
    mods = tree["statements"][-1]["node"].get("modifiers", [])
    return any(m.get("type") == "ORDER_MODIFIER" for m in mods)


def _sql_error(e: Exception, columns: dict[str, list[str]]) -> StepError:
    import duckdb

    listing = "; ".join(f"{t}({', '.join(cols)})" for t, cols in columns.items())
    if isinstance(e, duckdb.OutOfMemoryException):
        # DuckDB's own advice (SET threads, SET memory_limit) is what a curate cannot do.
        limit = os.environ.get(MEMORY_VAR, "").strip()
        return StepError(f"DuckDB ran out of memory: {str(e).split(chr(10))[0]}",
                         hint=(f"raise {MEMORY_VAR} (now {limit}) or unset it" if limit else
                               f"set {MEMORY_VAR} (e.g. 4GB) below the free memory: past it, "
                               "DuckDB spills to disk"))
    if isinstance(e, duckdb.PermissionException):
        hint = (f"a curate query reads only the datasets in `from`: {listing}. Declare other "
                "files as dataset blocks, so their content enters the cache key")
    elif isinstance(e, duckdb.CatalogException):
        hint = f"each dataset in `from` is a table named after its block: {listing}"
    elif "configuration has been locked" in str(e):
        hint = "a curate query cannot change DuckDB's settings: remove the statement"
    else:
        hint = f"tables: {listing}"
    return StepError(f"SQL error: {e}", hint=hint)


_PART = "__ft_part"
_RESULT = "__ft_result"
# DuckDB's own Parquet writer (COPY): every core compresses, no row passes through Python.
# The bytes depend only on the rows and their order: the same on any number of threads
# (tests/test_curate_threads.py). Row groups of parquet_out's size, its codec and level.
_COPY_OPTIONS = "FORMAT parquet, COMPRESSION {codec}, COMPRESSION_LEVEL {level}, ROW_GROUP_SIZE {rows}"


def write_parts(con: duckdb.DuckDBPyConnection, names: list[str], out: dict[str, Path],
                split: dict[str, Any] | None, ordered: bool, once: bool) -> dict[str, int]:
    """The view `_RESULT` written to `out` (one file, or one per split part, in declared
    order); rows per file. Each file's rows are sorted by all columns unless the query
    ordered them (then they keep its order: that path runs on one thread)."""
    from ftlang.stdlib import parquet_out

    select = ", ".join(_stored(con, names))
    source = _RESULT
    if split is not None:
        source = f"(SELECT *, {_part_case(split, names)} AS {_PART} FROM {_RESULT})"
        if once:
            con.execute(f"CREATE TEMP TABLE __ft_rows AS SELECT * FROM {source}")
            source = "__ft_rows"
    options = _COPY_OPTIONS.format(codec=parquet_out.COMPRESSION, level=parquet_out.COMPRESSION_LEVEL,
                                   rows=parquet_out.ROW_GROUP_SIZE)
    counts: dict[str, int] = {}
    for i, (part, path) in enumerate(out.items()):
        query = f"SELECT {select} FROM {source}"
        if split is not None:
            query += f" WHERE {_PART} = {i}"
        if not ordered:
            query += " ORDER BY ALL"
        quoted = str(path).replace("'", "''")
        counts[part] = int(con.execute(f"COPY ({query}) TO '{quoted}' ({options})").fetchone()[0])
    return counts


# Types DuckDB's Parquet writer would store as something else: written as the type the
# rows read back as everywhere else in ftlang (HUGEINT as DOUBLE would lose digits).
_CAST = {"HUGEINT": "DECIMAL(38, 0)", "UHUGEINT": "DECIMAL(38, 0)", "UUID": "VARCHAR", "JSON": "VARCHAR"}
# Types Parquet cannot hold as themselves (and, nested, the ones _CAST rewrites at the top).
_REFUSED = re.compile(r"\b(INTERVAL|UNION|TIME WITH TIME ZONE|HUGEINT|UHUGEINT|UUID|JSON)\b")


def _stored(con: duckdb.DuckDBPyConnection, names: list[str]) -> list[str]:
    """The select list that writes each result column as a Parquet type that keeps it."""
    from ftlang.stdlib import parquet_out

    types = {row[0]: str(row[1]) for row in con.execute(f"DESCRIBE {_RESULT}").fetchall()}
    exprs = []
    for name in names:
        dtype = types[name]
        if dtype in _CAST:
            exprs.append(f"CAST({_quote(name)} AS {_CAST[dtype]}) AS {_quote(name)}")
        elif _REFUSED.search(dtype):
            raise StepError(f"cannot store column '{name}' of type {dtype} as Parquet",
                            hint=parquet_out.STORE_HINT)
        else:
            exprs.append(_quote(name))
    return exprs


def _part_case(split: dict[str, Any], names: list[str]) -> str:
    """Each row's part index (in declared part order) as a SQL expression of its `by` key."""
    parts: dict[str, float] = split["parts"]
    by = _resolve_column(split["by"], names)
    keys = list(parts)
    if len(keys) == 1:
        return "0"
    bounds, total = [], 0.0
    for key in keys[:-1]:
        total += parts[key]
        bounds.append(total)
    # The last part takes everything above the previous bound: fractions that sum to
    # 0.9999999 must not drop rows. NULL keys hash as '' (all in one part, like any key).
    u = (f"CAST(CAST(md5_number(coalesce(CAST({_quote(by)} AS VARCHAR), '') || ':' || "
         f"'{int(split.get('seed') or 0)}') & {(1 << _HASH_BITS) - 1} AS UBIGINT) AS DOUBLE) / {1 << _HASH_BITS}")
    cases = " ".join(f"WHEN {u} < {b!r} THEN {i}" for i, b in enumerate(bounds))
    return f"CASE {cases} ELSE {len(keys) - 1} END"


def _resolve_column(by: str, names: list[str]) -> str:
    if by in names:
        return by
    folded = [n for n in names if n.lower() == by.lower()]  # DuckDB names are case-insensitive
    if len(folded) == 1:
        return folded[0]
    close = difflib.get_close_matches(by, names, n=1)
    raise StepError(f"split by '{by}': the query returns no column '{by}' (columns: {', '.join(names)})",
                    hint=f"did you mean '{close[0]}'?" if close else "select the column in the query")


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'
