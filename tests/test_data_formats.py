"""Data formats people have (stdlib/formats.py): JSON arrays, Alpaca and ShareGPT rows.

(A saved `datasets` folder and a pinned hub dataset are tests/test_methods_sources.py's.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import FtError
from ftlang.stdlib import dataset
from ftlang.stdlib.spec import Call, StepError
from stepkit import Store

ALPACA = [{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
          {"instruction": "Reverse the word.", "input": "cat", "output": "tac", "source": "mine"}]
SHAREGPT = [{"system": "Be brief.", "conversations": [{"from": "human", "value": "Hi"},
                                                        {"from": "gpt", "value": "Hello"}]},
            {"system": "", "conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"},
                                             {"from": "human", "value": "3+3?"}, {"from": "gpt", "value": "6"}]}]


def _read(tmp_path: Path, source: str, file: str, text: str, shape: str | None = None) -> list[dict[str, Any]]:
    (tmp_path / file).write_text(text)
    store = Store(tmp_path / "store")
    art, meta = store.run(dataset.run, "dataset.d", {"source": Call(source, {"path": str(tmp_path / file)}),
                                                     "shape": shape})
    return pq.read_table(art.path / "data.parquet").to_pylist()


def test_json_array_file(tmp_path: Path) -> None:
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    assert _read(tmp_path, "json", "x.json", json.dumps(rows, indent=2)) == rows


def test_jsonl_given_an_array_names_json(tmp_path: Path) -> None:
    with pytest.raises(StepError, match=r"x\.json:1: the file is one JSON array") as e:
        _read(tmp_path, "jsonl", "x.json", "\ufeff  [\n" + json.dumps({"prompt": "a"}) + "\n]")
    assert e.value.hint == 'read it with source = json("' + str(tmp_path / "x.json") + '")'


@pytest.mark.parametrize("text,says", [
    ('{"rows": [{"a": 1}]}', "an object whose 'rows' holds the rows"),
    ('[{"a": 1}, 3]', "element 1 of the array is a int"),
    ('[{"a": 1},\n {"a": }]', r"x\.json:2: not valid JSON"),
    ('{"a": 1}', "holds a JSON dict"),
])
def test_json_errors_name_the_problem(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(StepError, match=says):
        _read(tmp_path, "json", "x.json", text)


def test_alpaca_rows_become_prompt_and_completion(tmp_path: Path) -> None:
    got = _read(tmp_path, "json", "a.json", json.dumps(ALPACA), shape="alpaca")
    assert got == [{"source": None, "prompt": "Add 2 and 3.", "completion": "5"},
                   {"source": "mine", "prompt": "Reverse the word.\n\ncat", "completion": "tac"}]


def test_sharegpt_rows_become_messages(tmp_path: Path) -> None:
    text = "".join(json.dumps(r) + "\n" for r in SHAREGPT)
    got = _read(tmp_path, "jsonl", "s.jsonl", text, shape="sharegpt")
    assert got[0]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                  {"role": "assistant", "content": "Hello"}]
    assert [m["role"] for m in got[1]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert list(got[0]) == ["messages"]
    bad = [{"conversations": [{"from": "human", "value": "x"}, {"from": "observation", "value": "y"}]}]
    with pytest.raises(StepError, match=r"b\.jsonl:1: conversations\[1\]\.from is 'observation'"):
        _read(tmp_path, "jsonl", "b.jsonl", json.dumps(bad[0]) + "\n", shape="sharegpt")


def _compile(tmp_path: Path, body: str) -> list[str]:
    try:
        compile_source("ft 0.1\n" + body, "p.ft", tmp_path)
    except FtError as e:
        return [f"{d.code} {d.message}" for d in e.diagnostics]
    return []


def test_shapes_feed_the_column_contracts(tmp_path: Path) -> None:
    """Downstream blocks see the shape's columns, not the file's, at compile time."""
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SHAREGPT))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ALPACA))
    model = 'model base { init = tiny(data = d) }\n'
    ok = ('dataset d {\n  source = jsonl("s.jsonl")\n  shape = sharegpt\n}\n' + model
          + 'train t {\n  from = base\n  data = d\n  objective = chat\n}\n')
    assert _compile(tmp_path, ok) == []
    sft = ('dataset d {\n  source = jsonl("a.jsonl")\n  shape = alpaca\n}\n' + model
           + 'train t {\n  from = base\n  data = d\n}\n')
    assert _compile(tmp_path, sft) == []
    wrong = 'dataset d {\n  source = jsonl("a.jsonl")\n  shape = sharegpt\n}\n'
    assert any(d.startswith("FT0282 shape = sharegpt reads the columns conversations")
               for d in _compile(tmp_path, wrong))
    (tmp_path / "x.json").write_text("[]")
    assert any(d.startswith("FT0281 x.json is one JSON array")
               for d in _compile(tmp_path, 'dataset d { source = jsonl("x.json") }\n'))


@pytest.mark.parametrize("layout", ["flat", "nested", "duplicate", "empty", "pandas index"])
def test_a_parquet_files_columns_are_read_as_pyarrow_names_them(tmp_path: Path, layout: str) -> None:
    """The compile peeks at a Parquet footer with DuckDB (stdlib/tabular.parquet_columns):
    the top-level names, in order, nested fields' subtrees skipped, as pyarrow's schema has them."""
    import pyarrow as pa
    from ftlang.stdlib.tabular import parquet_columns

    path = tmp_path / "x.parquet"
    if layout == "pandas index":
        import pandas as pd

        pd.DataFrame({"a": [1, 2]}, index=[5, 6]).to_parquet(path)
    else:
        table = {
            "flat": lambda: pa.table({"Prompt": ["a"], "b": [1]}),
            "nested": lambda: pa.table({"s": [{"x": 1, "y": {"z": [1, 2]}}], "l": [[{"q": 1}]],
                                        "m": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())),
                                        "after": ["x"]}),
            "duplicate": lambda: pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]),
            "empty": lambda: pa.table({"a": pa.array([], pa.int64())}),
        }[layout]()
        pq.write_table(table, path)
    assert parquet_columns(path) == pq.read_schema(path).names
