"""curate writes its output batch by batch (stdlib/curate.stream_parquet): no whole result
in memory, and the same bytes as writing the whole table at once (dataset.write_parquet),
whatever sizes the batches come in, so the curate step's version and keys stay as they were."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pytest
from ftlang.stdlib import curate, dataset


class _Batches:
    """A relation that can only stream: `fetch_record_batch`, in the sizes given."""

    def __init__(self, table: pa.Table, sizes: list[int]) -> None:
        self.table, self.sizes = table, sizes

    def fetch_record_batch(self, rows: int) -> pa.RecordBatchReader:
        batches, at, i = [], 0, 0
        while at < self.table.num_rows:
            n = self.sizes[i % len(self.sizes)]
            batches.extend(self.table.slice(at, n).to_batches())
            at, i = at + n, i + 1
        return pa.RecordBatchReader.from_batches(self.table.schema, batches)


def _table(n: int) -> pa.Table:
    return pa.table({"prompt": [f"q {i % 977}" for i in range(n)],
                     "n": list(range(n)), "x": [i * 0.25 if i % 5 else None for i in range(n)]})


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("rows", [0, 10, (1 << 16) * 2 + 123])
@pytest.mark.parametrize("sizes", [[1000], [65536], [7, 70001, 3333]])
def test_streamed_file_is_byte_identical_to_the_whole_table(tmp_path: Path, rows: int, sizes: list[int]) -> None:
    table = _table(rows)
    dataset.write_parquet(table, tmp_path / "whole.parquet")
    counts = curate.stream_parquet(_Batches(table, sizes), {"data": tmp_path / "streamed.parquet"})
    assert counts == {"data": rows}
    assert _digest(tmp_path / "streamed.parquet") == _digest(tmp_path / "whole.parquet")


def test_streamed_parts_are_byte_identical_and_an_empty_part_is_written(tmp_path: Path) -> None:
    n = (1 << 16) + 500
    table = _table(n).append_column(curate._PART, pa.array([0 if i % 10 else 1 for i in range(n)], pa.int32()))
    body = table.drop_columns([curate._PART])
    idx = table.column(curate._PART).to_pylist()
    paths = {p: tmp_path / f"{p}.parquet" for p in ("train", "heldout", "none")}
    counts = curate.stream_parquet(_Batches(table, [4096, 999]), paths, part_column=curate._PART)
    assert counts == {"train": idx.count(0), "heldout": idx.count(1), "none": 0}
    for i, part in enumerate(paths):
        rows = body.filter(pa.array([v == i for v in idx]))
        dataset.write_parquet(rows, tmp_path / f"whole-{part}.parquet")
        assert _digest(paths[part]) == _digest(tmp_path / f"whole-{part}.parquet"), part
