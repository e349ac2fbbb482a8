"""Row-level tokenization cache: a row is tokenized once per (row content, tokenizer,
template, max length). Appending 1% of rows tokenizes about 1% of them.

Storage: Parquet segments per namespace under <cache>/tokens/: `<namespace>.h2.parquet` and
`<namespace>.h2.<tag>.parquet`, each with columns `h` (row hash) and one list<int32> column
per encoded field. A run that tokenized new rows writes them as one new segment (temp +
rename: a reader sees a whole segment or none); past SEGMENTS segments the next writer
folds them into the first. A rerun of a large dataset reads the segments, hashes its rows
and serves them in place (no dict per row, no rewrite of the rows already there).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    # Plain text fields (the common case) skip JSON: NUL-joined, blake2b-128 (~3x faster
    # per row, which every cached row pays). Text holding a NUL, and other values, take the
    # JSON form under sha256: 64 hex characters, so the two forms can never collide.
    if all(type(v) is str and "\0" not in v for v in values):
        return hashlib.blake2b("\0".join(values).encode(), digest_size=16).hexdigest()
    payload = json.dumps(values, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


SEGMENTS = 16  # segments of one namespace before a writer folds them into one file


def row_hashes(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> list[str]:
    """row_hash of every row (the same values), with the one- and two-field plain-text
    cases inlined: hashing is what every row served from the cache pays."""
    b2 = hashlib.blake2b
    if len(fields) == 2:
        a, b = fields
        out = []
        for r in rows:
            x, y = r.get(a), r.get(b)
            if type(x) is str and type(y) is str and "\0" not in x and "\0" not in y:
                out.append(b2(f"{x}\0{y}".encode(), digest_size=16).hexdigest())
            else:
                out.append(row_hash(r, fields))
        return out
    if len(fields) == 1:
        (a,) = fields
        return [b2(v.encode(), digest_size=16).hexdigest() if type(v := r.get(a)) is str and "\0" not in v
                else row_hash(r, fields) for r in rows]
    return [row_hash(r, fields) for r in rows]


class _Row(Mapping[str, Any]):
    """A cached row read in place from its segment's columns (no dict per row)."""

    __slots__ = ("_cols", "_i")

    def __init__(self, cols: dict[str, list[Any]], i: int) -> None:
        self._cols, self._i = cols, i

    def __getitem__(self, key: str) -> Any:
        return self._cols[key][self._i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cols)

    def __len__(self) -> int:
        return len(self._cols)


def _segments(folder: Path, ns: str) -> list[Path]:
    first = folder / f"{ns}.h2.parquet"  # .h2: row_hash's second form
    return ([first] if first.exists() else []) + sorted(folder.glob(f"{ns}.h2.*.parquet"))


def encode_rows(rows: Sequence[Mapping[str, Any]], fields: Sequence[str],
                encode_batch: Callable[[list[Mapping[str, Any]]], list[Encoded]],
                ns: str, cache_root: Path, batch: int = 1024,
                progress: Callable[..., None] | None = None) -> tuple[list[Mapping[str, Any]], TokenStats]:
    """Encoded rows in input order, tokenizing only rows this namespace has not seen."""
    with paused_gc():
        return _encode_rows(rows, fields, encode_batch, ns, cache_root, batch, progress)


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic GC off while a step builds many small acyclic lists (token ids, examples):
    each of its passes walks every object the process holds (a loaded tokenizer, the rows),
    and serving cached rows triggered enough of them to cost more than the conversion
    itself (bench/bench_tokens.py's cache cost went from 16% to 8-14%). Restored after,
    also on an error."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _encode_rows(rows: Sequence[Mapping[str, Any]], fields: Sequence[str],
                 encode_batch: Callable[[list[Mapping[str, Any]]], list[Encoded]],
                 ns: str, cache_root: Path, batch: int,
                 progress: Callable[..., None] | None) -> tuple[list[Mapping[str, Any]], TokenStats]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = cache_root / "tokens"
    read: list[tuple[Path, pa.Table]] = []
    for seg in _segments(folder, ns):
        try:
            table = pq.read_table(seg)
        except Exception:  # a damaged segment is only a cache: its rows are tokenized again
            continue
        if not read or table.schema == read[0][1].schema:
            read.append((seg, table))
    index: dict[str, tuple[dict[str, list[Any]], int]] = {}
    for _, table in read:
        cols = table.to_pydict()
        for i, h in enumerate(cols.pop("h")):
            index[h] = (cols, i)
    hashes = row_hashes(rows, fields)
    seen: set[str] = set()
    todo = []
    for i, h in enumerate(hashes):
        if h not in index and h not in seen:
            seen.add(h)
            todo.append(i)
    fresh: dict[str, Encoded] = {}
    for start in range(0, len(todo), batch):
        idx = todo[start:start + batch]
        for i, enc in zip(idx, encode_batch([rows[i] for i in idx]), strict=True):
            fresh[hashes[i]] = enc
        if progress is not None:
            progress(min(start + batch, len(todo)), len(todo), "rows tokenized")
    if fresh:
        _write(folder, ns, fresh, read)
    out: list[Mapping[str, Any]] = []
    for h in hashes:
        hit = index.get(h)
        out.append(_Row(*hit) if hit is not None else fresh[h])
    return out, TokenStats(len(rows), len(todo))


def _write(folder: Path, ns: str, fresh: dict[str, Encoded], read: list[tuple[Path, Any]]) -> None:
    """The fresh rows as a new segment; past SEGMENTS, every segment read folded into the
    first file (segments written meanwhile by another run stay, and are read next time)."""
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = sorted(next(iter(fresh.values())))
    keys = list(fresh)
    new = pa.table({"h": keys, **{c: pa.array([fresh[k][c] for k in keys], pa.list_(pa.int32()))
                                 for c in columns}})
    folder.mkdir(parents=True, exist_ok=True)
    fold = len(read) + 1 > SEGMENTS and all(t.schema == new.schema for _, t in read)
    target = folder / (f"{ns}.h2.parquet" if fold or not read else f"{ns}.h2.{uuid.uuid4().hex[:12]}.parquet")
    table = pa.concat_tables([t for _, t in read] + [new]) if fold else new
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, target)
    if fold:
        for seg, _ in read:
            if seg != target:
                seg.unlink(missing_ok=True)
