"""Reading data files safely: the one place that opens a JSONL, CSV or Parquet file for
its columns, used by the dataset step and by the compiler's peek (`ft check`), so both
agree on encodings, byte-order marks and what a header is.

Every problem is a StepError naming the file and, where there is one, the line:
- `check_file` stats before opening: a folder, a named pipe, a device, a symbolic-link
  loop or a file without read permission is refused at once (opening a pipe would wait
  forever);
- text is UTF-8; a byte-order mark at the start is skipped (as pyarrow does); the first
  byte that is not UTF-8 is reported with its line;
- a CSV header that holds one column with another separator in it (`prompt;completion`)
  is a wrong delimiter, not a column name.

Only the Python standard library is imported here at module level: the compiler uses it.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ftlang.stdlib.spec import StepError

DELIMITERS = (",", ";", "\t", "|")  # what a one-column header is checked for
# Python's csv module refuses a cell over 128 KiB; pyarrow has no such limit, so a long
# completion must not be the error these passes report (nor fail a file pyarrow read).
_CSV_FIELD_LIMIT = (1 << 31) - 1  # fits a C long on every platform

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_file(path: Path, shown: str, missing_hint: str | None = None) -> StepError | None:
    """Why `path` cannot be read as a data file, or None. Never blocks: it stats first."""
    try:
        st = os.stat(path)  # follows links; a loop is ELOOP, a dangling link ENOENT
    except FileNotFoundError:
        return StepError("file not found", path=shown, hint=missing_hint)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return StepError("a symbolic link that loops back on itself", path=shown,
                             hint="point the link at a real file")
        return StepError(f"cannot read it: {e.strerror or e}", path=shown)
    if stat.S_ISDIR(st.st_mode):
        return StepError("a folder, not a file", path=shown)
    if not stat.S_ISREG(st.st_mode):
        what = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        return StepError(f"{what}, not a regular file: reading it could wait forever", path=shown,
                         hint="write the data to a regular file and point the source at it")
    try:
        with open(path, "rb"):  # a regular file: opening cannot block
            pass
    except PermissionError:
        return StepError("permission denied: the file is not readable", path=shown,
                         hint=f"make it readable (chmod a+r {shown})")
    except OSError as e:
        return StepError(f"cannot read it: {e.strerror or e}", path=shown)
    return None


# ---- text -----------------------------------------------------------------------------

def decode_line(raw: bytes, lineno: int, shown: str) -> str:
    """One line of a data file as text; the first line may start with a byte-order mark."""
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise not_utf8(raw, e, lineno, shown) from None


def not_utf8(raw: bytes, e: UnicodeDecodeError, lineno: int, shown: str) -> StepError:
    bad = raw[e.start:e.start + 1].hex()
    return StepError(f"not valid UTF-8: byte 0x{bad} (byte {e.start + 1} of the line)", path=shown,
                     row=lineno, hint="save the file as UTF-8 (for Latin-1: iconv -f latin1 -t utf-8)")


def first_utf8_error(path: Path, shown: str) -> StepError | None:
    """The first line holding a byte that is not UTF-8, or None when the file is UTF-8."""
    for lineno, raw in enumerate(_lines(path), 1):
        try:
            decode_line(raw, lineno, shown)
        except StepError as err:
            return err
    return None


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from f


# ---- CSV ------------------------------------------------------------------------------

def csv_records(path: Path, shown: str, delimiter: str, strict: bool = False) -> Iterator[tuple[int, list[str]]]:
    """(first line of the record, fields) for each non-empty record, header included.

    A StepError names the line of a byte that is not UTF-8, or the line where a record
    that is not well-formed CSV starts (with `strict`: a quote never closed, text after a
    closing quote)."""
    text = (decode_line(raw, lineno, shown) for lineno, raw in enumerate(_lines(path), 1))
    reader = csv.reader(text, delimiter=delimiter, strict=strict)
    start = 1
    while True:
        # The limit is process-wide: lifted only while this reader parses, then restored.
        limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise StepError(f"malformed CSV: {_csv_reason(str(e))}", path=shown, row=start,
                            hint=_csv_hint(str(e))) from None
        finally:
            csv.field_size_limit(limit)
        if fields:
            yield start, fields
        start = reader.line_num + 1  # a quoted cell may span several lines


def _csv_reason(message: str) -> str:
    if "unexpected end of data" in message:
        return "a quote opened in this record is never closed"
    return message


def _csv_hint(message: str) -> str | None:
    if "unexpected end of data" in message:
        return 'close the quote; a quote inside a quoted cell is written twice ("")'
    if "expected after" in message:
        return 'text follows a closing quote; a quote inside a quoted cell is written twice ("")'
    return None


def csv_header(path: Path, shown: str, delimiter: str) -> list[str]:
    """The header row's names (empty for an empty file)."""
    return next((fields for _, fields in csv_records(path, shown, delimiter)), [])


def wrong_delimiter(path: Path, shown: str, delimiter: str) -> str | None:
    """The delimiter the file seems to use when its header is one column that another
    separator splits into several (`prompt;completion` read with `,`); else None."""
    records = csv_records(path, shown, delimiter)
    header = next(records, (1, []))[1]
    if len(header) != 1:
        return None
    first_row = next(records, None)
    for sep in DELIMITERS:
        if sep == delimiter:
            continue
        names = [n.strip() for n in header[0].split(sep)]
        if len(names) < 2 or not all(names):
            continue
        if first_row is None or len(first_row[1]) == 1 and len(first_row[1][0].split(sep)) == len(names):
            return sep
    return None


def delimiter_hint(source: str, sep: str) -> str:
    shown = {"\t": "\\t"}.get(sep, sep)
    return f'the file is {shown!r}-separated: write csv("{source}", delimiter = "{shown}")'


# ---- JSON Lines and Parquet -------------------------------------------------------------

def jsonl_columns(path: Path, shown: str, rows: int) -> list[str] | None:
    """The keys of the first `rows` objects, in order of appearance; None when a line in
    them is not an object (the dataset step reports it with its line)."""
    names: dict[str, None] = {}
    seen = 0
    for lineno, raw in enumerate(_lines(path), 1):
        if seen >= rows:
            break
        if not raw.strip():
            continue
        seen += 1
        try:
            row = json.loads(decode_line(raw, lineno, shown))
        except (ValueError, RecursionError, StepError):  # RecursionError: nested ~1000 deep
            return None
        if not isinstance(row, dict):
            return None
        names.update(dict.fromkeys(row))
    return list(names)


def parquet_columns(path: Path) -> list[str]:
    """The top-level column names in the file's footer, as pyarrow's schema names them
    (duplicates too). Read with DuckDB's `parquet_schema`: the compile peeks at a Parquet
    file's columns, and `ft check` need not import pyarrow and numpy for that."""
    import duckdb

    rows = duckdb.connect().execute("SELECT name, coalesce(num_children, 0) FROM parquet_schema(?)",
                                    [str(path)]).fetchall()
    # Depth first: the root, then each top-level field followed by its subtree.
    names, at = [], 1
    for _ in range(int(rows[0][1]) if rows else 0):
        names.append(str(rows[at][0]))
        pending = int(rows[at][1])
        at += 1
        while pending:
            pending += int(rows[at][1]) - 1
            at += 1
    return names
