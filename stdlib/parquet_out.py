"""Parquet files as ftlang writes them: the same rows and types always give the same bytes.

In:  a pyarrow Table (`write_table`) or a stream of RecordBatches with their schema
     (`write_batches`, for a file that must never be one table in memory).
Out: the file, and for `write_batches` the rows written.

curate's results do not pass through here: DuckDB writes them itself (curate.write_parts),
with the codec, level and row-group size below.

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
STORE_HINT = "CAST the column to a plainer type (VARCHAR, BIGINT, DOUBLE)"


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
        raise StepError(f"cannot store the rows as Parquet: {e}", hint=STORE_HINT) from None


def write_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: Path) -> int:
    """Write the batches' rows batch by batch, the same bytes as `write_table` of all of
    them; the rows written. At most about one row group is held in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    size = ROW_GROUP_SIZE
    schema = schema.remove_metadata()
    pending: list[pa.RecordBatch] = []
    held = count = 0
    settings = {k: v for k, v in options().items() if k != "row_group_size"}
    writer: Any = None
    try:
        writer = pq.ParquetWriter(path, schema, **settings)

        def flush(final: bool) -> None:
            nonlocal pending, held, count
            while held >= size or (final and (held or not count)):
                table = pa.Table.from_batches(pending, schema=schema)
                head, rest = table.slice(0, size), table.slice(size)
                writer.write_table(head.combine_chunks(), row_group_size=size)
                count += head.num_rows
                pending, held = rest.to_batches(), rest.num_rows
                if final and not count:
                    break  # no rows: one empty row group, as write_table writes it

        for batch in _ahead(batches):
            if batch.num_rows:
                pending.append(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
                held += batch.num_rows
                flush(final=False)
        flush(final=True)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise StepError(f"cannot store the rows as Parquet: {e}", hint=STORE_HINT) from None
    finally:
        if writer is not None:
            writer.close()
    return count


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
