"""ftlang.compiler: AST -> checked IR -> networkx graph.

`compile_file(path)` runs PASSES in order and raises FtError with every error found.
"""

from __future__ import annotations

from pathlib import Path

from ftlang.compiler.ir import Node, Program


def compile_source(text: str, file: str | Path, project: Path | None = None) -> Program:
    from ftlang.compiler import check, contracts, graph, outputs, sweeps, symbols, types
    from ftlang.lang.diagnostics import FtError
    from ftlang.lang.parser import parse

    file = str(file)
    project = project or Path(file).resolve().parent
    module = parse(text, file)
    syms = symbols.collect(module, project)
    ctx = types.Ctx(syms, project, text, list(syms.diagnostics), sources={file: text, **syms.sources})
    nodes = check.check_blocks(ctx)
    contracts.check(nodes, ctx)
    outputs.check(nodes, ctx)
    if any(n.select is not None for n in nodes.values()):
        nodes = sweeps.select_nodes(nodes, ctx)
    g, cycle_diags = graph.build(nodes)
    ctx.diagnostics += cycle_diags
    if not cycle_diags and sweeps.has_sweeps(nodes):
        import networkx as nx

        nodes = sweeps.expand(nodes, list(nx.lexicographical_topological_sort(g)), ctx)
        g, _ = graph.build(nodes)
    errors = [d for d in ctx.diagnostics if d.level == "error"]
    sources = {file: text, **syms.sources}
    if errors:
        exc = FtError(sorted(ctx.diagnostics, key=_order))
        exc.sources = sources
        raise exc
    warnings = sorted((d for d in ctx.diagnostics if d.level != "error"), key=_order)
    return Program(Path(file), project, sources, nodes, g, warnings)


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


# The passes, in order (documented in compiler/README.md).
PASSES = ("lang.parser.parse", "symbols.collect", "check.check_blocks", "contracts.check",
          "outputs.check", "sweeps.select_nodes",
          "graph.build", "sweeps.expand")

__all__ = ["Node", "Program", "compile_file", "compile_source", "PASSES"]
