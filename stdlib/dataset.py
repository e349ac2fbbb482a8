"""dataset: rows read from a local JSONL, CSV or Parquet file, checked against an optional schema.

In:  params["source"], a Call jsonl(path) / csv(path, delimiter) / parquet(path) with an
     absolute path; params["schema"], None or {column: "str" | "int" | "float" | "bool"}.
Out: `data.parquet` under ctx.out, written byte-for-byte deterministically, and
     {"rows": n, "columns": [...]}.

The schema is a contract, not a projection: the declared columns must be present, non-null
and of the declared type in every row (they are cast to string/int64/float64/bool); other
columns pass through with their inferred types. Text that looks like a date stays text.

Pyarrow parses the file in one fast pass; only when it fails (or the schema does not hold) a
line-by-line Python pass (`locate.py`) names the offending file, line and column. Bad data is an
error, never a silent rewrite: text that is not UTF-8 (pyarrow would keep it as bytes), a
CSV quote never closed (pyarrow would swallow the rest of the file into one cell), a
one-column CSV header that another delimiter splits, an integer that a float column would
round (pyarrow reads 10**23 as 1e+23), a number pyarrow reads as inf (2e308), a lone UTF-16
surrogate, nesting deeper than `locate.MAX_DEPTH` (the cache's Parquet could not read it
back). Opening the file goes through `tabular.check_file`, so a pipe, a link loop or an
unreadable file fails at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlang.stdlib import formats, locate, parquet_out, tabular
from ftlang.stdlib.spec import REQUIRED, Attr, Call, Signature, StepContext, StepError, StepSpec

if TYPE_CHECKING:  # pyarrow costs import time; steps that do not run must not pay it
    import pyarrow as pa

# The column types a schema may declare, each with the DuckDB type the compiler binds a
# curate query's input columns as (the step casts to string/int64/float64/bool).
SCHEMA_TYPES = {"str": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN"}

# ---- declarations (the compiler reads these) -----------------------------------------------

SOURCES = {
    "jsonl": Signature("jsonl", (Attr("path", "path", REQUIRED, "a JSON Lines file, one object per line"),),
                       "Rows from a local JSON Lines file.", positional=("path",)),
    "json": Signature("json", (Attr("path", "path", REQUIRED, "a JSON file holding one array of objects"),),
                      "Rows from a local JSON file that is one array (`[{...}, {...}]`).", positional=("path",)),
    "csv": Signature("csv", (Attr("path", "path", REQUIRED, "a CSV file with a header row"),
                             Attr("delimiter", "str", ",", "the field separator")),
                     "Rows from a local CSV file.", positional=("path",)),
    "parquet": Signature("parquet", (Attr("path", "path", REQUIRED, "a Parquet file"),),
                         "Rows from a local Parquet file.", positional=("path",)),
    "hf_disk": Signature("hf_disk", (
        Attr("path", "path", REQUIRED, "a folder written by datasets' save_to_disk (its files' content enters the key)"),
        Attr("split", "str", None, "the split to read when the folder holds a DatasetDict"),
    ), "Rows from a saved Hugging Face dataset folder (datasets.load_from_disk).", positional=("path",)),
    "hub": Signature("hub", (
        Attr("name", "str", REQUIRED, "a hub dataset id such as org/name"),
        Attr("revision", "str", REQUIRED, "the dataset commit to pin: the key sees only this"),
        Attr("split", "str", "train", "the split to read"),
        Attr("config", "str", None, "the dataset configuration (subset) name"),
    ), "Rows from a hub dataset pinned to a revision. Offline (HF_HUB_OFFLINE=1, or no "
       "network) it fails at once with a clear message.", positional=("name",)),
}


def summary(meta: dict[str, Any]) -> str:
    return f"{meta['rows']} rows" if isinstance(meta.get("rows"), int) else ""


SPEC = StepSpec(
    kind="dataset", version=1, output="dataset", run="ftlang.stdlib.dataset:run",
    signature=Signature("dataset", (
        Attr("source", "call[source]", REQUIRED, "where the rows come from: jsonl(...), csv(...), parquet(...)"),
        Attr("shape", "enum", None, "the rows' layout, turned into ftlang's columns: alpaca ("
             + formats.SHAPES["alpaca"].doc + "), sharegpt (" + formats.SHAPES["sharegpt"].doc + ")",
             choices=tuple(formats.SHAPES)),
    ), "Rows read from a local file, checked against an optional schema."),
    subblocks={"schema": Signature("schema", (), "column: type pairs (str, int, float, bool)")},
    summary=summary,
)

_BLOCK_SIZE = 1 << 20  # pyarrow's default; grown on demand for rows longer than a block

_EXACT_FLOAT_INT = 1 << 53  # beyond it a float64 no longer holds every integer


def run(ctx: StepContext) -> dict[str, Any]:
    """Read the source file into `data.parquet`, checking the schema when one is declared."""
    source: Call = ctx.params["source"]
    schema: dict[str, str] | None = ctx.params.get("schema") or None
    _check_schema_decl(schema)
    if source.name in ("hf_disk", "hub"):
        table, shown = _read_hf(ctx, source, schema)
        return _finish(ctx, table, shown)
    path = Path(source["path"])
    shown = _shown(path, ctx.project)
    problem = tabular.check_file(path, shown, f"paths in a .ft file are relative to its folder ({ctx.project})")
    if problem is not None:
        raise problem
    if path.stat().st_size == 0:
        raise StepError("the file is empty", path=shown)

    if source.name == "jsonl" and formats.is_json_array(path):
        raise StepError("the file is one JSON array, not JSON Lines (one object per line)", path=shown, row=1,
                        hint=f'read it with source = json("{source["path"]}")')
    if source.name == "json":
        table = _apply_schema(formats.read_json(path, shown), schema, shown, lambda: None)
    elif source.name == "jsonl":
        table = _read_jsonl(path, shown, schema)
    elif source.name == "csv":
        table = _read_csv(path, shown, schema, source.get("delimiter", ","))
    elif source.name == "parquet":
        if ctx.params.get("shape") is None:
            return _stream_parquet(ctx, path, shown, schema)
        table = _read_parquet(path, shown, schema)
    else:
        raise StepError(f"unknown source '{source.name}'", hint="use jsonl(...), json(...), csv(...) or parquet(...)")

    return _finish(ctx, table, shown)


def _finish(ctx: StepContext, table: pa.Table, shown: str) -> dict[str, Any]:
    if ctx.params.get("shape") is not None and table.num_rows:  # hand-built params lack it
        table = formats.reshape(table, ctx.params["shape"], shown)
    _check_shape(table.num_rows, list(table.column_names), shown)
    parquet_out.write_table(table, ctx.out / "data.parquet")
    return _done(ctx, table.num_rows, list(table.column_names), shown)


def _check_shape(rows: int, columns: list[str], shown: str) -> None:
    if rows == 0:
        raise StepError("the file has no rows", path=shown)
    if not columns:
        raise StepError("the rows have no columns", path=shown)
    dupes = sorted({n for n in columns if columns.count(n) > 1})
    if dupes:
        raise StepError(f"duplicate column '{dupes[0]}'", path=shown,
                        hint="every column needs a distinct name")


def _done(ctx: StepContext, rows: int, columns: list[str], shown: str) -> dict[str, Any]:
    ctx.log(f"{shown}: {rows} rows, columns {', '.join(columns)}")
    return {"rows": rows, "columns": columns}


def _read_hf(ctx: StepContext, source: Call, schema: dict[str, str] | None) -> tuple[pa.Table, str]:
    """Rows of a saved Hugging Face dataset folder (hf_disk) or a pinned hub dataset (hub)."""
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    split = source.get("split")
    if source.name == "hf_disk":
        from datasets import DatasetDict, load_from_disk

        path = Path(source["path"])
        shown = _shown(path, ctx.project)
        if not path.is_dir():
            raise StepError("not a folder: hf_disk reads a folder written by save_to_disk()", path=shown)
        try:
            ds = load_from_disk(str(path))
        except (FileNotFoundError, ValueError, OSError) as e:
            raise StepError(f"not a saved Hugging Face dataset: {e}", path=shown,
                            hint="write it with Dataset.save_to_disk(folder)") from None
        if isinstance(ds, DatasetDict):
            names = list(ds)
            if split is None and len(names) == 1:
                split = names[0]
            if split not in ds:
                raise StepError(f"the saved dataset has the splits {', '.join(names)}"
                                + (f", not {split!r}" if split else ": say which"), path=shown,
                                hint=f'hf_disk("{source["path"]}", split = "{names[0]}")')
            ds = ds[split]
        elif split is not None:
            ctx.log(f"{shown} holds one split: split = {split!r} is ignored")
    else:
        from ftlang.stdlib.model import HUB_PROBE_TIMEOUT_S, _hub_reachable, _offline

        name, revision = source["name"], source.get("revision")
        shown = f"hub:{name}@{revision}"
        why = "HF_HUB_OFFLINE is set" if _offline() else None
        if why is None:
            import os

            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
            if not _hub_reachable(endpoint, HUB_PROBE_TIMEOUT_S):
                why = f"no connection to {endpoint} within {HUB_PROBE_TIMEOUT_S:.0f} s"
        if why is not None:
            raise StepError(f"cannot fetch hub dataset {name!r}: the Hugging Face hub is unreachable ({why})",
                            hint="save it where the hub is reachable (load_dataset(...).save_to_disk(\"data/NAME\")), "
                                 "then write source = hf_disk(\"data/NAME\")")
        from datasets import load_dataset

        try:
            ds = load_dataset(name, source.get("config"), revision=revision, split=split or "train",
                              cache_dir=str(ctx.cache / "hub-datasets"))
        except Exception as e:  # the hub client raises many types; all mean "could not get it"
            raise StepError(f"cannot fetch hub dataset {name!r}: {type(e).__name__}: {e}",
                            hint="check the dataset id, revision, config and split") from None
    table = ds.flatten_indices().data.table if ds._indices is not None else ds.data.table
    plain = pa_schema_without_temporal(table, shown)
    if plain is not None:
        table = table.cast(plain)
    return _apply_schema(table, schema, shown, lambda: None), shown


def pa_schema_without_temporal(table: pa.Table, shown: str,
                               find_row: Callable[[], StepError | None] = lambda: None) -> pa.Schema | None:
    """The table's schema with dates as text (None if unchanged); too deep a schema is an
    error (`find_row` names its line), which also bounds `_without_temporal`'s recursion."""
    import pyarrow as pa

    if locate.type_depth(table.schema) > locate.MAX_DEPTH:
        raise find_row() or locate.too_deep_error(shown)
    plain = pa.schema([f.with_type(_without_temporal(f.type)) for f in table.schema])
    return plain if plain != table.schema else None


# ---- helpers shared by the formats -------------------------------------------------------

def _shown(path: Path, project: Path) -> str:
    """The path as the user wrote it: relative to the .ft file's folder when inside it."""
    try:
        return path.resolve().relative_to(project.resolve()).as_posix()
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        try:
            return path.relative_to(project).as_posix()
        except ValueError:
            return str(path)


def _check_schema_decl(schema: dict[str, str] | None) -> None:
    # The compiler checks this too; a clear error beats a KeyError if it ever slips through.
    for col, tname in (schema or {}).items():
        if tname not in SCHEMA_TYPES:
            raise StepError(f"schema column '{col}': unknown type '{tname}'",
                            hint=f"use one of {', '.join(SCHEMA_TYPES)}")


def _arrow_type(tname: str) -> pa.DataType:
    import pyarrow as pa

    return {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}[tname]


def _fits(dtype: pa.DataType, tname: str) -> bool:
    """Whether a column of arrow type `dtype` can be cast losslessly to schema type `tname`."""
    import pyarrow.types as pt

    if tname == "str":
        return pt.is_string(dtype) or pt.is_large_string(dtype) or pt.is_string_view(dtype)
    if tname == "int":
        return pt.is_integer(dtype)
    if tname == "float":
        return pt.is_integer(dtype) or pt.is_floating(dtype)
    return pt.is_boolean(dtype)


def _apply_schema(table: pa.Table, schema: dict[str, str] | None, shown: str,
                  find_row: Callable[[], StepError | None], first_row: int = 1) -> pa.Table:
    """Check and cast the schema columns. On a violation, `find_row` (a slower pass over the
    file) names the first offending row; without one the error names the column only.
    `first_row` is the file row of the table's first row (a streamed file's batches)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if schema and not table.num_columns and not table.num_rows:  # blank lines only, `[]`
        raise StepError("the file has no rows", path=shown)
    for col, tname in (schema or {}).items():
        names = list(table.column_names)
        if col not in names:
            raise find_row() or StepError(f"column '{col}' is missing (columns: {', '.join(names)})",
                                        path=shown, hint=locate.did_you_mean(col, names))
        i = names.index(col)
        column = table.column(i)
        if not _fits(column.type, tname):
            raise find_row() or StepError(f"column '{col}' has type {column.type}, the schema says {tname}",
                                        path=shown)
        if column.null_count:
            first = pc.index(pc.is_null(column), True).as_py()
            raise find_row() or StepError(f"column '{col}' is null", path=shown, row=first + first_row,
                                        hint=f"the schema declares {col}: {tname}, so every row needs it")
        target = _arrow_type(tname)
        if column.type != target:
            try:
                table = table.set_column(i, col, column.cast(target))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise StepError(f"column '{col}' does not fit {tname}: {e}", path=shown) from None
    return table


def _without_temporal(dtype: pa.DataType) -> pa.DataType:
    """`dtype` with dates, times and timestamps replaced by string, at any depth.

    Pyarrow infers "2024-01-01" as a date; ftlang keeps text as written so that a prompt
    that happens to look like a date is not rewritten."""
    import pyarrow as pa
    import pyarrow.types as pt

    if pt.is_timestamp(dtype) or pt.is_date(dtype) or pt.is_time(dtype):
        return pa.string()
    if pt.is_struct(dtype):
        return pa.struct([f.with_type(_without_temporal(f.type)) for f in dtype])
    if pt.is_list(dtype) or pt.is_large_list(dtype):
        inner = dtype.value_field.with_type(_without_temporal(dtype.value_type))
        return pa.list_(inner) if pt.is_list(dtype) else pa.large_list(inner)
    return dtype


def _read_blocks(read: Callable[[int], pa.Table], path: Path) -> pa.Table:
    """Call `read(block_size)`, growing the block when a row is longer than one block."""
    import pyarrow as pa

    block, size = _BLOCK_SIZE, path.stat().st_size
    while True:
        try:
            return read(block)
        except pa.ArrowInvalid as e:
            if "straddl" not in str(e) or block > size:
                raise
            block = min(block * 4, size + 1)  # one block holding the whole file cannot straddle


# ---- JSON Lines ----------------------------------------------------------------------------

def _read_jsonl(path: Path, shown: str, schema: dict[str, str] | None) -> pa.Table:
    import pyarrow as pa
    import pyarrow.json as pj

    def read(explicit: pa.Schema | None) -> pa.Table:
        parse = pj.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer")
        return _read_blocks(lambda block: pj.read_json(
            path, read_options=pj.ReadOptions(block_size=block), parse_options=parse), path)

    try:
        table = read(None)
        plain = pa_schema_without_temporal(table, shown, lambda: locate.jsonl(path, shown, schema))
        if plain is not None:
            table = read(plain)  # same columns in the same order, dates kept as text
        # pyarrow's JSON reader neither checks UTF-8 nor rejects a `null` line (it becomes a
        # row of nulls); both are cheap to detect here, and then the Python pass names the line.
        table.validate(full=True)
        floats = _rounded_int_columns(table) - {c for c, t in (schema or {}).items() if t == "float"}
        # pyarrow reads `{...} {...}` on one line as two rows: more rows than lines is an error;
        # it reads 2e308 as inf (1e400 it refuses): the Python pass tells a literal Infinity apart
        if (table.num_columns and _any_all_null_row(table) or floats or locate.has_inf(table)
                or table.num_rows != _nonblank_lines(path)):
            problem = locate.jsonl(path, shown, schema, floats)
            if problem:
                raise problem
    except pa.ArrowException as e:
        hint = ("a column (or nested field) needs one JSON type in every row"
                if "changed from" in str(e) else None)
        raise locate.jsonl(path, shown, schema) or StepError(
            f"cannot read JSON Lines: {e}", path=shown, hint=hint) from None
    return _apply_schema(table, schema, shown, lambda: locate.jsonl(path, shown, schema))


def _nonblank_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for raw in f if raw.strip())


def _rounded_int_columns(table: pa.Table) -> frozenset[str]:
    """Float columns holding a whole number too big for a float64 to hold exactly: pyarrow
    reads an integer such as 10**23 (or 2**53 + 1 next to a float) as a rounded double, so
    the Python pass must look at how those numbers are written."""
    import pyarrow.compute as pc
    import pyarrow.types as pt

    out = set()
    for field, column in zip(table.schema, table.columns, strict=True):
        if pt.is_floating(field.type) and column.length() - column.null_count:
            biggest = pc.max(pc.abs(column)).as_py()
            if biggest is not None and biggest >= _EXACT_FLOAT_INT:
                out.add(field.name)
    return frozenset(out)


def _any_all_null_row(table: pa.Table) -> bool:
    import pyarrow.compute as pc

    mask = None
    for column in table.columns:
        nulls = column.is_null()
        mask = nulls if mask is None else pc.and_(mask, nulls)
    return bool(pc.any(mask).as_py())


# ---- CSV -----------------------------------------------------------------------------------

def _read_csv(path: Path, shown: str, schema: dict[str, str] | None, delimiter: str) -> pa.Table:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    if len(delimiter) != 1:
        raise StepError(f"delimiter must be one character, got {delimiter!r}", path=shown)
    parse = pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    declared = {col: _arrow_type(t) for col, t in (schema or {}).items()}

    def read(types: dict[str, pa.DataType]) -> pa.Table:
        # strings_can_be_null=False: an empty text cell is "", not a missing value.
        convert = pcsv.ConvertOptions(column_types=types, strings_can_be_null=False)
        return _read_blocks(lambda block: pcsv.read_csv(
            path, read_options=pcsv.ReadOptions(block_size=block), parse_options=parse,
            convert_options=convert), path)

    try:
        table = read(declared)
        temporal = {f.name: pa.string() for f in table.schema if _without_temporal(f.type) != f.type}
        if temporal:
            table = read({**temporal, **declared})
    except pa.ArrowException as e:
        raise locate.csv(path, shown, schema, delimiter) or StepError(
            f"cannot read CSV: {e}", path=shown) from None
    _check_csv_text(table, path, shown, delimiter)
    return _apply_schema(table, schema, shown, lambda: locate.csv(path, shown, schema, delimiter))


def _check_csv_text(table: pa.Table, path: Path, shown: str, delimiter: str) -> None:
    """What pyarrow reads without complaint but is not what the file means."""
    import pyarrow.types as pt

    # Cells that are not UTF-8 become a binary column (`b'caf\xe9'` in every row).
    if any(pt.is_binary(f.type) or pt.is_large_binary(f.type) for f in table.schema):
        problem = tabular.first_utf8_error(path, shown)
        if problem:
            raise problem
    if table.num_columns == 1:
        sep = tabular.wrong_delimiter(path, shown, delimiter)
        if sep:
            raise StepError(f"the header is one column, {table.column_names[0]!r}: wrong delimiter",
                            path=shown, row=1, hint=tabular.delimiter_hint(shown, sep))
    # An odd number of quotes means one is never closed: pyarrow then reads the rest of the
    # file into one cell. The strict Python pass says where (or finds it harmless: 5" screen).
    if locate.odd_quotes(path):
        problem = locate.csv(path, shown, None, delimiter, strict=True)
        if problem:
            raise problem


# ---- Parquet -------------------------------------------------------------------------------

def _read_parquet(path: Path, shown: str, schema: dict[str, str] | None) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        table.validate(full=True)
    except (pa.ArrowException, OSError) as e:
        raise StepError(f"cannot read Parquet: {e}", path=shown) from None
    # The table itself names the row (1-based) of a null; a wrong type is column-wide.
    return _apply_schema(table, schema, shown, lambda: None)


def _stream_parquet(ctx: StepContext, path: Path, shown: str, schema: dict[str, str] | None) -> dict[str, Any]:
    """A Parquet source copied into the cache batch by batch, each checked against the
    schema: memory stays at a few row groups whatever the file's size, and the bytes are
    those of reading the whole table (parquet_out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        rows, columns = file.metadata.num_rows, list(file.schema_arrow.names)
    except (pa.ArrowException, OSError) as e:
        raise StepError(f"cannot read Parquet: {e}", path=shown) from None
    _check_shape(rows, columns, shown)
    # from_batches, not schema.empty_table(): that one imports pandas, slow, for nothing
    first = _apply_schema(pa.Table.from_batches([], schema=file.schema_arrow), schema, shown, lambda: None)

    def batches() -> Iterator[pa.RecordBatch]:
        at = 1
        try:
            for batch in file.iter_batches(batch_size=parquet_out.ROW_GROUP_SIZE, use_threads=False):
                batch.validate(full=True)
                table = _apply_schema(pa.Table.from_batches([batch]), schema, shown, lambda: None, first_row=at)
                at += batch.num_rows
                yield from table.to_batches()
        except (pa.ArrowException, OSError) as e:
            raise StepError(f"cannot read Parquet: {e}", path=shown) from None

    parquet_out.write_batches(batches(), first.schema, ctx.out / "data.parquet")
    return _done(ctx, rows, columns, shown)
