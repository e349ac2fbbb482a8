"""Node keys: H(step kind, step version, semantic params, input digests, environment).

Not in a key: paths (a file enters by content digest), output locations, logging,
progress and worker counts (attributes declared `semantic=False`). See runtime/README.md.
"""

from __future__ import annotations

import platform
import shutil
from functools import lru_cache
from typing import Any

from ftlang.compiler.ir import EnvValue, FileValue, Node, OutPath, RefValue
from ftlang.runtime.hashing import StatCache, digest_json
from ftlang.runtime.store import Entry
from ftlang.stdlib import registry
from ftlang.stdlib.spec import Call

TRAINING_PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "tokenizers")


@lru_cache(maxsize=1)
def environment() -> dict[str, str]:
    """What a training result depends on besides its inputs; read without importing torch."""
    from importlib import metadata

    env = {}
    for pkg in TRAINING_PACKAGES:
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = "absent"
    env["device"] = "cuda" if shutil.which("nvidia-smi") else (
        "mps" if platform.system() == "Darwin" and platform.machine() == "arm64" else "cpu")
    env["machine"] = platform.machine()
    return env


def _call_signature(name: str) -> Any:
    for table in registry.CALLS.values():
        if name in table:
            return table[name]
    return None


def canon(value: Any, inputs: dict[str, Entry], stat: StatCache) -> Any:
    """The semantic, path-free form of a resolved value."""
    if isinstance(value, RefValue):
        return {"ref": inputs[value.node].port_digest(value.port)}
    if isinstance(value, FileValue):
        from pathlib import Path

        return {"file": stat.digest(Path(value.abs))}
    if isinstance(value, OutPath):
        return None
    if isinstance(value, EnvValue):
        return {"env": value.name} if value.secret else value.value
    if isinstance(value, Call):
        sig = _call_signature(value.name)
        args = {k: canon(v, inputs, stat) for k, v in value.args.items()
                if sig is None or (sig.attr(k) is None or sig.attr(k).semantic)}
        return {"call": value.name, "args": args}
    if isinstance(value, dict):
        return {k: canon(v, inputs, stat) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canon(v, inputs, stat) for v in value]
    return value


def components(node: Node, inputs: dict[str, Entry], stat: StatCache) -> dict[str, Any]:
    sig = node.spec.signature
    params = {}
    for name, value in node.params.items():
        attr = sig.attr(name)
        if attr is not None and not attr.semantic:
            continue
        params[name] = canon(value, inputs, stat)
    comp: dict[str, Any] = {"kind": node.kind, "version": node.spec.version, "params": params}
    if node.spec.trains:
        comp["env"] = environment()
    return comp


def node_key(comp: dict[str, Any]) -> str:
    return digest_json(comp)
