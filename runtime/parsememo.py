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

After an edit of a few blocks only the new pieces are written, to a small delta file
beside it (`.delta`, which names the sha256 of the memo it extends); the whole memo is
written again, pruned to the pieces in use, when more than MAX_DELTA pieces are new or
unused: the save after a one-block edit of a large file writes kilobytes, not the file's
whole AST.
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


MAX_DELTA = 64  # new or unused pieces a delta may leave; past this the whole memo is written
DELTA_MAGIC = b"ftmemo1delta\n"


def _path(entry: Path) -> Path:
    return entry.with_suffix(".parse")


def _delta(entry: Path) -> Path:
    return entry.with_suffix(".delta")


def _parts(payload: bytes) -> dict[str, Any] | None:
    try:
        parts = _Unpickler(io.BytesIO(payload)).load()
    except Exception:  # any damage at all means: compile everything
        return None
    if not (isinstance(parts, dict) and isinstance(parts.get("parse"), dict)
            and isinstance(parts.get("sql"), dict)):
        return None
    return parts


def load(entry: Path, package: str) -> Memo:
    """The memo saved beside the progcache entry `entry` (its delta applied), or an empty one."""
    from ftlang.compiler import Memo

    sealed = read_sealed(_path(entry), MAGIC)
    if sealed is None or sealed[0].get("package") != package:
        return Memo()
    parts = _parts(sealed[1])
    if parts is None:
        return Memo()
    parse, sql = parts["parse"], parts["sql"]
    stored = (sealed[0]["payload"], frozenset(parse))
    delta = read_sealed(_delta(entry), DELTA_MAGIC)
    if delta is not None and delta[0].get("base") == stored[0] and delta[0].get("package") == package:
        more = _parts(delta[1])
        if more is not None:
            parse, sql = {**parse, **more["parse"]}, more["sql"]
    return Memo(parse=parse, sql=sql, stored=stored)


def save(entry: Path, package: str, memo: Memo) -> bool:
    """Writes the memo (or, beside the memo on disk, what is new in it) if `.ft/` exists;
    False when not written (any error: it only saves time)."""
    if not _path(entry).parent.parent.is_dir():
        return False
    stored = memo.stored
    try:
        if stored is not None:
            base, keys = stored
            new = {k: v for k, v in memo.parse.items() if k not in keys}
            if len(new) + len(keys - memo.parse.keys()) <= MAX_DELTA:
                payload = pickle.dumps({"parse": new, "sql": memo.sql}, protocol=pickle.HIGHEST_PROTOCOL)
                return write_sealed(_delta(entry), DELTA_MAGIC, {"package": package, "base": base}, payload)
        payload = pickle.dumps({"parse": memo.parse, "sql": memo.sql}, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False
    if not write_sealed(_path(entry), MAGIC, {"package": package}, payload):
        return False
    try:
        _delta(entry).unlink(missing_ok=True)  # it extended the memo just replaced
    except OSError:
        pass  # it names the old memo's sha256: never applied to this one
    return True
