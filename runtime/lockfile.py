"""ft.lock: what a run resolved, as diff-friendly JSON beside the .ft file.

One lock holds a section per .ft file of the folder: source digests, model
revisions, package versions, seeds and the node keys. `ft run --locked` refuses to
run when the inputs differ from it.
"""

from __future__ import annotations

import json
import os
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


def read(program: Program) -> dict[str, Any] | None:
    try:
        data = json.loads(path_for(program).read_text())
    except (OSError, ValueError):
        return None
    return data.get(program.file.name)


def write(program: Program, facts: dict[str, Any], keys: dict[str, str]) -> None:
    path = path_for(program)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[program.file.name] = {**facts, "nodes": dict(sorted(keys.items()))}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


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
