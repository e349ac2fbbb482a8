"""Cache management: `ft cache ls|du`, `ft gc`, `ft verify`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ftlang.runtime import integrity
from ftlang.runtime.hashing import tree_digest, tree_files
from ftlang.runtime.store import Store


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def entries(store: Store) -> list[dict[str, Any]]:
    """Every key file with the object it points at."""
    out = []
    for kf in sorted(store.keys.rglob("*.json")) if store.keys.exists() else []:
        try:
            data = json.loads(kf.read_text())
        except (OSError, ValueError):
            continue
        obj = store.object_path(data["digest"])
        out.append({"key": kf.stem, "node": data["node"], "digest": data["digest"],
                    "present": obj.is_dir(), "file": kf, "files": data.get("files") or {}})
    return out


def objects(store: Store) -> dict[str, dict[str, Any]]:
    nodes: dict[str, set[str]] = {}
    for e in entries(store):
        nodes.setdefault(e["digest"], set()).add(e["node"])
    out = {}
    for obj in sorted(store.objects.iterdir()) if store.objects.exists() else []:
        out[obj.name] = {"digest": obj.name, "size": _size(obj), "nodes": sorted(nodes.get(obj.name, ())),
                         "mtime": obj.stat().st_mtime}
    return out


def _bases(store: Store, digest: str) -> set[str]:
    """Objects an artifact needs to load: an adapter needs its base model."""
    meta = store.object_path(digest) / "ftlang_model.json"
    found: set[str] = set()
    if meta.exists():
        try:
            base = json.loads(meta.read_text()).get("base")
        except ValueError:
            base = None
        if base and base not in found:
            found.add(base)
            found |= _bases(store, base)
    return found


def gc(store: Store, keep_digests: set[str], dry_run: bool = False) -> tuple[int, int]:
    """Deletes objects not in keep (plus what they need), and keys pointing at deleted ones."""
    keep = set(keep_digests)
    for d in list(keep):
        keep |= _bases(store, d)
    removed = freed = 0
    for digest, info in objects(store).items():
        if digest in keep:
            continue
        removed += 1
        freed += info["size"]
        if not dry_run:
            shutil.rmtree(store.object_path(digest), ignore_errors=True)
            integrity.record_path(store.root, digest).unlink(missing_ok=True)
    if not dry_run:
        for e in entries(store):
            if e["digest"] not in keep:
                e["file"].unlink(missing_ok=True)
        store.clean_tmp()
    return removed, freed


def verify(store: Store) -> list[tuple[str, str]]:
    """Re-hashes every object in full; returns (digest, problem) for each corrupt one."""
    files = {e["digest"]: e["files"] for e in entries(store) if e["present"] and e["files"]}
    problems = []
    for obj in sorted(store.objects.iterdir()) if store.objects.exists() else []:
        if obj.name in files:
            why = store.check(obj.name, files[obj.name], full=True)
        else:  # no key names its files: the folder's own digest is the test
            why = None if tree_digest(tree_files(obj)) == obj.name else "content does not match its digest"
        if why is not None:
            problems.append((obj.name, why))
    return problems


def missing(store: Store) -> list[str]:
    return [f"key {e['key'][:16]} ({e['node']}): its object {e['digest'][:16]} is missing"
            for e in entries(store) if not e["present"]]
