"""Pass 3: dataset contracts. Which columns each dataset block produces, and whether
every consumer finds the columns it needs, before anything runs.

- `dataset`: the declared schema, plus the columns the file's first rows (JSONL), header
  (CSV) or footer (Parquet) show. A schema alone is a lower bound (other columns pass
  through), so a missing column is only an error when the file was read.
- `curate`: the query is parsed with sqlglot (DuckDB dialect). A syntax error points into
  the SQL at its line in the .ft file; the tables it reads become the block's inputs when
  `from` is left out; a column that none of its tables has is an error; the output
  columns are the SELECT list (`*` expands to the input's columns).
- Consumers: the columns each step reads come from its kind's `StepSpec.needs` hook
  (stdlib: train's method or objective, eval's fields, `select` for a train block's
  `select = ...`); a split's `by` must be an output column.

The checks are conservative: a query too dynamic to follow (a table function, a lambda,
a column produced by a subquery) makes its columns unknown, never an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ftlang.compiler import sqlrules, sqlshape
from ftlang.compiler import types as T
from ftlang.compiler.ir import FileValue, Node, RefValue
from ftlang.lang import ast
from ftlang.lang.diagnostics import Label, did_you_mean
from ftlang.stdlib import registry
from ftlang.stdlib import select as select_step
from ftlang.stdlib.spec import Call

PEEK_ROWS = 100  # JSONL rows read to learn the columns


@dataclass(frozen=True)
class Columns:
    names: tuple[str, ...]
    exact: bool  # False: at least these (a schema without a readable file)
    span: ast.Span | None = None  # where they are written (the schema, the SELECT list)
    origin: str = ""  # "the schema", "the query", "data/x.jsonl"


def check(nodes: dict[str, Node], ctx: T.Ctx, memo: dict[Any, Any] | None = None) -> dict[Any, Any]:
    """Checks the columns; returns the DuckDB answers it used (sqlrules.SqlChecker's memo)."""
    c = _Contracts(nodes, ctx, memo)
    c.run()
    return c.sql.used


class _Contracts:
    def __init__(self, nodes: dict[str, Node], ctx: T.Ctx, memo: dict[Any, Any] | None = None) -> None:
        self.nodes = nodes
        self.ctx = ctx
        self.columns: dict[str, Columns | None] = {}
        self.busy: set[str] = set()
        self.parts: dict[str, dict[str | None, Columns]] = {}  # a declared `columns` hook's parts
        self.sql = sqlrules.SqlChecker(nodes, ctx, memo)  # DuckDB's view of the queries

    def run(self) -> None:
        for nid in list(self.nodes):
            self.of(nid)
        for node in self.nodes.values():
            needs = registry.SPECS[node.kind].needs
            for want in needs(node.params) if needs is not None else []:
                value = node.params.get(want.attr)
                for ref in value if isinstance(value, list) else [value]:
                    self.need(node, want.columns, ref)
            if node.select is not None:  # the select step measures with the block's fields
                for want in select_step.needs(node.params):
                    self.need(node, want.columns, node.select.data, what="select")

    # ---- what a block produces ---------------------------------------------------------

    def of(self, nid: str) -> Columns | None:
        if nid in self.columns:
            return self.columns[nid]
        if nid in self.busy or nid not in self.nodes:
            return None  # a cycle (graph.build reports it) or a block with errors
        self.busy.add(nid)
        node = self.nodes[nid]
        cols = None
        if node.kind == "dataset":
            cols = _dataset_columns(node, self.ctx)
        elif node.kind == "curate":
            cols = self.curate(node)
        elif node.kind in ("clean", "mix", "generate"):
            cols = self.derived(node)
        elif registry.SPECS[node.kind].columns is not None:
            declared = registry.SPECS[node.kind].columns(node.params)  # type: ignore[misc]
            if declared is not None:
                self.parts[nid] = {port: Columns(tuple(names), True, node.span, f"the {node.kind} step")
                                   for port, names in declared.items()}
                cols = self.parts[nid].get(None)
        self.columns[nid] = cols
        self.busy.discard(nid)
        return cols

    def of_ref(self, ref: RefValue) -> Columns | None:
        """The columns of the part a reference names (a declared part may have its own)."""
        whole = self.of(ref.node)
        if ref.port is not None and ref.node in self.parts:
            return self.parts[ref.node].get(ref.port)
        return whole

    def derived(self, node: Node) -> Columns | None:
        """clean keeps its input's columns; mix the columns all its inputs share (and its
        source_column); generate its `keep` columns and its parse rule's."""
        p = node.params
        if node.kind == "generate":
            from ftlang.stdlib import synth

            parse, keep = p.get("parse"), p.get("keep")
            try:
                made = synth.columns_of(parse) if hasattr(parse, "args") else None
            except (re.error, KeyError, TypeError):  # a bad pattern: its rule reports it
                made = None
            if made is None or not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
                return None
            return Columns(tuple(dict.fromkeys([*keep, *made])), True, node.span, "the parse rule")
        refs = p.get("from")
        refs = refs if isinstance(refs, list) else [refs]
        if not refs or not all(isinstance(r, RefValue) for r in refs):
            return None
        inputs = [self.of_ref(r) for r in refs]
        if any(c is None or not c.exact for c in inputs):
            return None
        names = [n for n in inputs[0].names if all(n in c.names for c in inputs[1:])]  # type: ignore[union-attr]
        if node.kind == "mix" and isinstance(p.get("source_column"), str):
            names.append(p["source_column"])
        return Columns(tuple(names), True, inputs[0].span if node.kind == "clean" else None,  # type: ignore[union-attr]
                       inputs[0].origin if node.kind == "clean" else "its inputs")  # type: ignore[union-attr]

    def curate(self, node: Node) -> Columns | None:
        sql = node.params.get("sql")
        span = node.attr_spans.get("sql")
        if not isinstance(sql, str) or span is None:
            return None
        where = _SqlPosition(sql, span, self.ctx)
        verdict = self.sql.review(node, sql, where)
        if verdict == sqlrules.REFUSED:
            return None  # SET, CALL, ...: sqlglot would misread them; the columns stay unknown
        mark = len(self.ctx.diagnostics)
        shape = self.sql.shape(sql)
        if shape.error is not None:
            e = shape.error
            self.ctx.error("FT0126", f"SQL syntax error: {e.message}", where.span(e.start, e.end), e.label, help=e.help)
        if not shape.known:
            return None
        made = self.sql.created(sql)  # CREATE TEMP TABLE x before the query: x is no input
        tables = {n: (s, e) for n, s, e in shape.tables if n.lower() not in made}
        inputs = node.params.get("from")
        if inputs is None:
            inputs = self.infer_from(node, tables, where)
            if inputs is None:
                return None
            node.params["from"] = inputs
        known = {r.node.split(".", 1)[1]: r for r in inputs if isinstance(r, RefValue)}
        for name, t in tables.items():
            if name not in known:
                guess = did_you_mean(name, list(known))
                self.ctx.error("FT0102", f"the query reads `{name}`, which is not in `from`",
                               where.span(*t), "unknown table",
                               help=f"did you mean `{guess}`?" if guess else
                               f"add it: from = [{', '.join([*known, name])}]" if name in self.ctx.symbols.blocks
                               else f"the query can read: {', '.join(known) or 'nothing'}")
        table_cols = {name: self.of_ref(ref) for name, ref in known.items()}
        out = _output_columns(shape, table_cols, where, self.ctx)
        split = node.params.get("split")
        if out is not None and out.exact and isinstance(split, dict) and isinstance(split.get("by"), str):
            by = split["by"]
            if by not in out.names:
                guess = did_you_mean(by, out.names)
                self.ctx.error("FT0125", f"split by `{by}`, but the query returns no such column",
                               node.attr_spans.get("split.by", span), "not a column of the result",
                               extra=[Label(out.span, f"returns {', '.join(out.names)}", False)] if out.span else [],
                               help=f"did you mean `{guess}`?" if guess else
                               f"split by one of: {', '.join(out.names)}")
        if verdict == "ok" and len(self.ctx.diagnostics) == mark and \
                all(c is not None and c.exact for c in table_cols.values()):
            self.sql.bind(node, sql, where, table_cols,  # type: ignore[arg-type]
                          {name: ref.node for name, ref in known.items()})
        return out

    def infer_from(self, node: Node, tables: dict[str, tuple[int, int]], where: _SqlPosition) -> list[Any] | None:
        """`from` left out: the tables the query reads, each a dataset block."""
        refs: list[Any] = []
        ok = True
        for name, pos in tables.items():
            block = self.ctx.symbols.blocks.get(name)
            at = where.span(*pos)
            if block is None:
                datasets = [n for n, b in self.ctx.symbols.blocks.items()
                            if registry.STEPS[b.kind.name].output == "dataset"]
                guess = did_you_mean(name, datasets)
                self.ctx.error("FT0102", f"the query reads `{name}`, but no block has that name", at,
                               "unknown table", help=f"did you mean `{guess}`?" if guess else
                               f"datasets here: {', '.join(datasets) or 'none'}")
                ok = False
                continue
            v = T.check(ast.Ref((name,), at), registry.STEPS["curate"].signature.attrs[0], self.ctx)
            if v is T.INVALID:
                ok = False
                continue
            refs += v
        if not tables:
            self.ctx.error("FT0105", f"curate `{node.name}` reads no table", node.span, "no input",
                           help="add `from = <dataset>` or a FROM clause")
            return None
        return refs if ok else None

    # ---- what a consumer needs ---------------------------------------------------------

    def need(self, node: Node, wanted: tuple[tuple[Any, str | None], ...], ref: Any, what: str = "") -> None:
        """`wanted`: (column, the attribute that names it) pairs, from a StepSpec.needs hook."""
        if not isinstance(ref, RefValue) or not wanted:
            return
        if not all(isinstance(c, str) for c, _ in wanted):
            return  # a field swept or from env: not known here
        cols = self.of_ref(ref)
        if cols is None or not cols.exact:
            return
        missing = [(c, a) for c, a in wanted if c not in cols.names]
        if not missing:
            return
        names = ", ".join(f"`{c}`" for c, _ in missing)
        who = f"{node.kind} `{node.name}`" + (f" (its {what})" if what else "")
        fixes = []
        claimed = {c for c, _ in wanted}
        spare = [c for c in cols.names if c not in claimed]
        # A column named inside a value (`order = curriculum(by = difficulty)`, a prompt's
        # `{topic}`), not the value itself (`prompt_field = "q"`): point at that attribute.
        named = [a for c, a in missing if a is not None and a in node.attr_spans
                 and isinstance(node.params.get(a), (Call, str, list)) and node.params.get(a) != c]
        calls: list[str] = []
        for c, a in missing:
            guess = did_you_mean(c, spare) or (spare[0] if len(spare) == 1 and len(missing) == 1 else None)
            if a in named:
                calls.append(f"`{a}` names a column of {ref.label}" + (f": did you mean `{guess}`?" if guess else ""))
            elif a is not None and guess:
                fixes.append(f'{a} = "{guess}"')
            elif a is not None:
                fixes.append(f'{a} = "<column>"')
        upstream = self.nodes.get(ref.node)
        ways = calls + ([f"set {', '.join(fixes)}"] if fixes else [])
        if upstream is not None and upstream.kind == "curate":
            ways.append(f"rename in the query (SELECT <column> AS {missing[0][0]})")
        if node.kind == "train" and "text" in cols.names and node.params.get("objective") == "sft":
            ways.append("train on raw text with objective = clm")
        help_ = " or ".join(ways) if ways else None
        extra = [Label(cols.span, f"{ref.label} has {', '.join(cols.names) or 'no columns'}", False)] \
            if cols.span else []
        span = ref.span or node.span
        if named:
            extra = [Label(span, f"{ref.label} has {', '.join(cols.names) or 'no columns'}", False)]
            span = node.attr_spans[named[0]]
        self.ctx.error("FT0125", f"{who} needs column{'s' if len(missing) > 1 else ''} {names}, "
                       f"which {ref.label} does not have", span,
                       f"has {', '.join(cols.names)}" if not extra else "missing columns",
                       help=help_, extra=extra)


# ---- datasets -------------------------------------------------------------------------


def _dataset_columns(node: Node, ctx: T.Ctx) -> Columns | None:
    schema = node.params.get("schema") or {}
    span = node.attr_spans.get("schema")
    source = node.params.get("source")
    path = source.args.get("path") if source is not None and hasattr(source, "args") else None
    peeked = None
    if isinstance(path, FileValue):
        peeked = _peek(source.name, path.abs, path.rel, str(source.args.get("delimiter") or ","))
        if isinstance(peeked, _Unreadable):
            ctx.error(peeked.code, peeked.message, path.span or node.span, peeked.label, help=peeked.help)
            return None  # columns unknown: consumers are not blamed for it
    shape = node.params.get("shape")
    if isinstance(shape, str):
        from ftlang.stdlib.formats import SHAPES

        # The step turns the file's columns into the shape's: downstream sees those.
        missing = [c for c in SHAPES[shape].reads if peeked is not None and c not in peeked]
        if missing:
            ctx.error("FT0282", f"shape = {shape} reads the columns {', '.join(SHAPES[shape].reads)}; "
                      f"{path.rel} has no {', '.join(missing)}", node.attr_spans.get("shape") or node.span,
                      "not this file's layout", help=f"the file's columns are {', '.join(peeked or ())}")
            return None
        return Columns(SHAPES[shape].makes, False, node.attr_spans.get("shape"), f"shape = {shape}")
    if peeked is not None:
        names = tuple(dict.fromkeys([*schema, *peeked]))
        return Columns(names, True, span, path.rel if isinstance(path, FileValue) else "")
    if schema:
        return Columns(tuple(schema), False, span, "the schema")
    return None


@dataclass(frozen=True)
class _Unreadable:
    code: str
    message: str
    label: str
    help: str | None = None


def _peek(kind: str, path: str, rel: str, delimiter: str) -> tuple[str, ...] | _Unreadable | None:
    """Column names from the start of a file, read as the dataset step reads it
    (stdlib.tabular); _Unreadable when the step could not open it (a folder, a pipe, a
    link loop, no permission) or a CSV header shows the wrong delimiter; None when the
    columns cannot be known cheaply."""
    from pathlib import Path

    from ftlang.stdlib import tabular

    if kind not in ("jsonl", "csv", "parquet"):
        return None  # hf_disk reads a folder; the step checks it
    problem = tabular.check_file(Path(path), rel)  # stat before opening: a pipe would block
    if problem is not None:
        return _Unreadable("FT0131", str(problem), "cannot be read", problem.hint)
    st = os.stat(path)  # in the key: a long-lived process (the language server) sees edits
    return _peek_file(kind, path, rel, delimiter, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _peek_file(kind: str, path: str, rel: str, delimiter: str, size: int,
               mtime_ns: int) -> tuple[str, ...] | _Unreadable | None:
    from pathlib import Path

    from ftlang.stdlib import tabular
    from ftlang.stdlib.spec import StepError

    file = Path(path)
    try:
        if kind == "jsonl":
            from ftlang.stdlib.formats import is_json_array

            if is_json_array(file):
                return _Unreadable("FT0281", f"{rel} is one JSON array, not JSON Lines", "read as JSON Lines",
                                   f'source = json("{rel}") reads an array of objects')
            return tuple(tabular.jsonl_columns(file, rel, PEEK_ROWS) or ()) or None
        if kind == "csv":
            header = tabular.csv_header(file, rel, delimiter)
            sep = tabular.wrong_delimiter(file, rel, delimiter) if len(header) == 1 else None
            if sep:
                return _Unreadable("FT0125", f"{rel}: the header is one column, {header[0]!r}: wrong delimiter",
                                   f"read with delimiter {delimiter!r}", tabular.delimiter_hint(rel, sep))
            return tuple(header) or None
        if kind == "parquet":
            return tuple(tabular.parquet_columns(file))
    except (OSError, StepError, ImportError):
        return None  # bad bytes or rows: the dataset step names the line
    except Exception:  # a malformed Parquet footer: the dataset step reports it properly
        return None
    return None


# ---- SQL ------------------------------------------------------------------------------


def _output_columns(shape: sqlshape.Shape, tables: dict[str, Columns | None], where: _SqlPosition,
                    ctx: T.Ctx) -> Columns | None:
    """The columns a query returns; unknown columns of simple queries are reported."""
    if not shape.select:
        return None
    span = where.span(*shape.extent) if shape.extent else None
    if shape.renamed:
        return None  # FROM t AS x(a, b) renames the columns
    aliases = dict(shape.aliases)  # table alias -> table name
    if shape.simple:
        _check_columns(shape, tables, aliases, where, ctx)
    names: list[str] = []
    exact = True
    for p in shape.outputs:
        if p is None:
            return None  # COLUMNS(...) and unnest(...) make columns we cannot name here
        if isinstance(p, str):
            names.append(p)
            continue
        if p.renames:
            return None
        sources = [aliases.get(p.qualifier, p.qualifier)] if p.qualifier else list(dict.fromkeys(aliases.values()))
        for s in sources:
            cols = tables.get(s)
            if cols is None:
                return None
            exact = exact and cols.exact
            names += [c for c in cols.names if c not in p.dropped]
    return Columns(tuple(dict.fromkeys(names)), exact, span, "the query")


def _check_columns(shape: sqlshape.Shape, tables: dict[str, Columns | None], aliases: dict[str, str],
                   where: _SqlPosition, ctx: T.Ctx) -> None:
    known = {a: tables.get(name) for a, name in aliases.items()}
    if not known or any(c is None or not c.exact for c in known.values()):
        return
    selected = set(shape.selected)
    all_cols = {c for cols in known.values() if cols for c in cols.names}
    for col in shape.columns:
        name, qual = col.name, col.qualifier
        if qual:
            cols = known.get(qual)
            if cols is None:
                continue  # a struct field or something sqlglot reads as a qualifier
            pool = set(cols.names)
        else:
            pool = all_cols | selected
        if name in pool or name.lower() in {c.lower() for c in pool}:
            continue
        guess = did_you_mean(name, sorted(pool))
        ctx.error("FT0125", f"no column `{name}` in {qual or ', '.join(dict.fromkeys(aliases.values()))}",
                  where.span(col.start, col.end), "unknown column",
                  help=(f"did you mean `{guess}`? " if guess else "") + f"columns: {', '.join(sorted(pool))}")


class _SqlPosition:
    """Maps offsets in a query (as the step sees it) to spans in the .ft file."""

    def __init__(self, sql: str, span: ast.Span, ctx: T.Ctx) -> None:
        self.sql = sql
        self.file = span.file
        self.fallback = span
        self.starts: list[tuple[int, int]] = []  # per SQL line: (.ft line, .ft col of its first char)
        from ftlang.lang.ast import source_lines

        source = source_lines(ctx.sources.get(span.file) or ctx.source)  # split once per file
        sql_lines = sql.split("\n")
        if span.line == span.end_line:
            quote = 3 if source and 1 <= span.line <= len(source) and \
                source[span.line - 1][span.col - 1:span.col + 2] == '"""' else 1
            self.starts = [(span.line, span.col + quote)]
            return
        physical = [(ln, source[ln - 1] if ln <= len(source) else "")
                    for ln in range(span.line, span.end_line + 1)]
        # The opener's line: text after the `"""`.
        physical[0] = (span.line, " " * (span.col + 2) + physical[0][1][span.col + 2:])
        i = 0
        for text in sql_lines:
            while i < len(physical) and text.strip() and text not in physical[i][1]:
                i += 1
            if i >= len(physical):
                self.starts = []
                return
            ln, raw = physical[i]
            self.starts.append((ln, raw.find(text) + 1 if text else 1))
            i += 1

    def span(self, start: int, end: int) -> ast.Span:
        if not self.starts:
            return self.fallback
        line, col = self._pos(start)
        end_line, end_col = self._pos(max(start + 1, end) - 1)
        if end_line != line:
            end_col = col + 1
        return ast.Span(self.file, line, col, line, end_col + 1)

    def _pos(self, offset: int) -> tuple[int, int]:
        offset = max(0, min(offset, max(len(self.sql) - 1, 0)))
        k = self.sql.count("\n", 0, offset)
        k = min(k, len(self.starts) - 1)
        line_start = self.sql.rfind("\n", 0, offset) + 1
        ln, col = self.starts[k]
        return ln, col + offset - line_start


__all__ = ["Columns", "check"]
