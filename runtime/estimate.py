"""Training cost before training: tokens x parameters -> FLOPs -> time on this device.

FLOPs = 6 x parameters x tokens (forward + backward; Kaplan et al.). Tokens are an
upper bound (every sequence at max_length). The time uses the FLOP rate this machine
achieved on earlier training runs recorded in the ledger, and a conservative default
per device type when there is no history yet.
"""

from __future__ import annotations

import json
import statistics
import struct
from pathlib import Path
from typing import Any

from ftlang.compiler.ir import Node, Program, RefValue
from ftlang.runtime.keys import environment
from ftlang.runtime.store import Entry, Store
from ftlang.stdlib.spec import Call

DEFAULT_RATE = {"cpu": 1e11, "mps": 2e12, "cuda": 5e13}  # sustained training FLOP/s, cautious


def safetensors_params(folder: Path) -> int | None:
    """Parameter count from safetensors headers, without loading a tensor."""
    total = 0
    files = sorted(folder.glob("*.safetensors"))
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for d in info["shape"]:
                    count *= d
                total += count
    return total if files else None


def _artifact_params(store: Store, digest: str) -> int | None:
    folder = store.object_path(digest)
    meta_file = folder / "ftlang_model.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if meta.get("type") == "adapter" and meta.get("base"):
        return _artifact_params(store, meta["base"])
    if meta.get("type") == "link" and meta.get("path"):
        return safetensors_params(Path(meta["path"]))
    return safetensors_params(folder)


def _init_params(init: Call) -> int:
    h, layers = int(init.get("hidden") or 64), int(init.get("layers") or 2)
    inter = int(init.get("intermediate") or 4 * h)
    vocab = int(init.get("vocab") or 1024)
    return layers * (4 * h * h + 3 * h * inter) + 2 * vocab * h


def model_params(program: Program, nid: str, entries: dict[str, Entry], store: Store) -> int | None:
    """Parameters of the model a node produces: from its artifact, or from its recipe."""
    if nid in entries:
        n = _artifact_params(store, entries[nid].digest)
        if n:
            return n
    node = program.nodes.get(nid)
    if node is None:
        return None
    if node.kind == "model" and isinstance(node.params.get("init"), Call):
        return _init_params(node.params["init"])
    src = node.params.get("from")
    if isinstance(src, RefValue):
        return model_params(program, src.node, entries, store)
    return None


def train_tokens(node: Node, entries: dict[str, Entry]) -> int | None:
    p = node.params
    length = int(p.get("max_length") or 512)
    steps = int(p.get("max_steps") or -1)
    per_step = int(p.get("batch_size") or 8) * int(p.get("grad_accum") or 1) * length
    if steps > 0:
        return steps * per_step
    data = p.get("data")
    if isinstance(data, RefValue) and data.node in entries:
        meta = entries[data.node].meta
        rows = (meta.get("parts") or {}).get(data.port) if data.port else None
        rows = rows if rows is not None else meta.get("rows", meta.get("rows_out"))
        if isinstance(rows, int):
            return int(float(p.get("epochs") or 1.0) * rows * length)
    return None


def flops(program: Program, node: Node, entries: dict[str, Entry], store: Store) -> float | None:
    src = node.params.get("from")
    if node.kind != "train" or not isinstance(src, RefValue):
        return None
    n = model_params(program, src.node, entries, store)
    t = train_tokens(node, entries)
    return 6.0 * n * t if n and t else None


def rate(store: Store) -> tuple[float, str]:
    """FLOP/s this machine reached on earlier runs, or the device default."""
    device = environment()["device"]
    samples: list[float] = []
    from ftlang.runtime import ledger

    if ledger.exists(store.root):
        try:
            history = ledger.train_history(store.root)
        except ledger.LedgerError:  # an unreadable ledger only costs the calibration
            history = []
        for meta, seconds in history:
            est = meta.get("est_flops") if isinstance(meta, dict) else None
            if est and seconds and seconds > 0:
                samples.append(float(est) / float(seconds))
    if samples:
        return statistics.median(samples), f"{device}, from {len(samples)} earlier run{'s' * (len(samples) > 1)}"
    return DEFAULT_RATE.get(device, DEFAULT_RATE["cpu"]), f"{device}, no history yet"


def describe(total: float, flop_rate: float, basis: str) -> str:
    from ftlang.runtime.display import fmt_seconds

    return f"est. {total:.2g} FLOP, ~{fmt_seconds(total / flop_rate)} ({basis})"


def annotate(meta: dict[str, Any], program: Program, node: Node, entries: dict[str, Entry],
             store: Store) -> dict[str, Any]:
    """Adds the estimate to a finished train node's metadata, to calibrate later plans."""
    f = flops(program, node, entries, store)
    return {**meta, "est_flops": f} if f else meta
