"""Content digests: files (with a git-index-like stat shortcut), folders, canonical JSON."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    return _hash_and_count(path)[0]


def regular_file(path: Path) -> os.stat_result:
    """The stat of `path`, a regular file; OSError otherwise. Reading a named pipe or a
    device would block or never end, so nothing is hashed before this check."""
    st = os.stat(path)  # a symlink loop raises ELOOP here
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a pipe, socket or device)"
        raise OSError(errno.EINVAL, f"{what}: refusing to hash it", str(path))
    return st


def _hash_and_count(path: Path) -> tuple[str, int]:
    """sha256 and the number of newline-terminated lines (rows of a JSONL/CSV file)."""
    regular_file(path)
    h = hashlib.sha256()
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            lines += chunk.count(b"\n")
    return h.hexdigest(), lines


def walk_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative path with '/' separators, full path) for every file below root, sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            yield full.relative_to(root).as_posix(), full


def tree_files(root: Path) -> dict[str, str]:
    """relative path -> sha256 for every file below root (sorted, '/' separators)."""
    return {rel: file_sha256(full) for rel, full in walk_files(root)}


def tree_digest(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + files[rel].encode() + b"\n")
    return h.hexdigest()


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest_json(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()


class StatCache:
    """Source digests keyed by (size, mtime_ns, inode), like git's index.

    A file whose mtime is within RACY_NS of when we hashed it is re-hashed next time
    (git's "racily clean" rule): a write in the same tick could keep the same stat.
    """

    RACY_NS = 2_000_000_000

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        self.hashed: list[str] = []  # files actually read this session (tests read it)
        if path.exists():
            try:
                self.entries = json.loads(path.read_text())
            except (OSError, ValueError):
                self.entries = {}

    @staticmethod
    def signature(path: Path) -> list[Any]:
        """(size, mtime_ns, inode) of a file; for a folder, the same over all its files,
        so a file rewritten inside a dataset or model folder is noticed."""
        if not path.is_dir():
            st = regular_file(path)
            return [st.st_size, st.st_mtime_ns, st.st_ino]
        stats = []
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                stats.append((p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns, st.st_ino))
        listing = hashlib.sha256(repr(stats).encode()).hexdigest()
        return [sum(x[1] for x in stats), max((x[2] for x in stats), default=0), listing]

    def digest(self, file: Path) -> str:
        key = _key(file)
        sig = self.signature(file)
        mtime = sig[1]
        entry = self.entries.get(key)
        if entry and entry[:3] == sig and entry[4] - mtime > self.RACY_NS:
            return str(entry[3])
        if not file.is_dir():
            sha, lines = _hash_and_count(file)  # refuses a pipe or device
        else:
            sha, lines = tree_digest(tree_files(file)), -1
        self.hashed.append(key)
        self.entries[key] = [*sig, sha, time.time_ns(), lines]
        self.dirty = True
        return sha

    def lines(self, file: Path) -> int | None:
        """Line count recorded with the digest (call digest() first)."""
        entry = self.entries.get(_key(file))
        return entry[5] if entry and len(entry) > 5 and entry[5] >= 0 else None

    def save(self) -> None:
        if not self.dirty:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries))
        os.replace(tmp, self.path)
        self.dirty = False


def _key(file: Path) -> str:
    try:
        return str(file.resolve())
    except RuntimeError:  # a symlink loop (Python 3.11); os.stat then raises ELOOP
        raise OSError(errno.ELOOP, "a symbolic link that loops back on itself", str(file)) from None
