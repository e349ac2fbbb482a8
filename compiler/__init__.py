"""ftlang.compiler: AST -> checked IR -> dependency graph (networkx on first use).

`compile_file(path)` runs PASSES in order and raises FtError with every error found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftlang.compiler.ir import Node, Program
from ftlang.lang.ast import Span


@dataclass
class Memo:
    """What a compile can reuse from the last compile of the same file (the caller keeps it:
    runtime/parsememo.py on disk, the language server per buffer); each pass that fills a
    part keeps only what this compile used."""

    parse: dict[Any, Any] = field(default_factory=dict)  # lang/incremental.py's pieces
    sql: dict[Any, Any] = field(default_factory=dict)  # sqlrules.SqlChecker's DuckDB answers
    stored: Any = None  # the caller's own record of what it saved (runtime/parsememo.py)


@dataclass
class Compilation:
    """The one state the passes read and extend, in order."""

    text: str
    file: str
    project: Path
    module: Any = None  # lang.ast.Module
    ctx: Any = None  # types.Ctx: symbols, diagnostics, sources
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Any] = field(default_factory=list)  # graph.build's (upstream, downstream, data)
    cyclic: bool = False
    remote: str | None = None  # cache { remote = ... }: the shared remote cache, never in a key
    memo: Memo | None = None


@dataclass(frozen=True)
class Pass:
    name: str  # "module.function", as compiler/README.md lists it
    run: Callable[[Compilation], None]


def _parse(c: Compilation) -> None:
    if c.memo is None:
        from ftlang.lang.parser import parse

        c.module = parse(c.text, c.file)
    else:
        from ftlang.lang.incremental import parse_with

        c.module = parse_with(c.text, c.file, c.memo.parse)


def _symbols(c: Compilation) -> None:
    from ftlang.compiler import symbols, types

    syms = symbols.collect(c.module, c.project)
    c.ctx = types.Ctx(syms, c.project, c.text, list(syms.diagnostics), sources={c.file: c.text, **syms.sources})


def _settings(c: Compilation) -> None:
    from ftlang.compiler import settings

    c.remote = settings.check(c.module, c.ctx)


def _check(c: Compilation) -> None:
    from ftlang.compiler import check

    c.nodes = check.check_blocks(c.ctx)
    if not c.module.items:  # an empty file "checks ok, 0 steps": say so, it is rarely meant
        at = c.module.version.span if c.module.version is not None else Span(c.file, 1, 1, 1, 1)
        c.ctx.warn("FT0133", f"{Path(c.file).name} declares nothing: no dataset, model or step", at,
                   "nothing after this" if c.module.version is not None else "empty",
                   help='start with a dataset: dataset d { source = jsonl("data/rows.jsonl") }, or '
                        "name the pipeline's .ft file")


def _contracts(c: Compilation) -> None:
    from ftlang.compiler import contracts

    used = contracts.check(c.nodes, c.ctx, c.memo.sql if c.memo is not None else None)
    if c.memo is not None:
        c.memo.sql = used


def _outputs(c: Compilation) -> None:
    from ftlang.compiler import outputs

    outputs.check(c.nodes, c.ctx)


def _select(c: Compilation) -> None:
    from ftlang.compiler import sweeps

    if any(n.select is not None for n in c.nodes.values()):
        c.nodes = sweeps.select_nodes(c.nodes, c.ctx)


def _graph(c: Compilation) -> None:
    from ftlang.compiler import graph

    c.edges, cycles = graph.build(c.nodes)
    c.ctx.diagnostics += cycles
    c.cyclic = bool(cycles)


def _expand(c: Compilation) -> None:
    from ftlang.compiler import graph, sweeps

    if c.cyclic or not sweeps.has_sweeps(c.nodes):
        return  # skipped, and free, when nothing is swept
    c.nodes = sweeps.expand(c.nodes, graph.order(c.nodes, c.edges), c.ctx)
    c.edges, _ = graph.build(c.nodes)


def _search(c: Compilation) -> None:
    from ftlang.compiler import graph, search

    if c.cyclic or not search.has_search(c.nodes):
        return  # skipped, and free, when nothing is searched
    c.nodes = search.expand(c.nodes, c.ctx)
    c.edges, _ = graph.build(c.nodes)


# The passes, in the order they run (documented in compiler/README.md).
PASSES: tuple[Pass, ...] = (
    Pass("lang.parser.parse", _parse),
    Pass("symbols.collect", _symbols),
    Pass("settings.check", _settings),
    Pass("check.check_blocks", _check),
    Pass("contracts.check", _contracts),
    Pass("outputs.check", _outputs),
    Pass("sweeps.select_nodes", _select),
    Pass("graph.build", _graph),
    Pass("sweeps.expand", _expand),
    Pass("search.expand", _search),
)


def compile_source(text: str, file: str | Path, project: Path | None = None,
                   memo: Memo | None = None) -> Program:
    """The checked Program of `text`; `memo` (kept by the caller between compiles of the
    same file) lets the parse reuse the items an edit did not touch."""
    from ftlang.lang.diagnostics import FtError

    file = str(file)
    c = Compilation(text, file, project or Path(file).resolve().parent, memo=memo)
    for p in PASSES:
        p.run(c)
    diagnostics = c.ctx.diagnostics
    sources = {file: text, **c.ctx.symbols.sources}
    if any(d.level == "error" for d in diagnostics):
        exc = FtError(sorted(diagnostics, key=_order))
        exc.sources = sources
        raise exc
    warnings = sorted((d for d in diagnostics if d.level != "error"), key=_order)
    return Program(Path(file), c.project, sources, c.nodes, c.edges, warnings, remote=c.remote)


def compile_file(path: str | Path) -> Program:
    from ftlang.lang.parser import read_source

    p = Path(path)
    shown = _display(p)
    text = read_source(p, shown)  # FtError (FT0131): unreadable, not a regular file, not UTF-8
    return compile_source(text, shown, p.resolve().parent)


def _display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        return str(p)


def _order(d: object) -> tuple[int, int]:
    span = getattr(d, "span", None)
    return (span.line, span.col) if span else (0, 0)


__all__ = ["Node", "Program", "compile_file", "compile_source", "PASSES"]
