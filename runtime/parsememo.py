"""The parse memo on disk: after an edit, `ft check` / `ft plan` / `ft run` parse only the
top-level items whose text changed (lang/incremental.py).

`load(project, shown, package)` returns the memo the last compile of this file left (a
dict; empty when there is none, it is stale, or damaged); `save(...)` writes it back. It
lives beside the compiled-program cache, `.ft/progcache/<slot>.parse`, and like it is
written only where `.ft/` exists (`ft check` on a file never run creates nothing). An entry
is used only for the same ftlang and libraries (`package`, progcache's fingerprint: the
AST classes or the grammar may change) and when the sha256 of its payload matches; the
unpickler builds only the AST's own classes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

MAGIC = b"ftparse1\n"
_ALLOWED_MODULES = ("ftlang.lang.ast",)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module not in _ALLOWED_MODULES:
            raise pickle.UnpicklingError(f"{module}.{name} is not an AST class")
        return super().find_class(module, name)


def _path(entry: Path) -> Path:
    return entry.with_suffix(".parse")


def load(entry: Path, package: str) -> dict[Any, Any]:
    """The memo saved beside the progcache entry `entry`, or {}."""
    try:
        blob = _path(entry).read_bytes()
        if not blob.startswith(MAGIC):
            return {}
        end = blob.index(b"\n", len(MAGIC))
        head = json.loads(blob[len(MAGIC):end])
        payload = blob[end + 1:]
        if head.get("package") != package or head.get("payload") != hashlib.sha256(payload).hexdigest():
            return {}
        memo = _Unpickler(io.BytesIO(payload)).load()
    except Exception:  # any damage at all means: parse the whole file
        return {}
    return memo if isinstance(memo, dict) else {}


def save(entry: Path, package: str, memo: dict[Any, Any]) -> bool:
    """Writes the memo if `.ft/` exists; False when not written (any error: it only saves time)."""
    dest = _path(entry)
    if not dest.parent.parent.is_dir():
        return False
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    try:
        payload = pickle.dumps(memo, protocol=pickle.HIGHEST_PROTOCOL)
        head = {"package": package, "payload": hashlib.sha256(payload).hexdigest()}
        dest.parent.mkdir(exist_ok=True)
        tmp.write_bytes(MAGIC + json.dumps(head).encode() + b"\n" + payload)
        os.replace(tmp, dest)  # readers see the old memo or the new one, never half
        return True
    except Exception:
        tmp.unlink(missing_ok=True)
        return False
