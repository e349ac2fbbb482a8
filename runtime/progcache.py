"""The compiled-program cache: a no-op `ft run` / `ft status` without the compiler.

`load(path)` returns the Program a previous compile of the same file produced, or None;
`save(program)` writes one. An entry lives in `.ft/progcache/<name>.bin` (one per file,
working folder and path as given) and is used only when everything the compile read is
unchanged:

- the `.ft` text and the text of every file it `use`s (sha256 of each);
- ftlang itself (size and mtime of every module and `.ft`/`.lark` file of the installed
  package: a stdlib declaration or a step version changes them), the libraries the
  compiler consults (lark, sqlglot, duckdb, pyarrow: their files' size and mtime) and the
  Python version;
- every input file the program names (size, mtime, inode: contracts peek at columns),
  the values of the variables `env(...)` reads, HOME (`~` in paths) and the working
  folder (paths are shown relative to it).

The entry carries the sha256 of its own payload, checked before unpickling: a truncated,
flipped or foreign file is never used (the file is recompiled and the entry rewritten).
The cached Program holds the topological order and the edges, not a networkx graph: the
graph is rebuilt only when something asks for it (`--select`, `ft graph`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any

from ftlang.compiler.ir import Program, files_in

from ftlang import __version__

FORMAT = 3
MAGIC = b"ftprog2\n"
_ENV_CALL = re.compile(r"\benv\s*\(")
_ENV_NAME = re.compile(r"\benv\s*\(\s*\"((?:[^\"\\\n]|\\.)*)\"")
_PACKAGES = ("ftlang", "ftlang.lang", "ftlang.compiler", "ftlang.runtime", "ftlang.stdlib")
_LIBRARIES = ("lark", "sqlglot", "duckdb", "pyarrow")
# Module-level sentinels compared by identity (`default is REQUIRED`): pickled by name so
# that the unpickled program holds the very same objects.
_SENTINELS = (("ftlang.stdlib.spec", "REQUIRED"), ("ftlang.compiler.ir", "DESCEND"),
              ("ftlang.compiler.types", "INVALID"))


def sentinel(module: str, name: str) -> Any:
    """The module-level sentinel `module.name` itself (what the pickle stores for it)."""
    import importlib

    if (module, name) not in _SENTINELS:
        raise pickle.UnpicklingError(f"unknown reference {module}.{name}")
    return getattr(importlib.import_module(module), name)


class _Pickler(pickle.Pickler):
    """Sentinels by name, through a per-type reducer: a persistent_id hook would be a
    Python call for every object of the program."""

    def __init__(self, file: Any) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        found = {id(getattr(sys.modules[m], n)): (m, n) for m, n in _SENTINELS if m in sys.modules}

        def reduce(obj: Any) -> Any:
            ref = found.get(id(obj))
            return (sentinel, ref) if ref is not None else obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL)

        objs = [getattr(sys.modules[m], n) for m, n in _SENTINELS if m in sys.modules]
        self.dispatch_table = {type(o): reduce for o in objs}


class CachedProgram(Program):
    """A Program read from the cache: its order is stored with it."""

    _order: list[str]

    def order(self) -> list[str]:
        return list(self._order)


def _stat(path: str | Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _package_fingerprint() -> str:
    """Size and mtime of every file of ftlang's packages and of the libraries the compiler
    uses: a reinstall, an edit of a stdlib declaration or a library upgrade changes it."""
    import importlib.util

    h = hashlib.sha256(f"{FORMAT} {__version__} {sys.version}".encode())
    for name in _PACKAGES + _LIBRARIES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        dirs = list(spec.submodule_search_locations or []) if spec else []
        h.update(f"\0{name}:{len(dirs)}".encode())
        for d in dirs:
            # ftlang's packages are flat; a library's top folder holds its version files.
            try:
                names = sorted(e.name for e in os.scandir(d) if e.is_file())
            except OSError:
                continue
            for n in names:
                if name.startswith("ftlang") and not n.endswith((".py", ".ft", ".lark")):
                    continue
                h.update(f"{n}:{_stat(os.path.join(d, n))}".encode())
    return h.hexdigest()


def _entry_path(project: Path, shown: str) -> Path:
    """One slot per file as shown and working folder; what is in it is checked on use."""
    ident = json.dumps([str(project), shown, os.getcwd()])
    return project / ".ft" / "progcache" / (hashlib.sha256(ident.encode()).hexdigest()[:24] + ".bin")


def _env_names(sources: dict[str, str]) -> list[str] | None:
    """The variables `env("NAME", ...)` reads; None when some env( call is not a plain string
    name (then the file is not cached: we could not say what it depends on)."""
    names: set[str] = set()
    for text in sources.values():
        calls = len(_ENV_CALL.findall(text))
        found = _ENV_NAME.findall(text)
        if calls != len(found):
            return None
        names.update(found)
    return sorted(names)


def _facts(program: Program, main: str) -> dict[str, Any] | None:
    """Everything besides the main text that the compile of `program` read."""
    from ftlang.compiler.symbols import source_path

    used = {}
    for name, text in program.sources.items():
        if name == main or name.startswith("<"):
            continue  # the main file is checked by its own digest; <stdlib.x> is in the package
        p = source_path(name, main, program.project)
        used[str(p)] = hashlib.sha256(text.encode()).hexdigest()
    env = _env_names(program.sources)
    if env is None:
        return None
    files = sorted({f.abs for n in program.nodes.values() for f in files_in(n.params)})
    return {"used": used, "files": {f: _stat(f) for f in files},
            "env": {k: os.environ.get(k) for k in env}, "home": os.environ.get("HOME")}


def _still(facts: dict[str, Any]) -> bool:
    if facts["home"] != os.environ.get("HOME"):
        return False
    if any(os.environ.get(k) != v for k, v in facts["env"].items()):
        return False
    if any(_stat(f) != st for f, st in facts["files"].items()):
        return False
    for p, digest in facts["used"].items():
        try:
            text = Path(p).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False
        if hashlib.sha256(text.encode()).hexdigest() != digest:
            return False
    return True


def read_sealed(path: Path, magic: bytes) -> tuple[dict[str, Any], bytes] | None:
    """(head, payload) of a file that `write_sealed` wrote with `magic`, or None: missing,
    another format, or a payload whose sha256 is not the one its head records."""
    try:
        blob = path.read_bytes()
        if not blob.startswith(magic):
            return None
        end = blob.index(b"\n", len(magic))
        head = json.loads(blob[len(magic):end])
        payload = blob[end + 1:]
    except (OSError, ValueError):
        return None
    if not isinstance(head, dict) or head.get("payload") != hashlib.sha256(payload).hexdigest():
        return None
    return head, payload


def write_sealed(dest: Path, magic: bytes, head: dict[str, Any], payload: bytes) -> bool:
    """`magic`, `head` (with the payload's sha256 added) as one JSON line, then `payload`,
    by rename: readers see the old file or the new one, never half. False on any error."""
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    try:
        head = {**head, "payload": hashlib.sha256(payload).hexdigest()}
        dest.parent.mkdir(exist_ok=True)
        tmp.write_bytes(magic + json.dumps(head).encode() + b"\n" + payload)
        os.replace(tmp, dest)
        return True
    except Exception:  # a cache that cannot be written only costs the next compile
        tmp.unlink(missing_ok=True)
        return False


def load(project: Path, shown: str, text: str) -> Program | None:
    """The cached Program of the file `shown` in `project` whose text is `text`, or None
    (no entry, stale, corrupt)."""
    sealed = read_sealed(_entry_path(project, shown), MAGIC)
    if sealed is None:
        return None
    head, payload = sealed
    try:
        if (head.get("format") != FORMAT
                or head.get("text") != hashlib.sha256(text.encode()).hexdigest()
                or head.get("package") != _package_fingerprint()
                or not _still(head["facts"])):
            return None
        program = pickle.loads(payload)
    except Exception:  # any damage at all means: compile again
        return None
    if (not isinstance(program, CachedProgram) or str(program.file) != shown
            or program.project != project):
        return None
    return program


_PACKAGE = "_progcache_package"  # set on a Program by compile_cached: the fingerprint before compiling


def save(program: Program) -> bool:
    """Writes the cache entry for `program` if `.ft/` exists beside its file; False when
    it is not written (nothing to do, or any error: the cache only saves time). Only a
    program from `compile_cached` is saved: it carries the package fingerprint taken before
    it was compiled (taken later, an edit in between would be labelled as compiled in)."""
    shown = str(program.file)
    text = program.sources.get(shown)
    package = program.__dict__.get(_PACKAGE)
    if text is None or package is None or not (program.project / ".ft").is_dir():
        return False  # `ft check` on a file never run does not create .ft/
    try:
        facts = _facts(program, shown)
        if facts is None:
            return False
        buf = io.BytesIO()
        _Pickler(buf).dump(_cached(program))
    except Exception:  # a cache that cannot be written only costs the next compile
        return False
    head = {"format": FORMAT, "text": hashlib.sha256(text.encode()).hexdigest(),
            "package": package, "facts": facts}
    return write_sealed(_entry_path(program.project, shown), MAGIC, head, buf.getvalue())


def _cached(program: Program) -> CachedProgram:
    if isinstance(program, CachedProgram):
        return program
    out = CachedProgram.__new__(CachedProgram)
    out.__dict__.update({k: v for k, v in program.__dict__.items() if k not in ("_graph", _PACKAGE)})
    out._order = program.order()
    return out


def compile_cached(path: str | Path) -> Program:
    """`compiler.compile_file`, served from the cache when nothing it read has changed.
    Raises FtError as compile_file does (errors are never cached: they are recompiled).
    The cyclic collector is off meanwhile: a compile of 1,000 blocks allocates some
    hundred thousand AST, IR and pickle objects, none in a cycle."""
    from ftlang.stdlib.gcpause import paused_gc

    with paused_gc():
        return _compile_cached(path)


def _compile_cached(path: str | Path) -> Program:
    from ftlang.lang.parser import read_source

    p = Path(path)
    shown = _display(p)
    text = read_source(p, shown)
    project = p.resolve().parent
    program = load(project, shown, text)
    if program is not None:
        return program
    from ftlang.compiler import compile_source
    from ftlang.runtime import parsememo

    package = _package_fingerprint()  # before compiling: what the compile will read
    entry = _entry_path(project, shown)
    memo = parsememo.load(entry, package)
    before = (set(memo.parse), set(memo.sql))
    try:
        program = compile_source(text, shown, project, memo=memo)
    finally:  # a file with errors after parsing still parsed: the next check reuses its pieces
        if (set(memo.parse), set(memo.sql)) != before:
            parsememo.save(entry, package, memo)
    program.__dict__[_PACKAGE] = package
    save(program)
    return program


def _display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        return str(p)
