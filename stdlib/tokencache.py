"""Row-level tokenization cache: a row is tokenized once per (row content, tokenizer,
template, max length). Appending 1% of rows tokenizes about 1% of them.

Storage: Arrow IPC segments per namespace under <cache>/tokens/: `<namespace>.h3.arrow` and
`<namespace>.h3.<tag>.arrow`, each with columns `h` (row hash) and one list<int32> column
per encoded field. A run that tokenized new rows writes them as one new segment (temp +
rename: a reader sees a whole segment or none); past SEGMENTS segments the next writer
folds them into the first. A rerun of a large dataset maps the segments (IPC: no decoding,
as Parquet needed), hashes its rows
and serves them in place (no dict per row, no rewrite of the rows already there). Segments
of the earlier format (`.h2.parquet`: blake2b row hashes) are not read: their rows are
tokenized once more.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import xxhash
from ftlang.stdlib.gcpause import paused_gc

Encoded = dict[str, list[int]]


@dataclass
class TokenStats:
    rows: int  # rows asked for
    tokenized: int  # rows that were not in the cache and went through the tokenizer

    @property
    def fraction(self) -> float:
        return self.tokenized / self.rows if self.rows else 0.0


def namespace(**parts: Any) -> str:
    """A digest of everything that changes what a row tokenizes to."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def tokenizer_digest(folder: Path) -> str:
    """Digest of the tokenizer files in a model folder (weights do not matter here)."""
    h = hashlib.sha256()
    for name in sorted(("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja")):
        p = folder / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def row_hash(row: Mapping[str, Any], fields: Sequence[str]) -> str:
    values = [row.get(f) for f in fields]
    # Plain text fields (the common case) skip JSON: NUL-joined, xxh3-128 (faster than
    # blake2b, and every cached row pays it; a cache key, not a defence against crafted rows).
    # Text holding a NUL, and other values, take the JSON form under sha256: 64 hex
    # characters, so the two forms can never collide.
    if all(type(v) is str and "\0" not in v for v in values):
        return xxhash.xxh3_128_hexdigest("\0".join(values).encode())
    payload = json.dumps(values, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


SEGMENTS = 16  # segments of one namespace before a writer folds them into one file


def row_hashes(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> list[str]:
    """row_hash of every row (the same values). Hashing is what every row served from the
    cache pays, so when every value is text without a NUL (checked for all rows at once)
    the hashes are made by one chain of C-level maps, no Python code per row."""
    try:
        values = list(map(itemgetter(*fields), rows))
        keys = values if len(fields) == 1 else list(map("\0".join, values))
        # join and str.count fail on a value that is not text; the count finds a NUL in a value
        plain = sum(map(str.count, keys, repeat("\0"))) == len(keys) * (len(fields) - 1)
    except (KeyError, TypeError):
        plain = False
    if not plain:
        return [row_hash(r, fields) for r in rows]
    return list(map(xxhash.xxh3_128_hexdigest, map(str.encode, keys)))


class _Segment:
    """A segment's encoded columns as one flat Python list of token ids per column and the
    rows' offsets into it: two C-speed conversions per column, where `to_pydict` made a
    Python list per row and column through Arrow scalars (what a rerun's cached rows cost)."""

    __slots__ = ("flat", "offsets")

    def __init__(self, table: Any) -> None:
        import numpy as np
        import pyarrow as pa

        self.flat: dict[str, list[int]] = {}
        self.offsets: dict[str, list[int]] = {}
        for name in table.column_names:
            if name == "h":
                continue
            col = table.column(name).combine_chunks()
            if col.type != pa.list_(pa.int32()) or col.null_count or col.values.null_count:
                # not what _write writes: the general (slow) conversion, still correct
                rows = col.to_pylist()
                self.offsets[name] = [0, *np.cumsum([len(r) for r in rows]).tolist()]
                self.flat[name] = [t for r in rows for t in r]
                continue
            self.offsets[name] = _int32s(col.offsets).tolist()
            self.flat[name] = _int32s(col.values).tolist()


def _int32s(arr: Any) -> Any:
    """An int32 Arrow array without nulls as a numpy view of its buffer (no copy; not
    Array.to_numpy, which imports pandas)."""
    import numpy as np

    return np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr), offset=arr.offset * 4)


class _Row(Mapping[str, Any]):
    """A cached row read in place from its segment (no dict per row): each field is the
    row's slice of the column's flat token list."""

    __slots__ = ("_seg", "_i")

    def __init__(self, seg: _Segment, i: int) -> None:
        self._seg, self._i = seg, i

    def __getitem__(self, key: str) -> Any:
        offsets, i = self._seg.offsets[key], self._i
        return self._seg.flat[key][offsets[i]:offsets[i + 1]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._seg.flat)

    def __len__(self) -> int:
        return len(self._seg.flat)


def _segments(folder: Path, ns: str) -> list[Path]:
    first = folder / f"{ns}.h3.arrow"  # .h3: row_hash's third form
    return ([first] if first.exists() else []) + sorted(folder.glob(f"{ns}.h3.*.arrow"))


def encode_rows(rows: Sequence[Mapping[str, Any]], fields: Sequence[str],
                encode_batch: Callable[[list[Mapping[str, Any]]], list[Encoded]],
                ns: str, cache_root: Path, batch: int = 1024,
                progress: Callable[..., None] | None = None) -> tuple[list[Mapping[str, Any]], TokenStats]:
    """Encoded rows in input order, tokenizing only rows this namespace has not seen."""
    with paused_gc():
        return _encode_rows(rows, fields, encode_batch, ns, cache_root, batch, progress)


def _encode_rows(rows: Sequence[Mapping[str, Any]], fields: Sequence[str],
                 encode_batch: Callable[[list[Mapping[str, Any]]], list[Encoded]],
                 ns: str, cache_root: Path, batch: int,
                 progress: Callable[..., None] | None) -> tuple[list[Mapping[str, Any]], TokenStats]:
    import pyarrow as pa
    import pyarrow.feather as feather

    folder = cache_root / "tokens"
    read: list[tuple[Path, pa.Table]] = []
    for seg in _segments(folder, ns):
        try:
            table = feather.read_table(seg, memory_map=True)
            table.validate(full=True)  # offsets in bounds: a damaged file never serves a slice
        except Exception:  # a damaged segment is only a cache: its rows are tokenized again
            continue
        if not read or table.schema == read[0][1].schema:
            read.append((seg, table))
    # hash -> the row served for it: cached rows as _Rows, then the fresh ones as encoded
    index: dict[str, Mapping[str, Any]] = {}
    for _, table in read:
        seg = _Segment(table)
        index.update(zip(table.column("h").to_pylist(), map(_Row, repeat(seg), range(table.num_rows))))
    hashes = row_hashes(rows, fields)
    missing = set(hashes).difference(index)
    first: dict[str, int] = {}  # each missing row's first position, in input order
    if missing:
        for i, h in enumerate(hashes):
            if h in missing and h not in first:
                first[h] = i
    todo = list(first.values())
    fresh: dict[str, Encoded] = {}
    for start in range(0, len(todo), batch):
        idx = todo[start:start + batch]
        for i, enc in zip(idx, encode_batch([rows[i] for i in idx]), strict=True):
            fresh[hashes[i]] = enc
        if progress is not None:
            progress(min(start + batch, len(todo)), len(todo), "rows tokenized")
    if fresh:
        _write(folder, ns, fresh, read)
    index.update(fresh)
    return list(map(index.__getitem__, hashes)), TokenStats(len(rows), len(todo))


def _write(folder: Path, ns: str, fresh: dict[str, Encoded], read: list[tuple[Path, Any]]) -> None:
    """The fresh rows as a new segment; past SEGMENTS, every segment read folded into the
    first file (segments written meanwhile by another run stay, and are read next time)."""
    import uuid

    import pyarrow as pa
    import pyarrow.feather as feather

    columns = sorted(next(iter(fresh.values())))
    keys = list(fresh)
    new = pa.table({"h": keys, **{c: pa.array([fresh[k][c] for k in keys], pa.list_(pa.int32()))
                                 for c in columns}})
    folder.mkdir(parents=True, exist_ok=True)
    fold = len(read) + 1 > SEGMENTS and all(t.schema == new.schema for _, t in read)
    target = folder / (f"{ns}.h3.arrow" if fold or not read else f"{ns}.h3.{uuid.uuid4().hex[:12]}.arrow")
    table = pa.concat_tables([t for _, t in read] + [new]) if fold else new
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    feather.write_feather(table, tmp, compression="uncompressed")
    os.replace(tmp, target)
    if fold:
        for seg, _ in read:
            if seg != target:
                seg.unlink(missing_ok=True)
