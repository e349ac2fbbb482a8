"""The content-addressed cache under `.ft/` beside the .ft file.

  .ft/objects/<digest>/   committed artifacts, named by the digest of their files
  .ft/keys/<kk>/<key>.json   node key -> artifact digest, files, metadata
  .ft/state/<file>/<node>.json   what each node of one .ft file last resolved to (plan
                          reasons, gc roots); per file, so two files in a folder never
                          explain or keep each other's nodes
  .ft/tmp/                steps write here; commit is an atomic rename
  .ft/integrity/<digest>.json   each object file's sha256, size, mtime at commit
  .ft/quarantine/         corrupt objects, moved aside (never deleted by ftlang)
  .ft/cache/              step-owned caches (tokenized rows, trainer scratch)
  .ft/lock                one writer at a time (flock)
  .ft/ledger.journal      runs not yet folded into .ft/ledger.duckdb (runtime/ledger.py)

A key file is written only after its object is in place, so a reader never sees a
partial artifact; a crash leaves at most an unreferenced object or a tmp folder.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlang.runtime import integrity
from ftlang.runtime.hashing import tree_digest, tree_files


@dataclass
class Entry:
    key: str
    node: str
    digest: str
    files: dict[str, str]
    meta: dict[str, Any]

    def port_digest(self, port: str | None) -> str:
        if port is None:
            return self.digest
        return self.files.get(f"{port}.parquet", self.digest)


class Store:
    def __init__(self, root: Path, scope: str = "") -> None:
        """`scope` names the .ft file whose node state this store reads and writes."""
        self.root = root
        self.objects = root / "objects"
        self.keys = root / "keys"
        self.states = root / "state"
        self.state = self.states / scope if scope else self.states
        self.tmp = root / "tmp"
        self.cache = root / "cache"
        self.quarantine_dir = root / "quarantine"

    def ensure(self) -> None:
        for d in (self.objects, self.keys, self.state, self.tmp, self.cache):
            d.mkdir(parents=True, exist_ok=True)
        gi = self.root / ".gitignore"
        if not gi.exists():
            gi.write_text("*\n")

    # ---- action cache -------------------------------------------------------
    def _key_path(self, key: str) -> Path:
        return self.keys / key[:2] / f"{key}.json"

    def lookup(self, key: str) -> Entry | None:
        p = self._key_path(key)
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        entry = Entry(key, data["node"], data["digest"], data["files"], data.get("meta", {}))
        if not (self.objects / entry.digest).is_dir():
            return None  # object removed (gc, manual deletion): not cached
        return entry

    def object_path(self, digest: str) -> Path:
        return self.objects / digest

    # ---- writing ------------------------------------------------------------
    def new_tmp(self, node: str) -> Path:
        d = self.tmp / f"{node}-{uuid.uuid4().hex[:12]}"
        (d / "out").mkdir(parents=True)
        return d

    def commit(self, key: str, node: str, out: Path, meta: dict[str, Any]) -> Entry:
        """Moves `out` into objects/ under its digest, then records key -> digest."""
        files = tree_files(out)
        digest = tree_digest(files)
        final = self.objects / digest
        if final.exists() and self.check(digest, files) is not None:
            self.quarantine(digest)  # --force or a rerun repairs: the good copy replaces it
        if final.exists():
            shutil.rmtree(out, ignore_errors=True)
        else:
            _fsync_tree(out)
            os.replace(out, final)
        integrity.write_record(self.root, digest, files)
        entry = Entry(key, node, digest, files, meta)
        self._write_json(self._key_path(key), {"node": node, "digest": digest, "files": files, "meta": meta})
        return entry

    def check(self, digest: str, files: dict[str, str], full: bool = False) -> str | None:
        """What is wrong with a committed object, or None (see runtime/integrity.py)."""
        return integrity.problem(self.root, digest, files, full)

    def quarantine(self, digest: str) -> Path:
        """Moves a corrupt object out of objects/ (kept for inspection, never deleted)."""
        dest = self.quarantine_dir / f"{digest}-{uuid.uuid4().hex[:8]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.objects / digest, dest)
        integrity.record_path(self.root, digest).unlink(missing_ok=True)
        return dest

    def _write_json(self, path: Path, data: Any, *, unless_same: bool = False) -> None:
        """Atomic write; with `unless_same`, a file that already holds exactly this text is
        left alone (a no-op run rewrites no state file)."""
        text = json.dumps(data, sort_keys=True, default=str)
        if unless_same:
            try:
                if path.read_text() == text:
                    return
            except OSError:
                pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # ---- per-node state: what the last run resolved --------------------------
    def read_state(self, node: str) -> dict[str, Any] | None:
        state = _read_json(self.state / f"{node}.json")
        return state if isinstance(state, dict) else None

    def write_state(self, node: str, state: dict[str, Any]) -> None:
        self._write_json(self.state / f"{node}.json", state, unless_same=True)

    def scopes(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every .ft file's node states: file name -> node id -> state."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for d in sorted(self.states.iterdir()) if self.states.is_dir() else []:
            if d.is_dir():
                out[d.name] = {f.stem: st for f in sorted(d.glob("*.json"))
                               if (st := _read_json(f)) is not None}
        return out

    def clean_tmp(self) -> None:
        """Leftovers of interrupted steps (called while holding the lock)."""
        if self.tmp.exists():
            for p in self.tmp.iterdir():
                shutil.rmtree(p, ignore_errors=True)


def for_file(ft_file: Path) -> Store:
    """The store of a .ft file: `.ft/` beside it, with that file's own node state."""
    ft_file = Path(ft_file).resolve()
    return Store(ft_file.parent / ".ft", scope=ft_file.name)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class ProjectLock:
    """flock on .ft/lock: a second `ft run` waits (or fails with --no-wait)."""

    def __init__(self, root: Path) -> None:
        self.path = root / "lock"
        self.fd: int | None = None

    def acquire(self, wait: bool = True, on_wait: Any = None) -> bool:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                os.close(self.fd)
                self.fd = None
                return False
            if on_wait:
                on_wait(self.holder())
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
