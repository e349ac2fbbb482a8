"""Parquet files as ftlang writes them: the same rows and types always give the same bytes.

In:  a pyarrow Table (`write_table`) or a stream of RecordBatches with their schema
     (`write_batches`, for results that must never be one table in memory).
Out: the files, and for `write_batches` the rows written to each.

Settings are fixed: output bytes are content-hashed, so every knob that could change the
bytes (codec, level, row groups, page layout) must not depend on the input or on how the
rows arrived. Both writers give the same bytes for the same rows: row groups of exactly
ROW_GROUP_SIZE rows from the start of the file, each one chunk, no schema metadata (it
may carry a writer's provenance).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlang.stdlib.spec import StepError

if TYPE_CHECKING:  # pyarrow costs import time; steps that do not run must not pay it
    import pyarrow as pa

COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
ROW_GROUP_SIZE = 1 << 16
_STORE_HINT = "CAST the column to a plainer type (VARCHAR, BIGINT, DOUBLE)"


def options() -> dict[str, Any]:
    """pyarrow's writer settings for every dataset file ftlang writes."""
    return {"compression": COMPRESSION, "compression_level": COMPRESSION_LEVEL,
            "row_group_size": ROW_GROUP_SIZE, "use_dictionary": True, "write_statistics": True}


def write_table(table: pa.Table, path: Path) -> None:
    """Write a whole table (chunks are merged: page boundaries follow chunk boundaries,
    which depend on how the rows were produced)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = table.replace_schema_metadata(None).combine_chunks()
    try:
        pq.write_table(table, path, **options())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
        path.unlink(missing_ok=True)
        raise StepError(f"cannot store the rows as Parquet: {e}", hint=_STORE_HINT) from None


def write_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema, paths: dict[str, Path],
                  part_column: str | None = None, by_part: bool = False) -> dict[str, int]:
    """Write the batches' rows batch by batch, one file per part when `part_column` holds
    each row's index into `paths` (that column is not written); rows per file. At most
    about one row group per part is held in memory. `by_part`: the rows come ordered by
    their part index, so each batch is cut into slices (no per-row filter: pyarrow's
    compute functions import pandas on first use, which is slow)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    size = ROW_GROUP_SIZE
    schema = schema.remove_metadata()
    if part_column is not None:
        schema = schema.remove(schema.get_field_index(part_column))
    names = list(paths)
    pending: list[list[pa.RecordBatch]] = [[] for _ in names]
    held = [0] * len(names)
    counts = [0] * len(names)
    writers: list[Any] = []
    settings = {k: v for k, v in options().items() if k != "row_group_size"}
    last_part = 0
    try:
        writers = [pq.ParquetWriter(paths[n], schema, **settings) for n in names]

        def flush(i: int, final: bool) -> None:
            while held[i] >= size or (final and (held[i] or not counts[i])):
                table = pa.Table.from_batches(pending[i], schema=schema)
                head, rest = table.slice(0, size), table.slice(size)
                writers[i].write_table(head.combine_chunks(), row_group_size=size)
                counts[i] += head.num_rows
                pending[i], held[i] = rest.to_batches(), rest.num_rows
                if final and not counts[i]:
                    break  # an empty part: its one empty row group, as write_table writes it

        for batch in _ahead(batches):
            if part_column is None:
                pieces = [batch]
            elif by_part:
                idx = batch.column(part_column).to_numpy()
                body = batch.drop_columns([part_column])
                cuts = np.searchsorted(idx, np.arange(len(names) + 1), side="left")
                if len(idx) and (idx[0] < last_part or np.any(idx[1:] < idx[:-1])):
                    raise AssertionError("rows not ordered by part")  # a caller's bug, never data
                last_part = int(idx[-1]) if len(idx) else last_part
                pieces = [body.slice(int(a), int(b - a)) for a, b in zip(cuts, cuts[1:])]
            else:
                idx = batch.column(part_column)
                body = batch.drop_columns([part_column])
                pieces = [body.filter(pc.equal(idx, i)) for i in range(len(names))]
            for i, piece in enumerate(pieces):
                if piece.num_rows:
                    pending[i].append(pa.RecordBatch.from_arrays(piece.columns, schema=schema))
                    held[i] += piece.num_rows
                    flush(i, final=False)
        for i in range(len(names)):
            flush(i, final=True)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise StepError(f"cannot store the rows as Parquet: {e}", hint=_STORE_HINT) from None
    finally:
        for w in writers:
            w.close()
    return dict(zip(names, counts))


_DONE = object()


def _ahead(batches: Iterable[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """The batches, produced by a second thread up to `depth` ahead: reading and decoding
    (DuckDB's scan, pyarrow's Parquet reader; both release the GIL) overlap with the
    compression of the previous row group instead of waiting for it. The order is the
    same; an error in the producer is raised here; stopping early stops the producer."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put(e)
            return
        put(_DONE)

    worker = threading.Thread(target=produce, name="ft-parquet-read", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
