"""More bad data (stdlib/dataset.py, locate.py, formats.py, tabular.py): each error names the
file, the line (or the array's row) and the column, never a traceback, never a wrong row.

- a CSV cell past Python csv's 128 KiB field limit must not hide the real error;
- a type change inside a nested field, or a number past float64, is found with its line;
- nesting deeper than locate.MAX_DEPTH is a clear error, not a RecursionError;
- a json() array's rows that disagree name the row; an empty array has no rows.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import ft_bin
from ftlang.stdlib import dataset
from ftlang.stdlib.spec import Call, StepContext, StepError

LIMIT = 32  # locate.MAX_DEPTH: how deep a column value may nest


def _ctx(tmp_path: Path, source: Call, schema: dict[str, str] | None) -> StepContext:
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    return StepContext(node="dataset.d", name="d", params={"source": source, "schema": schema}, out=out,
                       project=tmp_path, cache=tmp_path / "cache")


def _file(tmp_path: Path, name: str, text: str) -> Call:
    path = tmp_path / "data" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    kind = {".csv": "csv", ".jsonl": "jsonl", ".json": "json"}[path.suffix]
    return Call(kind, {"path": str(path), "delimiter": ","} if kind == "csv" else {"path": str(path)})


def _error(tmp_path: Path, name: str, text: str, schema: dict[str, str] | None = None) -> StepError:
    with pytest.raises(StepError) as info:
        dataset.run(_ctx(tmp_path, _file(tmp_path, name, text), schema))
    return info.value


def _rows(tmp_path: Path, name: str, text: str) -> Any:
    return dataset.run(_ctx(tmp_path, _file(tmp_path, name, text), None))["rows"]


# ---- 1: a CSV cell over 128 KiB ----------------------------------------------------------


def test_csv_cell_over_the_csv_module_limit_blames_the_real_row(tmp_path: Path) -> None:
    huge = "b" * 5_000_000
    err = _error(tmp_path, "hugecsv.csv", f"prompt,completion\na,{huge}\nc\n")
    assert err.row == 3 and "expected 2 fields, got 1" in str(err), str(err)
    assert "field limit" not in str(err)
    assert csv.field_size_limit() == 131072  # lifted only while the locate pass reads
    assert _rows(tmp_path, "ok.csv", f"prompt,completion\na,{huge}\nc,d\n") == 2
    # a one-column file asks for the delimiter check, which reads the huge row too
    assert _rows(tmp_path, "one.csv", f"prompt\n{huge}\nc\n") == 2


# ---- 2: nested type changes and numbers past float64 ---------------------------------------


def test_jsonl_nested_type_change_names_the_file_line_and_path(tmp_path: Path) -> None:
    lines = ['{"a":{"b":1},"prompt":"p"}'] * 60_000 + ['{"a":{"b":"x"},"prompt":"p"}']  # > one 1 MiB block
    err = _error(tmp_path, "nest.jsonl", "\n".join(lines) + "\n")
    assert err.row == 60_001, str(err)
    assert "column 'a' at /a/b is str here but number on line 1" in str(err)
    err = _error(tmp_path, "list.jsonl", '{"a":[{"b":[1]}]}\n{"a":[{"b":[2, "x"]}]}\n')
    assert err.row == 2 and "/a/[]/b/[] is str here but number on line 1" in str(err), str(err)


def test_jsonl_number_past_float64_names_the_line(tmp_path: Path) -> None:
    err = _error(tmp_path, "inf.jsonl", '{"n": 1e400}\n')
    assert err.row == 1 and "column 'n': the number 1e400 is too large for a 64-bit float" in str(err)
    err = _error(tmp_path, "inf2.jsonl", '{"n": {"m": [1.5]}}\n{"n": {"m": [-2e308]}}\n')
    assert err.row == 2 and "column 'n' at /n/m/[]: the number -2e308" in str(err), str(err)


# ---- 3: too deep ------------------------------------------------------------------------


def _deep(levels: int, close: int | None = None) -> str:
    return "[" * levels + "]" * (levels if close is None else close)


@pytest.mark.parametrize("text,row", [
    ('{"prompt":' + _deep(5000) + "}\n", 1),  # valid: pyarrow reads it, dataset's walk of the type recursed
    ('{"prompt":' + _deep(5000, 4999) + "}\n", 1),  # malformed: Python's json recursed
    ('{"prompt":"x"}\n{"q":' + _deep(LIMIT + 1) + "}\n", 2),  # Parquet could not read it back
])
def test_jsonl_nested_too_deep_names_the_line(tmp_path: Path, text: str, row: int) -> None:
    err = _error(tmp_path, "deep.jsonl", text)
    assert err.row == row and f"nested more than {LIMIT} levels" in str(err), str(err)


def test_nesting_up_to_the_limit_is_read(tmp_path: Path) -> None:
    depth = LIMIT
    assert _rows(tmp_path, "ok.jsonl", '{"prompt":' + "[" * depth + "1" + "]" * depth + "}\n") == 1
    assert _rows(tmp_path, "ok.json", '[{"prompt":' + '{"a":' * depth + "1" + "}" * depth + "}]") == 1


def test_json_array_nested_too_deep_names_the_line(tmp_path: Path) -> None:
    err = _error(tmp_path, "deep.json", '[{"p":"x"},\n{"prompt":' + _deep(5000) + "}]\n")
    assert err.row == 2 and f"nested more than {LIMIT} levels" in str(err), str(err)
    err = _error(tmp_path, "d33.json", '[{"p":"x"},\n\n{"q":' + _deep(LIMIT + 1) + "}]\n")
    assert err.row == 3 and "row 2 of the array: column 'q' is nested more than" in str(err), str(err)


@pytest.mark.e2e
def test_ft_run_on_deep_jsonl_says_where_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "deep.jsonl").write_text('{"prompt":' + _deep(5000) + "}\n")
    (tmp_path / "p.ft").write_text('ft 0.1\n\ndataset d {\n  source = jsonl("data/deep.jsonl")\n}\n')
    out = subprocess.run([*ft_bin(), "run", "p.ft"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, NO_COLOR="1", HF_HUB_OFFLINE="1"))
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "RecursionError" not in text and "Traceback" not in text, text
    assert "data/deep.jsonl:1: the row is nested more than" in text, text


# ---- 4: json() arrays -------------------------------------------------------------------


def test_json_array_rows_of_different_types_name_the_row_and_column(tmp_path: Path) -> None:
    err = _error(tmp_path, "mix.json", '[{"prompt":"a"},{"prompt":5}]')
    assert "row 2 of the array: column 'prompt' is number here but str in row 1" in str(err), str(err)
    assert "Expected bytes" not in str(err)
    rows = [{"prompt": "a", "m": {"k": [1]}}, {"prompt": "b"}, {"prompt": "c", "m": {"k": ["z"]}}]
    err = _error(tmp_path, "mix2.json", json.dumps(rows, indent=1))  # row 3 opens on line 13
    assert err.row == 13 and "row 3 of the array: column 'm' at /m/k/[] is str" in str(err), str(err)


def test_json_array_number_past_float64_is_not_inf(tmp_path: Path) -> None:
    err = _error(tmp_path, "inf.json", '[{"prompt":"a"},\n {"prompt":"b", "n": [1e400]}]')
    assert err.row == 2 and "row 2 of the array: column 'n' at /n/[]: the number 1e400" in str(err), str(err)


@pytest.mark.parametrize("schema", [None, {"prompt": "str"}])
def test_an_empty_array_or_blank_file_has_no_rows(tmp_path: Path, schema: dict[str, str] | None) -> None:
    assert "the file has no rows" in str(_error(tmp_path, "empty.json", "[]", schema))
    err = _error(tmp_path, "blank.jsonl", "\n\n", schema)
    assert "the file has no rows" in str(err) and "is missing" not in str(err), str(err)
