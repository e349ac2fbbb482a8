"""The compile memo on disk: after an edit, `ft check` / `ft plan` / `ft run` parse only the
top-level items whose text changed (lang/incremental.py) and ask DuckDB only about the
curate queries whose answer may differ (compiler/sqlrules.py).

`load(entry, package)` returns the compiler.Memo the last compile of this file left (empty
when there is none, it is stale, or damaged); `save(...)` writes it back. It
lives beside the compiled-program cache, `.ft/progcache/<slot>.parse`, and like it is
written only where `.ft/` exists (`ft check` on a file never run creates nothing). An entry
is used only for the same ftlang and libraries (`package`, progcache's fingerprint: the
AST classes, the grammar or DuckDB may change) and when the sha256 of its payload matches;
the unpickler builds only the AST's classes and compiler/sqlshape.py's (the rest is plain
dicts and tuples).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlang.runtime.progcache import read_sealed, write_sealed

if TYPE_CHECKING:
    from ftlang.compiler import Memo

MAGIC = b"ftmemo1\n"
_ALLOWED_MODULES = ("ftlang.lang.ast", "ftlang.compiler.sqlshape")  # plain data classes only


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module not in _ALLOWED_MODULES:
            raise pickle.UnpicklingError(f"{module}.{name} is not a memo class")
        return super().find_class(module, name)


def _path(entry: Path) -> Path:
    return entry.with_suffix(".parse")


def load(entry: Path, package: str) -> Memo:
    """The memo saved beside the progcache entry `entry`, or an empty one."""
    from ftlang.compiler import Memo

    sealed = read_sealed(_path(entry), MAGIC)
    if sealed is None or sealed[0].get("package") != package:
        return Memo()
    try:
        parts = _Unpickler(io.BytesIO(sealed[1])).load()
    except Exception:  # any damage at all means: compile everything
        return Memo()
    if not (isinstance(parts, dict) and isinstance(parts.get("parse"), dict)
            and isinstance(parts.get("sql"), dict)):
        return Memo()
    return Memo(parse=parts["parse"], sql=parts["sql"])


def save(entry: Path, package: str, memo: Memo) -> bool:
    """Writes the memo if `.ft/` exists; False when not written (any error: it only saves time)."""
    dest = _path(entry)
    if not dest.parent.parent.is_dir():
        return False
    try:
        payload = pickle.dumps({"parse": memo.parse, "sql": memo.sql}, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False
    return write_sealed(dest, MAGIC, {"package": package}, payload)
