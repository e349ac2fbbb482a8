"""Pass 1: the symbol table. Blocks and presets by name, `use` imports (stdlib modules
and local files, with import cycles reported), unknown kinds, duplicate names."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ftlang.compiler import inline
from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, FtError, Label, did_you_mean
from ftlang.stdlib import registry

STDLIB_MODULES: dict[str, tuple[str, ...]] = {
    "stdlib.sources": tuple(registry.SOURCES),
    "stdlib.methods": tuple(registry.METHODS),
    "stdlib.inits": tuple(registry.INITS),
    "stdlib.metrics": tuple(registry.METRICS),
    "stdlib.templates": tuple(registry.TEMPLATES),
    "stdlib.evals": (),  # block presets only: stdlib/evals.ft
}


# Words the grammar reads as values (`true`, `sweep [...]`, `min loss on d`): a block or
# preset of that name parses but can never be referred to.
RESERVED = ("true", "false", "sweep", "min", "max")


@dataclass
class Symbols:
    blocks: dict[str, ast.Block] = field(default_factory=dict)  # name -> block
    presets: dict[str, ast.Preset] = field(default_factory=dict)  # name -> preset
    definitions: dict[str, ast.Definition] = field(default_factory=dict)  # one-liners, as written
    dirs: dict[str, Path] = field(default_factory=dict)  # imported block -> folder its paths start from
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # imported files, for rendering
    # Imports: `use "./lib.ft" { sft }` brings `sft` and, as hidden dependencies, what it
    # refers to there. origin: imported block -> the file it came through; hidden: a
    # dependency nobody imported by name -> (that file, the imported name that needs it).
    # Only blocks of that file may refer to a hidden name.
    origin: dict[str, str] = field(default_factory=dict)
    hidden: dict[str, tuple[str, str]] = field(default_factory=dict)

    def kind_of(self, name: str) -> str | None:
        b = self.blocks.get(name)
        return b.kind.name if b else None


@lru_cache(maxsize=32)
def stdlib_presets(family: str) -> tuple[str, ...]:
    """Presets of a family shipped in stdlib/<family>s.ft (`dora` for method), for help lines."""
    module = stdlib_module(f"stdlib.{family}s")
    if module is None:
        return ()
    return tuple(i.name.name for i in module.items if isinstance(i, ast.Preset) and i.kind.name == family)


@lru_cache(maxsize=32)
def stdlib_module(module: str) -> ast.Module | None:
    """The items a stdlib `.ft` file defines (stdlib.templates -> stdlib/templates.ft)."""
    from importlib import resources

    from ftlang.lang.parser import parse

    parts = module.split(".")
    if len(parts) != 2 or not re.fullmatch(r"\w+", parts[1]):
        return None
    res = resources.files("ftlang.stdlib").joinpath(parts[1] + ".ft")
    if not res.is_file():
        return None
    return parse(res.read_text(encoding="utf-8"), f"<{module}>")


def desugar(item: ast.Definition) -> ast.Block:
    """`template chat = chatml(system = "...")` is `template chat { style = chatml, system = ... }`."""
    value = item.value
    if isinstance(value, ast.CallExpr):
        style = ast.Attr("style", ast.Ref(value.name, value.name_span), value.name_span, value.name_span)
        body: list[ast.Stmt] = [style]
        body += [ast.Attr(k.name, k.value, k.span.to(k.value.span), k.span) for k in value.kwargs]
        # Positional arguments have no attribute to go to: check.positional_in_definition reports them.
        return ast.Block(item.kind, item.name, tuple(body), item.span)
    # Anything else is checked as the block's only attribute, which reports the mistake.
    return ast.Block(item.kind, item.name, (ast.Attr("style", value, value.span, value.span),), item.span)


def collect(module: ast.Module, project: Path | None = None) -> Symbols:
    """The symbol table of `module`; `project` is the folder local imports start from."""
    base = project or Path(module.file).resolve().parent
    return _Loader(base, module.file).collect(module, base, ())


class _Loader:
    """Reads imported files once each (a diamond of imports parses a file once)."""

    def __init__(self, project: Path, main: str) -> None:
        self.project = project
        self.main_shown = main  # the main file's name in diagnostics; it lies in `project`
        self.main_path = (project / Path(main).name).resolve()
        self.tables: dict[str, Symbols] = {}

    def collect(self, module: ast.Module, base: Path, stack: tuple[str, ...]) -> Symbols:
        syms = Symbols()
        for item in module.items:
            if isinstance(item, (ast.Block, ast.Definition, ast.Preset)) and item.name.name in RESERVED:
                _reserved(item.name, syms)  # here, not in _add: an imported block is reported once
            if isinstance(item, ast.Use):
                self.use(item, syms, base, stack + (module.file,))
            elif isinstance(item, ast.Preset):
                _add_preset(item, syms)
            elif isinstance(item, ast.Definition):
                if _add(desugar(item), syms):
                    syms.definitions[item.name.name] = item
            elif isinstance(item, ast.Settings):
                continue  # file-wide settings: compiler/settings.py
            elif isinstance(item, ast.Block):
                for block in inline.expand(item):  # `data = mix(a = 0.7, b = 0.3)`: a mix block
                    _add(block, syms)
            else:
                _add(item, syms)
        return syms

    def use(self, use: ast.Use, syms: Symbols, base: Path, stack: tuple[str, ...]) -> None:
        if use.is_file:
            lib = self.local(use, syms, base, stack)
            offered: tuple[str, ...] = ()
        else:
            known = STDLIB_MODULES.get(use.module, ())
            lib = self.stdlib(use, syms, stack)
            if lib is None and not known:
                guess = did_you_mean(use.module, list(STDLIB_MODULES))
                syms.diagnostics.append(Diagnostic(
                    "FT0117", f"unknown module `{use.module}`", [Label(use.span, "no such module")],
                    help=f"did you mean `{guess}`?" if guess else
                    f"modules: {', '.join(STDLIB_MODULES)}, or a file: use \"./other.ft\" {{ name }}"))
                return
            offered = known
        if lib is None and use.is_file:
            return
        for n in use.names:
            if lib is not None and (n.name in lib.blocks or n.name in lib.presets):
                _import(n.name, lib, syms, use.module if use.is_file else f"<{use.module}>")
            elif n.name not in offered:
                names = sorted({*offered, *(lib.blocks if lib else ()), *(lib.presets if lib else ())})
                guess = did_you_mean(n.name, names)
                syms.diagnostics.append(Diagnostic(
                    "FT0117", f"`{use.module}` has no `{n.name}`", [Label(n.span, "not in this module")],
                    help=f"did you mean `{guess}`?" if guess else f"it offers: {', '.join(names) or 'nothing'}"))

    def stdlib(self, use: ast.Use, syms: Symbols, stack: tuple[str, ...]) -> Symbols | None:
        if not use.module.startswith("stdlib."):
            return None
        key = f"<{use.module}>"
        if key not in self.tables:
            module = stdlib_module(use.module)
            if module is None:
                return None
            self.tables[key] = self.collect(module, self.project, stack)
            self.tables[key].sources[key] = module.source
        lib = self.tables[key]
        syms.sources.update(lib.sources)
        syms.diagnostics += lib.diagnostics
        lib.diagnostics = []
        return lib

    def local(self, use: ast.Use, syms: Symbols, base: Path, stack: tuple[str, ...]) -> Symbols | None:
        from ftlang.lang.parser import parse, read_source

        path = (base / use.module).resolve()
        display = self.shown(path)
        if display in stack:
            chain = " -> ".join([*stack[stack.index(display):], display])
            syms.diagnostics.append(Diagnostic(
                "FT0124", f"import cycle: {chain}", [Label(use.span, "this import closes the cycle")],
                help="move the shared blocks into a third file that both import"))
            return None
        if display in self.tables:
            return self.tables[display]
        if path.suffix != ".ft":
            # Refused before reading: a parse error would quote the first line of, say, a key file.
            syms.diagnostics.append(Diagnostic(
                "FT0131", f"cannot import {use.module}: not a .ft file", [Label(use.span, "not a .ft file")],
                help="`use` reads ftlang files (names ending in .ft); data files belong in a dataset's source"))
            return None
        if _missing(path):
            near = did_you_mean(path.name, [p.name for p in path.parent.glob("*.ft")]) \
                if path.parent.is_dir() else None
            syms.diagnostics.append(Diagnostic(
                "FT0111", f"cannot import {use.module}: no such file", [Label(use.span, "no such file")],
                help=f'did you mean "{near}"?' if near else
                "paths in `use` are relative to the importing file's folder"))
            return None
        try:  # as the main file is read: a regular file (a pipe would hang), UTF-8, BOM dropped
            text = read_source(path, display)
        except FtError as exc:
            imported = Label(use.span, "imported here", primary=not any(d.span for d in exc.diagnostics))
            for d in exc.diagnostics:  # unreadable: no span of its own, shown on the `use`
                syms.diagnostics.append(Diagnostic(d.code, d.message, [*d.labels, imported], d.level, d.help))
            syms.sources.update(exc.sources)
            return None
        syms.sources[display] = text
        try:
            module = parse(text, display)
            module.source = text
        except FtError as exc:
            syms.diagnostics += exc.diagnostics
            return None
        lib = self.collect(module, path.parent, stack)
        lib.sources[display] = text
        for name in lib.blocks:
            lib.dirs.setdefault(name, path.parent)
        self.tables[display] = lib
        syms.sources.update(lib.sources)
        syms.diagnostics += lib.diagnostics
        lib.diagnostics = []
        return lib

    def shown(self, path: Path) -> str:
        """How an imported file is named in diagnostics: as the main file is. A main file
        named through a folder (`ft check sub/p.ft`): its imports through the same folder
        the name starts from (`sub/lib.ft`, so the name opens from the working folder). A
        main file named through `..` (`ft check ../m2.ft`): absolute (the working folder
        cannot be read back from the name). A main file named alone or absolute (an
        editor): relative to its folder, else absolute. `source_path` reads a name back."""
        if path == self.main_path:
            return self.main_shown  # an import back to the main file: one name for one file
        base = source_base(self.main_shown, self.project)
        if base is None:
            return str(path)
        if base != self.project:
            return os.path.relpath(path, base)
        try:
            return str(path.relative_to(self.project))
        except ValueError:
            return str(path)


def source_base(main_shown: str, project: Path) -> Path | None:
    """The folder a compile's relative source names start from: the project (the main
    file's folder) when the main file's name has no folder part or is absolute; the folder
    its name starts from when it has one (`sub/p.ft` in .../sub: ...); None when the name
    goes through `..` (then other files are named absolute)."""
    folder = Path(main_shown).parent
    if folder.is_absolute() or str(folder) == ".":
        return project
    if ".." in folder.parts:
        return None
    base = project.resolve()
    for _ in folder.parts:
        base = base.parent
    return base


def source_path(name: str, main_shown: str, project: Path) -> Path:
    """The file a source name in diagnostics (_Loader.shown) stands for (runtime/progcache.py
    and the language server read names back with it)."""
    if Path(name).is_absolute():
        return Path(name)
    return (source_base(main_shown, project) or project) / name


def _missing(path: Path) -> bool:
    """No such file; any other stat failure (permissions, a loop) is read_source's to explain."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def _import(name: str, lib: Symbols, syms: Symbols, via: str) -> None:
    """Brings `name` and, transitively, the blocks and presets it refers to in its file;
    those that were not imported by name stay hidden from the importing file."""
    syms.hidden.pop(name, None)  # imported by name now: visible, even if an earlier import hid it
    todo, seen = [name], set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in lib.presets:
            if n not in syms.presets:
                _add_preset(lib.presets[n], syms)
            elif syms.presets[n] is not lib.presets[n]:
                _duplicate(n, lib.presets[n].name.span, syms.presets[n].name.span, syms)
            if lib.presets[n].value is not None:
                todo += _names_in(lib.presets[n].value)
        if n in lib.blocks:
            block = lib.blocks[n]
            mine = syms.blocks.get(n)
            if mine is not None and mine is not block and n != name:
                _clash(n, via, name, mine.name.span, block.name.span, syms)
            elif mine is not block:
                syms.origin[n] = via
                if n != name:
                    syms.hidden[n] = (via, name)
                if _add(block, syms) and n in lib.definitions:
                    syms.definitions[n] = lib.definitions[n]
                if n in lib.dirs:
                    syms.dirs[n] = lib.dirs[n]
            for stmt in block.body:
                todo += _stmt_names(stmt)


def _clash(name: str, via: str, needed_by: str, here: ast.Span, there: ast.Span, syms: Symbols) -> None:
    """A block of the importing file has the name of a block an import needs."""
    syms.diagnostics.append(Diagnostic(
        "FT0103", f"the name `{name}` is also a block of {via}, which the imported `{needed_by}` uses",
        [Label(here, "defined here too"), Label(there, f"`{needed_by}` refers to this one", primary=False)],
        help="block names are shared by the whole pipeline (they name its steps): rename this one"))


def _stmt_names(stmt: ast.Stmt) -> list[str]:
    if isinstance(stmt, ast.Attr):
        return _names_in(stmt.value)
    if isinstance(stmt, ast.Sql):
        # Tables a query reads may be blocks (`from` can be left out).
        return re.findall(r"[A-Za-z_]\w*", stmt.text.value)
    if isinstance(stmt, ast.SubBlock):
        return [n for s in stmt.body for n in _stmt_names(s)]
    if isinstance(stmt, ast.Assert):
        return _names_in(stmt.expr)
    return []


def _names_in(expr: ast.Expr) -> list[str]:
    """First parts of references and call names inside an expression."""
    if isinstance(expr, ast.Ref):
        return [expr.parts[0]]
    if isinstance(expr, ast.CallExpr):
        out = [expr.name[0]]
        for a in expr.args:
            out += _names_in(a)
        for k in expr.kwargs:
            out += _names_in(k.value)
        return out
    if isinstance(expr, ast.ListExpr):
        return [n for x in expr.items for n in _names_in(x)]
    if isinstance(expr, ast.BinOp):
        return _names_in(expr.left) + _names_in(expr.right)
    if isinstance(expr, ast.Neg):
        return _names_in(expr.operand)
    if isinstance(expr, ast.Sweep):
        return _names_in(expr.items)
    if isinstance(expr, ast.Select):
        return [expr.data.parts[0]]
    return []


def _reserved(name: ast.Name, syms: Symbols) -> None:
    syms.diagnostics.append(Diagnostic(
        "FT0001", f"`{name.name}` is a reserved word and cannot name a block", [Label(name.span, "reserved")],
        help=f"{', '.join(f'`{w}`' for w in RESERVED)} are words of the language, never names: rename it"))


def _add_preset(p: ast.Preset, syms: Symbols) -> None:
    name = p.name.name
    if name in syms.presets:
        _duplicate(name, p.name.span, syms.presets[name].name.span, syms)
        return
    syms.presets[name] = p


def _duplicate(name: str, again: ast.Span, first: ast.Span, syms: Symbols) -> None:
    syms.diagnostics.append(Diagnostic(
        "FT0103", f"the name `{name}` is defined twice",
        [Label(again, "defined again here"), Label(first, "first defined here", primary=False)],
        help="block names are shared by all kinds: rename one of them"))


def _add(block: ast.Block, syms: Symbols) -> bool:
    kind = block.kind.name
    if kind not in registry.STEPS:
        guess = did_you_mean(kind, list(registry.STEPS))
        help_ = f"did you mean `{guess}`?" if guess else f"block kinds are: {', '.join(registry.STEPS)}"
        if kind in registry.CALLS:
            help_ = (f"a {kind} preset is written `{kind} {block.name.name}(params) = ...`; "
                     f"block kinds are: {', '.join(registry.STEPS)}")
        syms.diagnostics.append(Diagnostic(
            "FT0101", f"unknown block kind `{kind}`", [Label(block.kind.span, "not a block kind")],
            help=help_))
        return False
    name = block.name.name
    if name in syms.hidden and name in syms.blocks and syms.blocks[name] is not block:
        via, needed_by = syms.hidden[name]
        _clash(name, via, needed_by, block.name.span, syms.blocks[name].name.span, syms)
        return False
    if name in syms.blocks:
        _duplicate(name, block.name.span, syms.blocks[name].name.span, syms)
        return False
    syms.blocks[name] = block
    return True
