"""The slow passes: when the fast pyarrow read fails, or reads something the file does not
mean, these read a JSONL or CSV file line by line (record by record) in Python and name the
first offending line and column. They agree with pyarrow about what is wrong: its boolean
and null spellings, its byte-order-mark handling (through `tabular`), a type change at any
depth (`/a/[]/b`, pyarrow's path), a number past float64. A json() array's rows are checked
the same way (`array_rows`). Nesting is walked iteratively and bounded by MAX_DEPTH.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftlang.stdlib import tabular
from ftlang.stdlib.spec import StepError

# What pyarrow's CSV reader accepts as booleans and nulls (ConvertOptions defaults), so the
# Python pass that locates an error agrees with the fast pass about what is wrong.
_CSV_TRUE = {"1", "True", "TRUE", "true"}
_CSV_FALSE = {"0", "False", "FALSE", "false"}
_CSV_NULLS = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
              "1.#QNAN", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"}
_INT_RE = re.compile(r"[+-]?\d+")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # a \uD800-\uDFFF escape
# Arrays and objects inside one another in one column value. Parquet (the cache's format)
# cannot read a schema much deeper back (pyarrow fails at 50 nested lists), and Python's own
# recursion gives out near 1000: beyond this is an error naming the line, not a traceback.
MAX_DEPTH = 32
# The tokens that matter for nesting in JSON text: a whole string (so brackets inside one do
# not count), a bracket, a newline (JSON strings hold no raw newline).
_JSON_TOKEN = re.compile(rb'"(?:[^"\\\n]|\\.)*"|[][{}\n]')


def did_you_mean(name: str, names: list[str]) -> str | None:
    close = difflib.get_close_matches(name, names, n=1)
    return f"did you mean '{close[0]}'?" if close else None


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


def _int_problem(value: Any, col: str, floats: frozenset[str]) -> str | None:
    """Why an integer literal would not reach the table as written, or None."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if not _INT64_MIN <= value <= _INT64_MAX:
        return f"column '{col}': the integer {value} does not fit 64 bits and would be rounded to {float(value):g}"
    if col in floats and float(value) != value:
        return f"column '{col}': the integer {value} would be rounded to {float(value):.17g} in a column of floats"
    return None


def _lone_surrogate(raw: bytes, obj: Any) -> str | None:
    """The escape of a UTF-16 surrogate without its pair (`"\\ud800"`), or None: JSON allows
    it, but it is not a character and no UTF-8 text can hold it."""
    m = _SURROGATE.search(raw)
    if m is None:
        return None
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return m.group(0).decode()
    return None


def jsonl(path: Path, shown: str, schema: dict[str, str] | None,
          floats: frozenset[str] = frozenset()) -> StepError | None:
    """The first problem in the file, found line by line; None when every line is fine.
    `floats`: the float columns whose integers must be checked for rounding."""
    first_kind: dict[str, tuple[str, int]] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue  # blank lines are allowed, as in the fast pass
            try:
                text = tabular.decode_line(raw, lineno, shown)  # skips a BOM, as pyarrow does
            except StepError as e:
                return e
            try:
                obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=parse_float)
            except json.JSONDecodeError as e:
                return StepError(f"invalid JSON: {e.msg} (column {e.colno})", path=shown, row=lineno)
            except RecursionError:  # Python's parser gives out near 1000 levels
                return too_deep_error(shown, lineno)
            except _DuplicateKey as e:
                return StepError(f"key '{e}' appears twice in one object", path=shown, row=lineno)
            if not isinstance(obj, dict):
                return StepError(f"expected a JSON object, got {_kind(obj) or 'null'}", path=shown, row=lineno,
                                 hint="each line of a JSON Lines file is one {...} object")
            escape = _lone_surrogate(raw, obj)
            if escape:
                return StepError(f"the escape {escape} is half of a UTF-16 surrogate pair, not a character",
                                 path=shown, row=lineno, hint="remove it, or write the whole pair")
            for col, tname in (schema or {}).items():
                if col not in obj:
                    return StepError(f"column '{col}' is missing", path=shown, row=lineno,
                                     hint=did_you_mean(col, list(obj))
                                     or f"the schema declares {col}: {tname}, so every row needs it")
                if obj[col] is None:
                    return StepError(f"column '{col}' is null", path=shown, row=lineno,
                                     hint=f"the schema declares {col}: {tname}, so every row needs it")
                problem = _schema_problem(obj[col], tname)
                if problem:
                    return StepError(f"column '{col}' {problem}", path=shown, row=lineno)
            for col, value in obj.items():
                rounded = _int_problem(value, col, floats) if (schema or {}).get(col) != "float" else None
                if rounded:
                    return StepError(rounded, path=shown, row=lineno,
                                     hint=f'write it as a string ("{value}") to keep every digit')
                problem = value_problem(col, value, lineno, first_kind, "on line")
                if problem:
                    return StepError(problem[0], path=shown, row=lineno, hint=problem[1])
    return None


class Overflow(float):
    """A number literal too large for a float64 (`1e400`): json reads it as inf, pyarrow
    refuses it. Kept as the literal so the error can quote it."""

    text: str


def parse_float(text: str) -> float:
    """json's `parse_float`: a float, or an `Overflow` (still inf) for a literal past float64."""
    value = float(text)
    if value - value == 0:  # finite (a literal is never NaN here: that is parse_constant)
        return value
    big = Overflow(value)
    big.text = text
    return big


def value_problem(col: str, value: Any, at: int, first_kind: dict[str, tuple[str, int]],
                  unit: str) -> tuple[str, str] | None:
    """(message, hint) for the first thing in one column value that pyarrow refuses: a type
    that differs from earlier rows at the same path (`/a/[]/b`, pyarrow's notation), a number
    past float64, nesting deeper than MAX_DEPTH; None when fine. `first_kind` carries each
    path's first kind and row across calls; `unit` words where `at` is ("on line", "in row").
    Iterative, in document order: a value nested thousands deep costs no recursion."""
    stack: list[tuple[str, Any, int]] = [(f"/{col}", value, 0)]
    while stack:
        path, v, depth = stack.pop()
        kind = _kind(v)
        if kind is None:
            continue
        where = f"column '{col}'" if path == f"/{col}" else f"column '{col}' at {path}"
        if isinstance(v, Overflow):
            return (f"{where}: the number {v.text} is too large for a 64-bit float",
                    f'write it as a string ("{v.text}") to keep it, or as a smaller number')
        prev = first_kind.setdefault(path, (kind, at))
        if prev[0] != kind:
            return (f"{where} is {kind} here but {prev[0]} {unit} {prev[1]}",
                    "a column (or nested field) has one type in every row; fix the row or the data")
        if kind in ("array", "object"):
            if depth >= MAX_DEPTH:
                return too_deep(col)
            items = [(f"{path}/[]", x) for x in v] if kind == "array" else [(f"{path}/{k}", x) for k, x in v.items()]
            stack.extend((p, x, depth + 1) for p, x in reversed(items))
    return None


def too_deep_error(shown: str, row: int | None = None) -> StepError:
    """The error of a row nested past MAX_DEPTH (too_deep's message and hint)."""
    message, hint = too_deep(None)
    return StepError(message, path=shown, row=row, hint=hint)


def too_deep(col: str | None) -> tuple[str, str]:
    what = f"column '{col}' is" if col else "the row is"
    return (f"{what} nested more than {MAX_DEPTH} levels deep (arrays and objects inside one another)",
            f"the cache's Parquet files hold at most {MAX_DEPTH} levels; flatten it, or store the deep "
            "part as a JSON string")


def type_depth(schema: Any) -> int:
    """How many nested types (lists, structs, maps) lie inside one another in an Arrow schema's
    deepest column; iterative, as the schema may be thousands deep."""
    deepest, stack = 0, [(field.type, 0) for field in schema]
    while stack:
        dtype, depth = stack.pop()
        if dtype.num_fields:
            deepest = max(deepest, depth + 1)
            stack.extend((dtype.field(i).type, depth + 1) for i in range(dtype.num_fields))
    return deepest


def has_inf(table: Any) -> bool:
    """Whether any float in the table, at any depth, is infinite; vectorised per column."""
    import pyarrow.compute as pc
    import pyarrow.types as pt

    stack = list(table.columns)  # whole chunked columns: one compute call each, not one per block
    while stack:
        column = stack.pop()
        if pt.is_floating(column.type):
            if pc.any(pc.is_inf(column)).as_py():
                return True
        elif pt.is_struct(column.type):
            stack.extend(column.flatten())
        elif pt.is_list(column.type) or pt.is_large_list(column.type):
            stack.append(pc.list_flatten(column))
    return False


def _json_tokens(raw: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(line, depth before it, token) for each bracket of JSON text, strings skipped."""
    line, depth = 1, 0
    for m in _JSON_TOKEN.finditer(raw):
        token = m.group(0)
        if token == b"\n":
            line += 1
        elif token in (b"[", b"{"):
            yield line, depth, token
            depth += 1
        elif token in (b"]", b"}"):
            depth -= 1
            yield line, depth, token


def too_deep_line(raw: bytes, levels: int) -> int | None:
    """The line where JSON text first opens more than `levels` brackets inside one another."""
    return next((line for line, depth, token in _json_tokens(raw) if token in b"[{" and depth >= levels), None)


def array_rows(data: list[dict[str, Any]], raw: bytes, shown: str) -> StepError | None:
    """The first row of a JSON array (1-based, with its line) whose value pyarrow refuses."""
    first_kind: dict[str, tuple[str, int]] = {}
    for i, row in enumerate(data, 1):
        for col, value in row.items():
            problem = value_problem(col, value, i, first_kind, "in row")
            if problem:
                return StepError(f"row {i} of the array: {problem[0]}", path=shown, row=_row_line(raw, i),
                                 hint=problem[1])
    return None


def _row_line(raw: bytes, row: int) -> int | None:
    """The line where the array's `row`-th element (1-based) opens."""
    starts = (line for line, depth, token in _json_tokens(raw) if depth == 1 and token in b"[{")
    return next((line for n, line in enumerate(starts, 1) if n == row), None)


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


def csv(path: Path, shown: str, schema: dict[str, str] | None, delimiter: str,
        strict: bool = False) -> StepError | None:
    """The first problem in the file, found record by record; None when none is found."""
    try:
        records = tabular.csv_records(path, shown, delimiter, strict=strict)
        header_line, header = next(records, (1, []))
        for col in schema or {}:
            if col not in header:
                sep = tabular.wrong_delimiter(path, shown, delimiter) if len(header) == 1 else None
                return StepError(f"column '{col}' is not in the header ({', '.join(header)})",
                                 path=shown, row=header_line,
                                 hint=tabular.delimiter_hint(shown, sep) if sep else did_you_mean(col, header))
        for lineno, fields in records:
            if len(fields) != len(header):
                return StepError(f"expected {len(header)} fields, got {len(fields)}", path=shown, row=lineno,
                                 hint="quote cells that contain the delimiter")
            for col, tname in (schema or {}).items():
                problem = _csv_problem(fields[header.index(col)], tname)
                if problem:
                    return StepError(f"column '{col}' {problem}", path=shown, row=lineno)
    except StepError as e:
        return e
    return None


def odd_quotes(path: Path) -> bool:
    """Whether the file holds an odd number of `"`: then a quote is never closed, or one is
    a plain character in an unquoted cell (5" screen); the strict pass tells which."""
    count = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b'"')
    return count % 2 == 1
