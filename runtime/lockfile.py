"""ft.lock: what a run resolved, as diff-friendly JSON beside the .ft file.

One lock holds a section per .ft file of the folder: source digests, model
revisions, package versions, seeds and the node keys. `ft run --locked` refuses to
run when the inputs differ from it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from ftlang.compiler.ir import Program, files_in
from ftlang.runtime.hashing import StatCache
from ftlang.runtime.keys import environment

LOCK_NAME = "ft.lock"


def resolve(program: Program, stat: StatCache) -> dict[str, Any]:
    """The lockable facts of a program, computed without running anything."""
    sources: dict[str, str] = {}
    models: dict[str, Any] = {}
    seeds: dict[str, int] = {}
    for nid, node in program.nodes.items():
        for f in files_in(node.params):
            sources[f.rel] = "sha256:" + stat.digest(Path(f.abs))
        if node.kind == "model" and node.params.get("hub"):
            models[nid] = {"hub": node.params["hub"], "revision": node.params.get("revision")}
        for k in ("seed",):
            if isinstance(node.params.get(k), int):
                seeds[nid] = node.params[k]
        if isinstance(node.params.get("split"), dict):
            seeds[f"{nid}.split"] = node.params["split"].get("seed", 0)
    return {"sources": dict(sorted(sources.items())), "models": models, "seeds": dict(sorted(seeds.items())),
            "packages": {k: v for k, v in environment().items() if k not in ("device", "machine")}}


def path_for(program: Program) -> Path:
    return program.project / LOCK_NAME


class LockError(OSError):
    """ft.lock is there but is not a lock ftlang wrote: it is never replaced. An OSError, so
    a refused write after a run is reported like any other failed write of the lock."""


ASIDE = "move it aside and run again"  # the advice every LockError ends with
SECTIONS = ("sources", "models", "seeds", "packages", "nodes")


def _load(path: Path) -> dict[str, Any]:
    """The lock's sections by file name; {} when there is none. LockError when something
    is there that ftlang did not write (it is then never replaced)."""
    if not os.path.lexists(path):
        return {}

    def bad(why: str) -> LockError:
        return LockError(f"{path} is not an ftlang lock ({why}); it is left as it is: {ASIDE}")

    try:
        st = os.stat(path)  # before opening: a named pipe or a folder is never read
    except OSError as exc:
        raise bad(f"cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise bad("not a regular file")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise bad(f"cannot be read: {exc.strerror or exc}") from None
    except ValueError:
        raise bad("not JSON") from None
    if not isinstance(data, dict):
        raise bad("not a JSON object")
    for name, entry in data.items():
        # ftlang writes every section of every entry as an object: anything else is not ours
        if not isinstance(entry, dict) or not isinstance(entry.get("nodes"), dict) or \
                any(not isinstance(entry.get(k, {}), dict) for k in SECTIONS):
            raise bad(f"the entry {name!r} is not what ft run writes")
    return data


def check(program: Program) -> None:
    """LockError now, before a run, when ft.lock is there and is not ftlang's: the run
    would end unable to record its lock."""
    _load(path_for(program))


def read(program: Program) -> dict[str, Any] | None:
    return _load(path_for(program)).get(program.file.name)


def write(program: Program, facts: dict[str, Any], keys: dict[str, str]) -> None:
    """Adds this file's section, all at once (userfiles.replace: a crash leaves the old lock
    or the new one; a link stays a link, the mode is kept)."""
    from ftlang.runtime import userfiles

    path = path_for(program)
    data = _load(path)
    data[program.file.name] = {**facts, "nodes": dict(sorted(keys.items()))}
    userfiles.replace(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def differences(locked: dict[str, Any] | None, facts: dict[str, Any]) -> list[str]:
    """Human-readable differences between the lock and what the inputs are now."""
    if locked is None:
        return ["no ft.lock entry for this file: run once without --locked to create it"]
    out = []
    for section in ("sources", "models", "seeds", "packages"):
        old, new = locked.get(section, {}), facts.get(section, {})
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                out.append(f"{section}: {k}: locked {old.get(k, 'absent')}, now {new.get(k, 'absent')}")
    return out
