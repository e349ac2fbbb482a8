"""curate's files are written by DuckDB's own Parquet writer (stdlib/curate.write_parts):
each part holds its rows sorted, in parquet_out's row groups; types keep their values; a
query that is not a pure function of its inputs runs once for all the parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ftlang.stdlib import curate, parquet_out
from ftlang.stdlib.spec import Artifact, StepContext, StepError

N = 100_000  # more than one row group (65,536 rows) in the largest part


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    folder = tmp_path_factory.mktemp("store") / "dataset.rows"
    folder.mkdir()
    table = pa.table({"prompt": [f"q{(i * 7919) % 5000}" for i in range(N)],
                      "completion": [f"a{i % 31}" for i in range(N)], "n": list(range(N))})
    pq.write_table(table, folder / "data.parquet", row_group_size=10_000)
    return Artifact(node="dataset.rows", digest="0" * 64, path=folder)


def _run(tmp_path: Path, art: Artifact, sql: str, split: dict[str, Any] | None = None,
         **params: Any) -> tuple[dict[str, Any], dict[str, pa.Table]]:
    out = tmp_path / "out"
    out.mkdir()
    ctx = StepContext(node="curate.c", name="c", params={"from": [art], "sql": sql, "split": split, **params},
                      out=out, project=tmp_path, cache=tmp_path / "cache")
    meta = curate.run(ctx)
    return meta, {p.stem: pq.read_table(p) for p in sorted(out.iterdir())}


def test_each_part_holds_its_rows_sorted_and_an_empty_part_is_written(tmp_path: Path, rows: Artifact) -> None:
    split = {"parts": {"train": 0.8, "none": 0.0, "heldout": 0.2}, "by": "prompt", "seed": 1}
    meta, files = _run(tmp_path, rows, "SELECT prompt, completion, n FROM rows", split)
    assert meta["parts"] == {p: t.num_rows for p, t in files.items()} and files["none"].num_rows == 0
    assert files["none"].schema.names == ["prompt", "completion", "n"]
    everything = pq.read_table(rows.dataset_file())
    assert sorted(files["train"]["n"].to_pylist() + files["heldout"]["n"].to_pylist()) == list(range(N))
    for part in ("train", "heldout"):
        got = files[part].to_pylist()
        assert got == sorted(got, key=lambda r: (r["prompt"], r["completion"], r["n"])), part
    # the part is the key's: a prompt never lands in two parts
    assert not set(files["train"]["prompt"].to_pylist()) & set(files["heldout"]["prompt"].to_pylist())
    groups = pq.ParquetFile(tmp_path / "out" / "train.parquet").metadata
    assert groups.num_row_groups > 1 and groups.row_group(0).num_rows == parquet_out.ROW_GROUP_SIZE
    assert everything.num_rows == meta["rows_in"]["rows"] == N


def test_wide_integers_keep_their_digits_and_uuids_are_text(tmp_path: Path, rows: Artifact) -> None:
    # DuckDB's writer alone stores HUGEINT as DOUBLE: 2^53 + 1 would come back as 2^53.
    sql = ("SELECT 9007199254740993::HUGEINT AS big, sum(n) AS total, "
           "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID AS id FROM rows")
    _, files = _run(tmp_path, rows, sql)
    table = files["data"]
    assert table.schema.field("big").type == pa.decimal128(38, 0)
    assert table.schema.field("id").type == pa.string()
    row = table.to_pylist()[0]
    assert int(row["big"]) == 9007199254740993 and int(row["total"]) == N * (N - 1) // 2
    assert row["id"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"


@pytest.mark.parametrize("expr", ["INTERVAL 3 DAY", "[INTERVAL 1 DAY]", "union_value(k := 2)"])
def test_a_type_parquet_cannot_hold_is_a_step_error(tmp_path: Path, rows: Artifact, expr: str) -> None:
    with pytest.raises(StepError) as err:
        _run(tmp_path, rows, f"SELECT {expr} AS d FROM rows")
    assert "cannot store column 'd'" in str(err.value) and "CAST" in (err.value.hint or "")


def test_a_seeded_random_query_runs_once_for_all_its_parts(tmp_path: Path, rows: Artifact) -> None:
    """Run again per part, random() would go on with the sequence: rows in two parts or none."""
    split = {"parts": {"a": 0.5, "b": 0.5}, "by": "r", "seed": 0}
    meta, files = _run(tmp_path, rows, "SELECT setseed(0.25); SELECT n, random() AS r FROM rows", split)
    assert sorted(files["a"]["n"].to_pylist() + files["b"]["n"].to_pylist()) == list(range(N))
    assert meta["rows_out"] == N


def test_an_ordered_query_keeps_its_order_in_each_part(tmp_path: Path, rows: Artifact) -> None:
    split = {"parts": {"a": 0.5, "b": 0.5}, "by": "prompt", "seed": 0}
    _, files = _run(tmp_path, rows, "SELECT n, prompt FROM rows ORDER BY n DESC", split)
    for part in ("a", "b"):
        got = files[part]["n"].to_pylist()
        assert got == sorted(got, reverse=True) and got, part
