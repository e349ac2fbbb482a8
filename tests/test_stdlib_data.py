"""The dataset and curate steps on small real files, with real pyarrow and DuckDB."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ftlang.stdlib import curate, dataset
from ftlang.stdlib.spec import Artifact, Call, StepContext, StepError

# ---- helpers -------------------------------------------------------------------------------


def _ctx(tmp_path: Path, node: str, params: dict[str, Any], out: str = "out") -> StepContext:
    """A StepContext as the runtime builds it, with a fresh empty `out` dir."""
    shutil.rmtree(tmp_path / out, ignore_errors=True)  # a failed step leaves its temp dir behind
    (tmp_path / out).mkdir(parents=True)
    return StepContext(node=node, name=node.split(".", 1)[1], params=params, out=tmp_path / out,
                       project=tmp_path, cache=tmp_path / "cache")


def _write(tmp_path: Path, rel: str, text: str) -> Path:
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _read_ds(tmp_path: Path, source: Call, schema: dict[str, str] | None = None,
             out: str = "out") -> tuple[dict[str, Any], pa.Table]:
    ctx = _ctx(tmp_path, "dataset.chats", {"source": source, "schema": schema}, out)
    meta = dataset.run(ctx)
    return meta, pq.read_table(ctx.out / "data.parquet")


def _ds_error(tmp_path: Path, source: Call, schema: dict[str, str] | None = None) -> StepError:
    with pytest.raises(StepError) as info:
        _read_ds(tmp_path, source, schema)
    return info.value


def _artifact(tmp_path: Path, node: str, rows: list[dict[str, Any]] | pa.Table) -> Artifact:
    """A committed dataset artifact holding `rows` as data.parquet."""
    folder = tmp_path / "store" / node
    folder.mkdir(parents=True)
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
    pq.write_table(table, folder / "data.parquet")
    return Artifact(node=node, digest="0" * 64, path=folder)


def _curate(tmp_path: Path, inputs: list[Artifact], sql: str, split: dict[str, Any] | None = None,
            out: str = "out") -> tuple[dict[str, Any], Path]:
    ctx = _ctx(tmp_path, "curate.clean", {"from": inputs, "sql": sql, "split": split}, out)
    return curate.run(ctx), ctx.out


def _prompts(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"prompt": f"question {i}", "response": f"answer {i}", "n": i} for i in range(start, start + n)]


# ---- dataset: reading each format ----------------------------------------------------------


def test_jsonl_reads_rows_types_and_skips_blank_lines(tmp_path: Path) -> None:
    text = _jsonl([{"prompt": "a", "n": 1, "when": "2024-01-01"}]) + "\n   \n" + _jsonl(
        [{"prompt": "b", "n": 2.5, "when": "2024-01-02", "extra": [1, 2]}])
    path = _write(tmp_path, "data/chats.jsonl", text)
    meta, table = _read_ds(tmp_path, Call("jsonl", {"path": path}))
    assert meta == {"rows": 2, "columns": ["prompt", "n", "when", "extra"]}
    assert table.column("n").to_pylist() == [1.0, 2.5]
    # text that looks like a date stays text
    assert table.schema.field("when").type == pa.string()
    assert table.column("when").to_pylist() == ["2024-01-01", "2024-01-02"]
    assert table.column("extra").to_pylist() == [None, [1, 2]]


def test_jsonl_schema_casts_declared_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "data/chats.jsonl", _jsonl([{"p": "x", "score": 1, "ok": True},
                                                        {"p": "y", "score": 2, "ok": False}]))
    meta, table = _read_ds(tmp_path, Call("jsonl", {"path": path}),
                           {"p": "str", "score": "float", "ok": "bool"})
    assert meta["rows"] == 2
    assert table.schema.field("score").type == pa.float64()
    assert table.column("score").to_pylist() == [1.0, 2.0]


def test_jsonl_line_longer_than_a_read_block(tmp_path: Path) -> None:
    long = "x" * 3_000_000  # pyarrow's default block is 1 MiB
    path = _write(tmp_path, "data/chats.jsonl", _jsonl([{"prompt": long}, {"prompt": "short"}]))
    meta, table = _read_ds(tmp_path, Call("jsonl", {"path": path}), {"prompt": "str"})
    assert meta["rows"] == 2 and table.column("prompt")[0].as_py() == long


def test_csv_reads_with_delimiter_and_multiline_cells(tmp_path: Path) -> None:
    path = _write(tmp_path, "data/chats.csv",
                  'prompt;response;n;day\nhi;"line one\nline two";1;2024-01-01\nyo;"a;b";2;2024-01-02\n')
    meta, table = _read_ds(tmp_path, Call("csv", {"path": path, "delimiter": ";"}),
                           {"prompt": "str", "n": "float"})
    assert meta == {"rows": 2, "columns": ["prompt", "response", "n", "day"]}
    assert table.column("response").to_pylist() == ["line one\nline two", "a;b"]
    assert table.schema.field("n").type == pa.float64()
    assert table.schema.field("day").type == pa.string()


def test_parquet_reads(tmp_path: Path) -> None:
    path = tmp_path / "data" / "chats.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], "n": pa.array([1, 2, 3], pa.int32())}), path)
    meta, table = _read_ds(tmp_path, Call("parquet", {"path": path}), {"n": "int"})
    assert meta == {"rows": 3, "columns": ["prompt", "n"]}
    assert table.schema.field("n").type == pa.int64()


# ---- dataset: errors -----------------------------------------------------------------------


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    text = _jsonl(_prompts(2)) + "\n" + '{"prompt": "x" "response": "y"}\n' + _jsonl(_prompts(1))
    path = _write(tmp_path, "data/chats.jsonl", text)
    err = _ds_error(tmp_path, Call("jsonl", {"path": path}))
    assert str(err).startswith("data/chats.jsonl:4: invalid JSON: Expecting ',' delimiter")
    assert (err.path, err.row) == ("data/chats.jsonl", 4)


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = _write(tmp_path, "data/chats.jsonl", _jsonl([{"prompt": "a"}, ["prompt", "b"]]))
    err = _ds_error(tmp_path, Call("jsonl", {"path": path}))
    assert err.row == 2 and "expected a JSON object, got array" in str(err)


def test_jsonl_schema_wrong_type_names_line_and_column(tmp_path: Path) -> None:
    rows = _prompts(5)
    rows[3]["response"] = 7
    path = _write(tmp_path, "data/chats.jsonl", _jsonl(rows))
    err = _ds_error(tmp_path, Call("jsonl", {"path": path}), {"prompt": "str", "response": "str"})
    assert err.row == 4
    assert "column 'response' is an int (7), the schema says str" in str(err)


def test_jsonl_schema_missing_and_null_columns(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = _prompts(3)
    del rows[1]["response"]
    path = _write(tmp_path, "data/chats.jsonl", _jsonl(rows))
    err = _ds_error(tmp_path, Call("jsonl", {"path": path}), {"response": "str"})
    assert err.row == 2 and "column 'response' is missing" in str(err)

    rows = _prompts(3)
    rows[2]["n"] = None
    path.write_text(_jsonl(rows))
    err = _ds_error(tmp_path, Call("jsonl", {"path": path}), {"n": "int"})
    assert err.row == 3 and "column 'n' is null" in str(err)


def test_jsonl_int_schema_rejects_floats(tmp_path: Path) -> None:
    path = _write(tmp_path, "data/chats.jsonl", _jsonl([{"n": 1}, {"n": 2}, {"n": 2.5}]))
    err = _ds_error(tmp_path, Call("jsonl", {"path": path}), {"n": "int"})
    assert err.row == 3 and "'n' is a float (2.5)" in str(err)


def test_jsonl_mixed_types_without_schema(tmp_path: Path) -> None:
    path = _write(tmp_path, "data/chats.jsonl", _jsonl([{"n": 1}, {"n": 2}, {"n": "three"}]))
    err = _ds_error(tmp_path, Call("jsonl", {"path": path}))
    assert err.row == 3 and "column 'n' is str here but number on line 1" in str(err)


def test_csv_schema_errors_name_the_line(tmp_path: Path) -> None:
    # the record on lines 3-4 spans two lines, so the bad one starts on line 5
    path = _write(tmp_path, "data/chats.csv", 'prompt,n\na,1\n"b\nc",2\nd,x\n')
    err = _ds_error(tmp_path, Call("csv", {"path": path, "delimiter": ","}), {"n": "int"})
    assert err.row == 5 and "column 'n' is 'x', not an int" in str(err)

    path.write_text("prompt,n\na,1\nb,\n")
    err = _ds_error(tmp_path, Call("csv", {"path": path, "delimiter": ","}), {"n": "int"})
    assert err.row == 3 and "column 'n' is empty" in str(err)

    err = _ds_error(tmp_path, Call("csv", {"path": path, "delimiter": ","}), {"promt": "str"})
    assert err.row == 1 and "did you mean 'prompt'" in (err.hint or "")


def test_csv_ragged_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "data/chats.csv", "a,b\n1,2\n3\n")
    err = _ds_error(tmp_path, Call("csv", {"path": path, "delimiter": ","}))
    assert err.row == 3 and "expected 2 fields, got 1" in str(err)


def test_parquet_schema_errors(tmp_path: Path) -> None:
    path = tmp_path / "chats.parquet"
    pq.write_table(pa.table({"prompt": ["a", None, "c"], "n": [1, 2, 3]}), path)
    err = _ds_error(tmp_path, Call("parquet", {"path": path}), {"prompt": "str"})
    assert err.row == 2 and "column 'prompt' is null" in str(err)
    err = _ds_error(tmp_path, Call("parquet", {"path": path}), {"n": "str"})
    assert "column 'n' has type int64, the schema says str" in str(err)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    err = _ds_error(tmp_path, Call("jsonl", {"path": tmp_path / "data/nope.jsonl"}))
    assert str(err) == "data/nope.jsonl: file not found"
    path = _write(tmp_path, "data/empty.jsonl", "")
    assert "the file is empty" in str(_ds_error(tmp_path, Call("jsonl", {"path": path})))
    path.write_text("\n\n")
    assert "no rows" in str(_ds_error(tmp_path, Call("jsonl", {"path": path})))
    path = _write(tmp_path, "data/header.csv", "a,b\n")
    assert "no rows" in str(_ds_error(tmp_path, Call("csv", {"path": path, "delimiter": ","})))


def test_dataset_output_bytes_are_deterministic(tmp_path: Path) -> None:
    path = _write(tmp_path, "data/chats.jsonl", _jsonl(_prompts(5000)))
    source = Call("jsonl", {"path": path})
    _read_ds(tmp_path, source, {"prompt": "str"}, out="a")
    _read_ds(tmp_path, source, {"prompt": "str"}, out="b")
    assert (tmp_path / "a/data.parquet").read_bytes() == (tmp_path / "b/data.parquet").read_bytes()


# ---- curate --------------------------------------------------------------------------------


def test_curate_joins_two_tables(tmp_path: Path) -> None:
    chats = _artifact(tmp_path, "dataset.chats", _prompts(10))
    scores = _artifact(tmp_path, "dataset.scores", [{"n": i, "score": i % 3} for i in range(0, 10, 2)])
    meta, out = _curate(tmp_path, [chats, scores],
                        "SELECT c.prompt, s.score FROM chats c JOIN scores s USING (n) WHERE s.score > 0")
    assert meta == {"rows_in": {"chats": 10, "scores": 5}, "rows_out": 3}
    rows = pq.read_table(out / "data.parquet").to_pylist()
    # no ORDER BY: sorted by all columns
    assert rows == [{"prompt": "question 2", "score": 2}, {"prompt": "question 4", "score": 1},
                    {"prompt": "question 8", "score": 2}]


def test_curate_ported_input_is_named_after_its_block(tmp_path: Path) -> None:
    folder = tmp_path / "store" / "clean"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(_prompts(4)), folder / "train.parquet")
    art = Artifact(node="curate.clean", digest="1" * 64, path=folder, port="train")
    meta, _ = _curate(tmp_path, [art], "SELECT prompt FROM clean")
    assert meta == {"rows_in": {"clean": 4}, "rows_out": 4}


def test_curate_output_ignores_input_row_order(tmp_path: Path) -> None:
    rows = _prompts(2000)
    a = _artifact(tmp_path / "a", "dataset.chats", rows)
    random.Random(3).shuffle(rows)
    b = _artifact(tmp_path / "b", "dataset.chats", rows)
    sql = "SELECT DISTINCT prompt, response FROM chats WHERE n % 3 <> 0"
    _curate(tmp_path, [a], sql, out="out_a")
    _curate(tmp_path, [b], sql, out="out_b")
    assert (tmp_path / "out_a/data.parquet").read_bytes() == (tmp_path / "out_b/data.parquet").read_bytes()


def test_curate_keeps_order_by(tmp_path: Path) -> None:
    chats = _artifact(tmp_path, "dataset.chats", _prompts(50))
    _, out = _curate(tmp_path, [chats], "SELECT n, prompt FROM chats ORDER BY n % 7, n DESC;")
    ns = pq.read_table(out / "data.parquet").column("n").to_pylist()
    assert ns == sorted(range(50), key=lambda n: (n % 7, -n))


def test_curate_split_fractions_rerun_and_stability(tmp_path: Path) -> None:
    chats = _artifact(tmp_path / "small", "dataset.chats", _prompts(1000))
    split = {"parts": {"train": 0.8, "valid": 0.15, "heldout": 0.05}, "by": "prompt", "seed": 17}
    sql = "SELECT * FROM chats"
    meta, out = _curate(tmp_path, [chats], sql, split, out="a")
    assert meta["rows_out"] == 1000 and sum(meta["parts"].values()) == 1000
    assert list(meta["parts"]) == ["train", "valid", "heldout"]
    assert 740 <= meta["parts"]["train"] <= 860
    assert 110 <= meta["parts"]["valid"] <= 190
    assert 25 <= meta["parts"]["heldout"] <= 75

    def assignment(folder: Path) -> dict[str, str]:
        return {p: part for part in split["parts"]
                for p in pq.read_table(folder / f"{part}.parquet").column("prompt").to_pylist()}

    first = assignment(out)
    # rows keep their order within each part (here: sorted, as there is no ORDER BY)
    train = pq.read_table(out / "train.parquet").column("prompt").to_pylist()
    assert train == sorted(train)

    _, again = _curate(tmp_path, [chats], sql, split, out="b")
    for part in split["parts"]:
        assert (out / f"{part}.parquet").read_bytes() == (again / f"{part}.parquet").read_bytes()

    # adding rows never moves existing ones
    bigger = _artifact(tmp_path / "big", "dataset.chats", _prompts(1000) + _prompts(500, start=1000))
    _, grown = _curate(tmp_path, [bigger], sql, split, out="c")
    second = assignment(grown)
    assert all(second[p] == part for p, part in first.items())

    # a different seed gives a different assignment
    _, reseeded = _curate(tmp_path, [chats], sql, {**split, "seed": 18}, out="d")
    assert assignment(reseeded) != first


def test_curate_split_keeps_equal_keys_together_and_writes_empty_parts(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i % 40}", "response": f"r{i}"} for i in range(400)]
    chats = _artifact(tmp_path, "dataset.chats", rows)
    split = {"parts": {"train": 0.5, "test": 0.5, "never": 0.0}, "by": "prompt", "seed": 1}
    meta, out = _curate(tmp_path, [chats], "SELECT * FROM chats ORDER BY response", split)
    assert meta["parts"]["never"] == 0 and (out / "never.parquet").exists()
    train = set(pq.read_table(out / "train.parquet").column("prompt").to_pylist())
    test = set(pq.read_table(out / "test.parquet").column("prompt").to_pylist())
    assert train and test and not train & test
    # ORDER BY order survives the split
    responses = pq.read_table(out / "test.parquet").column("response").to_pylist()
    assert responses == sorted(responses)


def test_curate_split_by_unknown_column(tmp_path: Path) -> None:
    chats = _artifact(tmp_path, "dataset.chats", _prompts(10))
    with pytest.raises(StepError) as info:
        _curate(tmp_path, [chats], "SELECT prompt AS p, response FROM chats",
                {"parts": {"train": 0.9, "heldout": 0.1}, "by": "prompt", "seed": 0})
    assert "no column 'prompt'" in str(info.value)


def test_curate_sql_errors_are_step_errors(tmp_path: Path) -> None:
    chats = _artifact(tmp_path, "dataset.chats", _prompts(3))
    with pytest.raises(StepError) as info:
        _curate(tmp_path, [chats], "SELECT promt FROM chats", out="a")
    assert "SQL error" in str(info.value) and "promt" in str(info.value)
    assert "chats(prompt, response, n)" in (info.value.hint or "")

    with pytest.raises(StepError) as info:
        _curate(tmp_path, [chats], "SELECT * FROM chat", out="b")
    assert "named after its block" in (info.value.hint or "")

    with pytest.raises(StepError):
        _curate(tmp_path, [chats], "SELEC * FROM chats", out="c")


def test_curate_reads_only_its_inputs(tmp_path: Path) -> None:
    chats = _artifact(tmp_path, "dataset.chats", _prompts(3))
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1]}), other)
    with pytest.raises(StepError) as info:
        _curate(tmp_path, [chats], f"SELECT * FROM read_parquet('{other}')")
    assert "dataset blocks" in (info.value.hint or "")


def test_curate_rejects_non_queries(tmp_path: Path) -> None:
    chats = _artifact(tmp_path, "dataset.chats", _prompts(3))
    with pytest.raises(StepError) as info:
        _curate(tmp_path, [chats], "CREATE TABLE x AS SELECT * FROM chats", out="a")
    assert "must be a query" in str(info.value)
    # set-up statements before the query are fine
    meta, _ = _curate(tmp_path, [chats], "CREATE MACRO twice(x) AS x * 2; SELECT twice(n) AS m FROM chats",
                      out="b")
    assert meta["rows_out"] == 3


def test_jsonl_null_line_and_invalid_utf8_are_errors(tmp_path: Path) -> None:
    # pyarrow alone would read a `null` line as a row of nulls and keep invalid UTF-8
    path = _write(tmp_path, "data/chats.jsonl", '{"a": 1}\nnull\n')
    err = _ds_error(tmp_path, Call("jsonl", {"path": path}))
    assert err.row == 2 and "got null" in str(err)
    path.write_bytes(b'{"a": "ok"}\n{"a": "\xff"}\n')
    err = _ds_error(tmp_path, Call("jsonl", {"path": path}))
    assert err.row == 2 and "not valid UTF-8" in str(err)


def test_curate_order_by_only_inside_a_cte_is_not_kept(tmp_path: Path) -> None:
    chats = _artifact(tmp_path, "dataset.chats", _prompts(5))
    _, out = _curate(tmp_path, [chats], "WITH x AS (SELECT n FROM chats ORDER BY n DESC) SELECT n FROM x")
    assert pq.read_table(out / "data.parquet").column("n").to_pylist() == [0, 1, 2, 3, 4]


def test_order_by_detection_falls_back_to_duckdb() -> None:
    import duckdb

    con = duckdb.connect()
    assert curate._duckdb_has_order(con, "SELECT 1 AS a UNION ALL SELECT 2 ORDER BY 1")
    assert not curate._duckdb_has_order(con, "WITH x AS (SELECT 1 AS a ORDER BY a) SELECT a FROM x")
    assert not curate._duckdb_has_order(con, "SELEC nonsense")


def test_curate_unstorable_column_is_a_step_error(tmp_path: Path) -> None:
    chats = _artifact(tmp_path, "dataset.chats", _prompts(2))
    with pytest.raises(StepError) as info:
        _curate(tmp_path, [chats], "SELECT prompt, INTERVAL 1 DAY AS wait FROM chats")
    assert "CAST" in (info.value.hint or "")
