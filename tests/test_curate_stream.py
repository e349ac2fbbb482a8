"""Parquet written batch by batch (stdlib/parquet_out.write_batches, which a Parquet
dataset's copy goes through): no whole table in memory, and the same bytes as writing the
whole table at once (parquet_out.write_table), whatever sizes the batches come in, so the
step's version and keys stay as they were. (curate's output is DuckDB's: test_curate_write.py.)"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pytest
from ftlang.stdlib import dataset, parquet_out
from ftlang.stdlib.spec import Call, StepContext, StepError


def _batches(table: pa.Table, sizes: list[int]) -> list[pa.RecordBatch]:
    """The table's rows as batches of the sizes given, in turn."""
    batches, at, i = [], 0, 0
    while at < table.num_rows:
        n = sizes[i % len(sizes)]
        batches.extend(table.slice(at, n).to_batches())
        at, i = at + n, i + 1
    return batches


def _table(n: int) -> pa.Table:
    return pa.table({"prompt": [f"q {i % 977}" for i in range(n)],
                     "n": list(range(n)), "x": [i * 0.25 if i % 5 else None for i in range(n)]})


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("rows", [0, 10, (1 << 16) * 2 + 123])
@pytest.mark.parametrize("sizes", [[1000], [65536], [7, 70001, 3333]])
def test_streamed_file_is_byte_identical_to_the_whole_table(tmp_path: Path, rows: int, sizes: list[int]) -> None:
    table = _table(rows)
    parquet_out.write_table(table, tmp_path / "whole.parquet")
    count = parquet_out.write_batches(_batches(table, sizes), table.schema, tmp_path / "streamed.parquet")
    assert count == rows
    assert _digest(tmp_path / "streamed.parquet") == _digest(tmp_path / "whole.parquet")


# ---- a Parquet dataset is copied into the cache batch by batch --------------------------


def _copy(tmp_path: Path, src: Path, schema: dict[str, str] | None = None, out: str = "out") -> Path:
    (tmp_path / out).mkdir()
    ctx = StepContext(node="dataset.d", name="d", params={"source": Call("parquet", {"path": src}), "schema": schema},
                      out=tmp_path / out, project=tmp_path, cache=tmp_path / "cache")
    dataset.run(ctx)
    return tmp_path / out / "data.parquet"


def _mixed(n: int) -> pa.Table:
    msgs = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(n)]
    return _table(n).append_column("messages", pa.array(msgs)).append_column(
        "tag", pa.array([f"t{i % 3}" for i in range(n)]).dictionary_encode())


@pytest.mark.parametrize("row_group", [1000, 1 << 16, 200_000])
def test_a_parquet_dataset_streams_to_the_bytes_of_the_whole_table(tmp_path: Path, row_group: int) -> None:
    import pyarrow.parquet as pq

    table = _mixed((1 << 16) * 2 + 77)
    src = tmp_path / "src.parquet"
    pq.write_table(table.replace_schema_metadata({"writer": "someone"}), src, row_group_size=row_group)
    parquet_out.write_table(pq.read_table(src), tmp_path / "whole.parquet")  # the whole-table path
    assert _digest(_copy(tmp_path, src)) == _digest(tmp_path / "whole.parquet")


def test_a_streamed_parquet_dataset_casts_the_schema_and_names_the_null_row(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    n = (1 << 16) + 10
    src = tmp_path / "src.parquet"
    pq.write_table(pa.table({"n": pa.array(range(n), pa.int32())}), src, row_group_size=5000)
    assert pq.read_table(_copy(tmp_path, src, {"n": "int"})).schema.field("n").type == pa.int64()
    x = list(range(n))
    x[(1 << 16) + 3] = None  # in the second batch: the row is counted from the file's start
    pq.write_table(pa.table({"n": x}), src, row_group_size=5000)
    with pytest.raises(StepError) as err:
        _copy(tmp_path, src, {"n": "int"}, out="out2")
    assert err.value.row == (1 << 16) + 4 and "column 'n' is null" in str(err.value)


def test_a_parquet_schema_column_missing_gets_a_did_you_mean(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    src = tmp_path / "src.parquet"
    pq.write_table(pa.table({"prompt": ["a"], "completoin": ["b"]}), src)
    with pytest.raises(StepError) as err:
        _copy(tmp_path, src, {"prompt": "str", "completion": "str"})
    assert "column 'completion' is missing" in str(err.value) and "completoin" in (err.value.hint or "")


def test_a_large_parquet_dataset_is_never_one_table_in_memory(tmp_path: Path) -> None:
    """The copy holds a few row groups: its peak Arrow allocation, in a fresh process, is a
    fraction of the decoded size (the whole-table path held all of it, twice while merging
    chunks)."""
    import subprocess
    import sys

    import pyarrow.parquet as pq

    def peak(n: int) -> tuple[int, int]:
        big = pa.table({"text": [f"row {i} " + "x" * 150 for i in range(n)]})
        src, out = tmp_path / f"src{n}.parquet", tmp_path / f"out{n}"
        pq.write_table(big, src, row_group_size=1 << 16)
        code = f"""
import pyarrow as pa
from pathlib import Path
from ftlang.stdlib import dataset
from ftlang.stdlib.spec import Call, StepContext
out = Path({str(out)!r}); out.mkdir()
dataset.run(StepContext(node="dataset.d", name="d", params={{"source": Call("parquet", {{"path": Path({str(src)!r})}})}},
                        out=out, project=out.parent, cache=out.parent / "cache"))
print(pa.default_memory_pool().max_memory())
"""
        got = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        assert pq.read_table(out / "data.parquet").num_rows == n
        return got, big.nbytes

    large, whole = peak(1_200_000)
    assert large < whole / 2, (large, whole)


def test_batches_read_ahead_keep_their_order_and_raise_the_producers_error(tmp_path: Path) -> None:
    import threading

    from ftlang.stdlib.parquet_out import _ahead

    batches = [pa.record_batch({"n": [i]}) for i in range(50)]
    assert [b.column(0)[0].as_py() for b in _ahead(iter(batches))] == list(range(50))

    def failing():
        yield batches[0]
        raise StepError("bad row", row=7)

    got = []
    with pytest.raises(StepError, match="bad row"):
        for b in _ahead(failing()):
            got.append(b)
    assert len(got) == 1
    # A consumer that stops early stops the producer thread too.
    before = threading.active_count()
    gen = _ahead(iter(batches * 100))
    next(gen)
    gen.close()
    assert threading.active_count() == before
