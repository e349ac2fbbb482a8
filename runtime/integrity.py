"""Is a committed object still what was committed? The check behind "a corrupt
artifact is never used".

Cost model (runtime/README.md says the same):
- at commit, `.ft/integrity/<digest>.json` records each file's sha256, size and mtime_ns;
- whenever a cached object is about to be used (served as cached, read downstream,
  published), its file list is compared with the record, and then
  - an object of at most FULL_REHASH_BYTES is re-hashed whole (a few ms: the flipped
    byte that keeps size and mtime is caught too);
  - a larger one re-hashes only the files whose size or mtime changed, so a no-op run
    over multi-GB models stays a stat per file;
- `ft verify` always re-hashes everything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ftlang.runtime.hashing import file_sha256

FULL_REHASH_BYTES = 8 << 20


def _listing(obj: Path) -> dict[str, os.stat_result]:
    out = {}
    for dirpath, _, names in os.walk(obj):
        for name in names:
            full = os.path.join(dirpath, name)
            out[Path(full).relative_to(obj).as_posix()] = os.stat(full)
    return out


def record(obj: Path, files: dict[str, str]) -> dict[str, Any]:
    stats = _listing(obj)
    return {rel: [sha, stats[rel].st_size, stats[rel].st_mtime_ns] for rel, sha in files.items() if rel in stats}


def record_path(root: Path, digest: str) -> Path:
    return root / "integrity" / f"{digest}.json"


def write_record(root: Path, digest: str, files: dict[str, str]) -> None:
    path = record_path(root, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record(root / "objects" / digest, files)))
    os.replace(tmp, path)


def problem(root: Path, digest: str, files: dict[str, str], full: bool = False) -> str | None:
    """What is wrong with objects/<digest> against the files it was committed with, or None."""
    obj = root / "objects" / digest
    try:
        stats = _listing(obj)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    missing = sorted(set(files) - set(stats))
    if missing:
        return f"{missing[0]} is missing"
    extra = sorted(set(stats) - set(files))
    if extra:
        return f"{extra[0]} was added"
    try:
        rec = json.loads(record_path(root, digest).read_text())
    except (OSError, ValueError):
        rec = {}
    full = full or not rec or sum(st.st_size for st in stats.values()) <= FULL_REHASH_BYTES
    stale = not rec
    for rel in sorted(files):
        st = stats[rel]
        seen = rec.get(rel)
        same_stat = bool(seen) and seen[1] == st.st_size and seen[2] == st.st_mtime_ns
        stale = stale or not same_stat
        if not full and same_stat:
            continue
        try:
            actual = file_sha256(obj / rel)
        except OSError as exc:
            return f"{rel} cannot be read ({exc.strerror})"
        if actual != files[rel]:
            return f"{rel} does not match its digest"
    if stale:  # checked out, but the record is missing or old (a touch): refresh it
        try:
            write_record(root, digest, files)
        except OSError:
            pass
    return None
