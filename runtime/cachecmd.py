"""Cache management: `ft cache ls|du`, `ft gc`, `ft verify`."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from ftlang.runtime import integrity
from ftlang.runtime.cli import EXIT_ERRORS, EXIT_FAILED, EXIT_OK, _root, _session, cmd_run
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


# ---- the commands -------------------------------------------------------------------

def cmd_cache(args: argparse.Namespace) -> int:
    from ftlang.runtime.display import table
    from ftlang.runtime.store import Store

    store = Store(_root(args))
    objs = objects(store)
    if args.action == "du":
        total = sum(o["size"] for o in objs.values())
        by_kind: dict[str, int] = {}
        for o in objs.values():
            kind = o["nodes"][0].split(".")[0] if o["nodes"] else "(unreferenced)"
            by_kind[kind] = by_kind.get(kind, 0) + o["size"]
        print(table(["kind", "size"], [[k, human(v)] for k, v in sorted(by_kind.items())]))
        print(f"\ntotal {human(total)} in {len(objs)} artifacts under {store.root}")
        return EXIT_OK
    print(table(["digest", "size", "nodes"], [[d[:16], human(o["size"]), ", ".join(o["nodes"])]
                                              for d, o in objs.items()]))
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    """Keeps what any .ft file in the folder last resolved, and what the last N runs used.

    The lock is taken before anything is decided: a run in progress finishes first, and
    its fresh artifacts are then in its state, so they are kept.
    """
    from ftlang.runtime import ledger
    from ftlang.runtime.store import ProjectLock

    session = _session(args)
    if session is None:
        return EXIT_ERRORS
    program, store = session.program, session.store
    lock = ProjectLock(store.root)
    lock.acquire(wait=True, on_wait=lambda pid: print(f"waiting for the ft run holding the project (pid {pid})...",
                                                       file=sys.stderr))
    try:
        mine = Path(program.file).name
        keep: set[str] = set()
        others: dict[str, int] = {}
        for scope, states in store.scopes().items():
            if scope == mine:  # only this file's current nodes: state of removed blocks goes
                digests = {st["digest"] for nid, st in states.items() if nid in program.nodes and st.get("digest")}
            elif (program.project / scope).is_file():
                digests = {st["digest"] for st in states.values() if st.get("digest")}
                others[scope] = len(digests)
            else:
                print(f"note: {scope} is gone: the artifacts only it used are not kept", file=sys.stderr)
                continue
            keep |= digests
        keep |= ledger.referenced_digests(store.root, args.keep_runs)
        removed, freed = gc(store, keep, dry_run=args.dry_run)
    finally:
        lock.release()
    verb = "would remove" if args.dry_run else "removed"
    also = f", {', '.join(sorted(others))}" if others else ""
    from ftlang.runtime.display import plural

    print(f"{verb} {plural(removed, 'artifact')}, {human(freed)}; kept {len(keep)} used by "
          f"{args.file}{also} and the last {args.keep_runs} runs")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-hashes every artifact; --repair quarantines the corrupt ones and rebuilds them."""
    from ftlang.runtime.display import plural
    from ftlang.runtime.store import ProjectLock, Store

    store = Store(_root(args))
    lock = ProjectLock(store.root)
    if args.repair:
        lock.acquire(wait=True)
    try:
        problems = verify(store)
        absent = missing(store)  # before quarantining: those are reported above
        for digest, why in problems:
            where = ""
            if args.repair:
                where = f"; moved to {store.quarantine(digest).relative_to(store.root.parent)}"
            print(f"corrupt: {digest[:16]}: {why}{where}")
        for line in absent:
            print(f"note: {line}")
    finally:
        lock.release()
    n = len(objects(store)) + (len(problems) if args.repair else 0)
    print(f"{plural(n, 'artifact')} checked, {plural(len(problems), 'problem')}")
    if not args.repair:
        if problems:
            print(f"run `ft verify {args.file} --repair` to quarantine and rebuild them")
        return EXIT_FAILED if problems else EXIT_OK
    if not problems:
        return EXIT_OK
    print(f"rebuilding with `ft run {args.file}` (other .ft files rebuild theirs on their next run)")
    run_args = argparse.Namespace(file=args.file, color=args.color, select=None, force=None, keep_going=True,
                                  no_wait=False, locked=False, quiet=False, verbose=False)
    return cmd_run(run_args)
