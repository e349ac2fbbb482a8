"""dataset: rows read from a local JSONL, CSV or Parquet file, checked against an optional schema.

In:  params["source"], a Call jsonl(path) / csv(path, delimiter) / parquet(path) with an
     absolute path; params["schema"], None or {column: "str" | "int" | "float" | "bool"}.
Out: `data.parquet` under ctx.out, written byte-for-byte deterministically, and
     {"rows": n, "columns": [...]}.

The schema is a contract, not a projection: the declared columns must be present, non-null
and of the declared type in every row (they are cast to string/int64/float64/bool); other
columns pass through with their inferred types. Text that looks like a date stays text.

Pyarrow parses the file in one fast pass; only when it fails (or the schema does not hold) a
line-by-line Python pass runs to name the offending file, line and column.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlang.stdlib.spec import Call, StepContext, StepError

if TYPE_CHECKING:  # pyarrow costs import time; steps that do not run must not pay it
    import pyarrow as pa

SCHEMA_TYPES = ("str", "int", "float", "bool")

# Parquet settings are fixed: output bytes are content-hashed, so every knob that could
# change the bytes (codec, level, row groups, page layout) must not depend on the input.
_COMPRESSION = "zstd"
_COMPRESSION_LEVEL = 3
_ROW_GROUP_SIZE = 1 << 16

_BLOCK_SIZE = 1 << 20  # pyarrow's default; grown on demand for rows longer than a block

# What pyarrow's CSV reader accepts as booleans and nulls (ConvertOptions defaults), so the
# Python pass that locates an error agrees with the fast pass about what is wrong.
_CSV_TRUE = {"1", "True", "TRUE", "true"}
_CSV_FALSE = {"0", "False", "FALSE", "false"}
_CSV_NULLS = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
              "1.#QNAN", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"}
_INT_RE = re.compile(r"[+-]?\d+")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


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
    if not path.exists():
        raise StepError("file not found", path=shown,
                        hint=f"paths in a .ft file are relative to its folder ({ctx.project})")
    if not path.is_file():
        raise StepError("not a file", path=shown)
    if path.stat().st_size == 0:
        raise StepError("the file is empty", path=shown)

    if source.name == "jsonl":
        table = _read_jsonl(path, shown, schema)
    elif source.name == "csv":
        table = _read_csv(path, shown, schema, source.get("delimiter", ","))
    elif source.name == "parquet":
        table = _read_parquet(path, shown, schema)
    else:
        raise StepError(f"unknown source '{source.name}'", hint="use jsonl(...), csv(...) or parquet(...)")

    return _finish(ctx, table, shown)


def _finish(ctx: StepContext, table: pa.Table, shown: str) -> dict[str, Any]:
    if table.num_rows == 0:
        raise StepError("the file has no rows", path=shown)
    if table.num_columns == 0:
        raise StepError("the rows have no columns", path=shown)
    dupes = sorted({n for n in table.column_names if table.column_names.count(n) > 1})
    if dupes:
        raise StepError(f"duplicate column '{dupes[0]}'", path=shown,
                        hint="every column needs a distinct name")
    write_parquet(table, ctx.out / "data.parquet")
    ctx.log(f"{shown}: {table.num_rows} rows, columns {', '.join(table.column_names)}")
    return {"rows": table.num_rows, "columns": list(table.column_names)}


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
    plain = pa_schema_without_temporal(table)
    if plain is not None:
        table = table.cast(plain)
    return _apply_schema(table, schema, shown, lambda: None), shown


def pa_schema_without_temporal(table: pa.Table) -> pa.Schema | None:
    import pyarrow as pa

    plain = pa.schema([f.with_type(_without_temporal(f.type)) for f in table.schema])
    return plain if plain != table.schema else None


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write `table` so that the same rows and types always give the same bytes.

    Schema metadata is dropped (it may carry a writer's provenance) and chunks are merged:
    page boundaries follow chunk boundaries, which depend on how the rows were produced.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = table.replace_schema_metadata(None).combine_chunks()
    try:
        pq.write_table(table, path, compression=_COMPRESSION, compression_level=_COMPRESSION_LEVEL,
                       row_group_size=_ROW_GROUP_SIZE, use_dictionary=True, write_statistics=True)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
        path.unlink(missing_ok=True)
        raise StepError(f"cannot store the rows as Parquet: {e}",
                        hint="CAST the column to a plainer type (VARCHAR, BIGINT, DOUBLE)") from None


# ---- helpers shared by the formats -------------------------------------------------------

def _shown(path: Path, project: Path) -> str:
    """The path as the user wrote it: relative to the .ft file's folder when inside it."""
    try:
        return path.resolve().relative_to(project.resolve()).as_posix()
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


def _did_you_mean(name: str, names: list[str]) -> str | None:
    close = difflib.get_close_matches(name, names, n=1)
    return f"did you mean '{close[0]}'?" if close else None


def _apply_schema(table: pa.Table, schema: dict[str, str] | None, shown: str,
                  locate: Callable[[], StepError | None]) -> pa.Table:
    """Check and cast the schema columns. On a violation, `locate` (a slower pass over the
    file) names the first offending row; without one the error names the column only."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for col, tname in (schema or {}).items():
        names = list(table.column_names)
        if col not in names:
            raise locate() or StepError(f"column '{col}' is missing (columns: {', '.join(names)})",
                                        path=shown, hint=_did_you_mean(col, names))
        i = names.index(col)
        column = table.column(i)
        if not _fits(column.type, tname):
            raise locate() or StepError(f"column '{col}' has type {column.type}, the schema says {tname}",
                                        path=shown)
        if column.null_count:
            first = pc.index(pc.is_null(column), True).as_py()
            raise locate() or StepError(f"column '{col}' is null", path=shown, row=first + 1,
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
        plain = pa.schema([f.with_type(_without_temporal(f.type)) for f in table.schema])
        if plain != table.schema:
            table = read(plain)  # same columns in the same order, dates kept as text
        # pyarrow's JSON reader neither checks UTF-8 nor rejects a `null` line (it becomes a
        # row of nulls); both are cheap to detect here, and then the Python pass names the line.
        table.validate(full=True)
        if table.num_columns and _any_all_null_row(table):
            problem = _locate_jsonl(path, shown, schema)
            if problem:
                raise problem
    except pa.ArrowException as e:
        hint = ("a column (or nested field) needs one JSON type in every row"
                if "changed from" in str(e) else None)
        raise _locate_jsonl(path, shown, schema) or StepError(
            f"cannot read JSON Lines: {e}", path=shown, hint=hint) from None
    return _apply_schema(table, schema, shown, lambda: _locate_jsonl(path, shown, schema))


def _any_all_null_row(table: pa.Table) -> bool:
    import pyarrow.compute as pc

    mask = None
    for column in table.columns:
        nulls = column.is_null()
        mask = nulls if mask is None else pc.and_(mask, nulls)
    return bool(pc.any(mask).as_py())


def _kind(value: Any) -> str | None:
    """The JSON kind of a parsed value, with int and float both 'number'; None for null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "array"
    return "object"


def _schema_problem(value: Any, tname: str) -> str | None:
    """Why `value` (present, not null) breaks schema type `tname`, or None."""
    if tname == "str":
        ok = isinstance(value, str)
    elif tname == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not _INT64_MIN <= value <= _INT64_MAX:
            return "is out of the 64-bit integer range"
    elif tname == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, bool)
    return None if ok else f"is {_describe(value)} ({_preview(value)}), the schema says {tname}"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int):
        return "an int"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a str"
    return "an array" if isinstance(value, list) else "an object"


def _preview(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _locate_jsonl(path: Path, shown: str, schema: dict[str, str] | None) -> StepError | None:
    """The first problem in the file, found line by line; None when every line is fine."""
    first_kind: dict[str, tuple[str, int]] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue  # blank lines are allowed, as in the fast pass
            try:
                # pyarrow skips a byte-order mark at the start; so must this pass
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                return StepError(f"not valid UTF-8 (byte {e.start + 1} of the line)", path=shown, row=lineno)
            try:
                obj = json.loads(text, object_pairs_hook=_no_duplicates)
            except json.JSONDecodeError as e:
                return StepError(f"invalid JSON: {e.msg} (column {e.colno})", path=shown, row=lineno)
            except _DuplicateKey as e:
                return StepError(f"key '{e}' appears twice in one object", path=shown, row=lineno)
            if not isinstance(obj, dict):
                return StepError(f"expected a JSON object, got {_kind(obj) or 'null'}", path=shown, row=lineno,
                                 hint="each line of a JSON Lines file is one {...} object")
            for col, tname in (schema or {}).items():
                if col not in obj:
                    return StepError(f"column '{col}' is missing", path=shown, row=lineno,
                                     hint=_did_you_mean(col, list(obj))
                                     or f"the schema declares {col}: {tname}, so every row needs it")
                if obj[col] is None:
                    return StepError(f"column '{col}' is null", path=shown, row=lineno,
                                     hint=f"the schema declares {col}: {tname}, so every row needs it")
                problem = _schema_problem(obj[col], tname)
                if problem:
                    return StepError(f"column '{col}' {problem}", path=shown, row=lineno)
            for col, value in obj.items():
                kind = _kind(value)
                if kind is None:
                    continue
                prev = first_kind.setdefault(col, (kind, lineno))
                if prev[0] != kind:
                    return StepError(f"column '{col}' is {kind} here but {prev[0]} on line {prev[1]}",
                                     path=shown, row=lineno,
                                     hint="a column has one type in every row; fix the row or the data")
    return None


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
        raise _locate_csv(path, shown, schema, delimiter) or StepError(
            f"cannot read CSV: {e}", path=shown) from None
    return _apply_schema(table, schema, shown, lambda: _locate_csv(path, shown, schema, delimiter))


def _csv_problem(cell: str, tname: str) -> str | None:
    """Why a CSV cell breaks schema type `tname`, as pyarrow would parse it, or None."""
    if tname == "str":
        return None
    value = cell.strip()
    if value in _CSV_NULLS:
        return "is empty" if not value else f"is {value!r}, read as a missing value"
    if tname == "int":
        ok = bool(_INT_RE.fullmatch(value)) and _INT64_MIN <= int(value) <= _INT64_MAX
    elif tname == "float":
        try:
            float(value)
            ok = "_" not in value
        except ValueError:
            ok = False
    else:
        ok = value in _CSV_TRUE or value in _CSV_FALSE
    return None if ok else f"is {cell!r}, not {'an' if tname == 'int' else 'a'} {tname}"


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line of the record, fields) for each non-empty record, header included."""
    # utf-8-sig: pyarrow skips a byte-order mark, so the header must not start with one here.
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        start = 1
        for fields in reader:
            if fields:
                yield start, fields
            start = reader.line_num + 1  # a quoted cell may span several lines


def _locate_csv(path: Path, shown: str, schema: dict[str, str] | None, delimiter: str) -> StepError | None:
    """The first problem in the file, found record by record; None when none is found."""
    try:
        records = _csv_records(path, delimiter)
        header_line, header = next(records, (1, []))
        for col in schema or {}:
            if col not in header:
                return StepError(f"column '{col}' is not in the header ({', '.join(header)})",
                                 path=shown, row=header_line, hint=_did_you_mean(col, header))
        for lineno, fields in records:
            if len(fields) != len(header):
                return StepError(f"expected {len(header)} fields, got {len(fields)}", path=shown, row=lineno,
                                 hint="quote cells that contain the delimiter")
            for col, tname in (schema or {}).items():
                problem = _csv_problem(fields[header.index(col)], tname)
                if problem:
                    return StepError(f"column '{col}' {problem}", path=shown, row=lineno)
    except UnicodeDecodeError as e:
        return StepError(f"not valid UTF-8: {e.reason}", path=shown)
    except csv.Error as e:
        return StepError(f"malformed CSV: {e}", path=shown)
    return None


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
