"""The compile memo on disk: after an edit, `ft check` / `ft plan` / `ft run` parse only the
top-level items whose text changed (lang/incremental.py) and ask DuckDB only about the
curate queries whose answer may differ (compiler/sqlrules.py).

`load(entry, package)` returns the compiler.Memo the last compile of this file left (empty
when there is none, it is stale, or damaged); `save(...)` writes it back. It
lives beside the compiled-program cache, `.ft/progcache/<slot>.parse`, and like it is
written only where `.ft/` exists (`ft check` on a file never run creates nothing). An entry
is used only for the same ftlang and libraries (`package`, progcache's fingerprint: the
AST classes, the grammar or DuckDB may change) and when the sha256 of its payload matches;
the unpickler builds only the AST's own classes (the rest is plain dicts and tuples).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftlang.compiler import Memo

MAGIC = b"ftmemo1\n"
_ALLOWED_MODULES = ("ftlang.lang.ast",)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module not in _ALLOWED_MODULES:
            raise pickle.UnpicklingError(f"{module}.{name} is not an AST class")
        return super().find_class(module, name)


def _path(entry: Path) -> Path:
    return entry.with_suffix(".parse")


def load(entry: Path, package: str) -> Memo:
    """The memo saved beside the progcache entry `entry`, or an empty one."""
    from ftlang.compiler import Memo

    try:
        blob = _path(entry).read_bytes()
        if not blob.startswith(MAGIC):
            return Memo()
        end = blob.index(b"\n", len(MAGIC))
        head = json.loads(blob[len(MAGIC):end])
        payload = blob[end + 1:]
        if head.get("package") != package or head.get("payload") != hashlib.sha256(payload).hexdigest():
            return Memo()
        parts = _Unpickler(io.BytesIO(payload)).load()
        if not (isinstance(parts, dict) and isinstance(parts.get("parse"), dict)
                and isinstance(parts.get("sql"), dict)):
            return Memo()
    except Exception:  # any damage at all means: compile everything
        return Memo()
    return Memo(parse=parts["parse"], sql=parts["sql"])


def save(entry: Path, package: str, memo: Memo) -> bool:
    """Writes the memo if `.ft/` exists; False when not written (any error: it only saves time)."""
    dest = _path(entry)
    if not dest.parent.parent.is_dir():
        return False
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    try:
        payload = pickle.dumps({"parse": memo.parse, "sql": memo.sql}, protocol=pickle.HIGHEST_PROTOCOL)
        head = {"package": package, "payload": hashlib.sha256(payload).hexdigest()}
        dest.parent.mkdir(exist_ok=True)
        tmp.write_bytes(MAGIC + json.dumps(head).encode() + b"\n" + payload)
        os.replace(tmp, dest)  # readers see the old memo or the new one, never half
        return True
    except Exception:
        tmp.unlink(missing_ok=True)
        return False
