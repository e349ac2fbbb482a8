"""Content digests: files (with a git-index-like stat shortcut), folders, canonical JSON."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_files(root: Path) -> dict[str, str]:
    """relative path -> sha256 for every file below root (sorted, '/' separators)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            out[full.relative_to(root).as_posix()] = file_sha256(full)
    return out


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

    def digest(self, file: Path) -> str:
        st = file.stat()
        key = str(file.resolve())
        sig = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.entries.get(key)
        if entry and entry[:3] == sig and entry[4] - st.st_mtime_ns > self.RACY_NS:
            return str(entry[3])
        sha = file_sha256(file) if file.is_file() else tree_digest(tree_files(file))
        self.hashed.append(key)
        self.entries[key] = [*sig, sha, time.time_ns()]
        self.dirty = True
        return sha

    def save(self) -> None:
        if not self.dirty:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries))
        os.replace(tmp, self.path)
        self.dirty = False
