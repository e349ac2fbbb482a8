"""Node keys: H(step kind, step version, semantic params, input digests, environment).

Not in a key: paths (a file enters by content digest), output locations, logging,
progress and worker counts (attributes declared `semantic=False`). See runtime/README.md.

`deterministic = false` (curate) says the output may differ between runs over the same
inputs, so no earlier result may stand in for it: a nonce unique to the run enters the key
instead of the flag. The default (true) adds nothing, so existing keys stay as they were.
"""

from __future__ import annotations

import platform
import shutil
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from ftlang.compiler.ir import DESCEND, EnvValue, FileValue, Node, OutPath, RefValue, transform
from ftlang.runtime.hashing import StatCache, digest_json
from ftlang.runtime.store import Entry
from ftlang.stdlib import distributed, registry
from ftlang.stdlib.spec import Call

TRAINING_PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "tokenizers")
DETERMINISTIC = "deterministic"  # the attribute; its value never enters a key as such
RERUNS_ALWAYS = "deterministic = false: reruns every time"  # the plan's reason
# Attributes (by step kind) that enter a key only when written: added after keys were pinned.
OMIT_WHEN_NONE: dict[str, frozenset[str]] = {"train": frozenset({"balance", "order", "eval_every", "pad_token",
                                                                  "pad_to_length", "attention", "trainable",
                                                                  "search"}),
                                              "eval": frozenset({"messages_field", "device", "adapter_base"}),
                                              "select": frozenset({"device"}),
                                              "dataset": frozenset({"shape"})}
# The same for call arguments (by call name): lora's modules_to_save came after lora's keys.
ARGS_OMIT_WHEN_NONE: dict[str, frozenset[str]] = {"lora": frozenset({"modules_to_save"})}


def reruns_always(node: Node) -> bool:
    """`deterministic = false`: the node's output may change between runs of the same inputs."""
    return node.params.get(DETERMINISTIC) is False


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


def _call_signature(call: Call) -> Any:
    """The signature the compiler resolved `call` against: its family's. The family only
    selects the signature (which arguments are semantic); it never enters the key. A Call
    built without one (by hand, or rebuilt by a transform) falls back to the first family
    that has the name."""
    family = registry.CALLS.get(call.family)
    if family is not None:
        return family.get(call.name)
    for table in registry.CALLS.values():
        if call.name in table:
            return table[call.name]
    return None


def canon(value: Any, inputs: dict[str, Entry], stat: StatCache) -> Any:
    """The semantic, path-free form of a resolved value."""
    def fn(v: Any) -> Any:
        if isinstance(v, RefValue):
            return {"ref": inputs[v.node].port_digest(v.port)}
        if isinstance(v, FileValue):
            return {"file": stat.digest(Path(v.abs))}
        if isinstance(v, OutPath):
            return None
        if isinstance(v, EnvValue):
            return {"env": v.name} if v.secret else v.value
        if isinstance(v, Call):
            sig = _call_signature(v)
            return {"call": v.name, "args": {k: canon(x, inputs, stat) for k, x in v.args.items()
                                             if (sig is None or (sig.attr(k) is None or sig.attr(k).semantic))
                                             and not (x is None and k in ARGS_OMIT_WHEN_NONE.get(v.name, ()))}}
        if isinstance(v, tuple):
            return [canon(x, inputs, stat) for x in v]
        return DESCEND

    return transform(value, fn)


def components(node: Node, inputs: dict[str, Entry], stat: StatCache,
               run_id: str | None = None) -> dict[str, Any]:
    """What the key hashes. `run_id` is the nonce of a `deterministic = false` node (a fresh
    one when not given: such a node never matches an earlier key)."""
    sig = node.spec.signature
    params = {}
    for name, value in node.params.items():
        attr = sig.attr(name)
        if (attr is not None and not attr.semantic) or name == DETERMINISTIC:
            continue
        if value is None and name in OMIT_WHEN_NONE.get(node.kind, ()):
            continue  # an attribute added later, not written: the keys from before stay valid
        if node.kind == "train" and name == distributed.NAME:
            # World size and strategy only; nothing when it is one plain process (README.md).
            value = distributed.key_part(value, lambda v: canon(v, inputs, stat))
            if value is None:
                continue
            params[name] = value
            continue
        params[name] = canon(value, inputs, stat)
    comp: dict[str, Any] = {"kind": node.kind, "version": node.spec.version, "params": params}
    if node.spec.trains:
        comp["env"] = environment()
    if node.kind == "curate" and isinstance(node.params.get("sql"), str):
        from ftlang.stdlib import sqlmacros

        macros = sqlmacros.used(node.params["sql"])
        if macros:  # only then: the keys of queries that call no stdlib macro stay as they were
            comp["macros"] = sqlmacros.digest(macros)
    if reruns_always(node):
        comp["nonce"] = run_id or uuid.uuid4().hex
    return comp


def node_key(comp: dict[str, Any]) -> str:
    return digest_json(comp)
