"""Pass 1: collect blocks into a symbol table; unknown kinds and duplicate names."""

from __future__ import annotations

from dataclasses import dataclass, field

from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, Label, did_you_mean
from ftlang.stdlib import registry

STDLIB_MODULES: dict[str, tuple[str, ...]] = {
    "stdlib.sources": tuple(registry.SOURCES),
    "stdlib.methods": tuple(registry.METHODS),
    "stdlib.inits": tuple(registry.INITS),
    "stdlib.metrics": tuple(registry.METRICS),
    "stdlib.templates": tuple(registry.TEMPLATES),
}


@dataclass
class Symbols:
    blocks: dict[str, ast.Block] = field(default_factory=dict)  # name -> block
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # imported files, for rendering


def stdlib_module(module: str) -> ast.Module | None:
    """The blocks a stdlib `.ft` file defines (stdlib.templates -> stdlib/templates.ft)."""
    from importlib import resources

    from ftlang.lang.parser import parse

    res = resources.files("ftlang.stdlib").joinpath(module.split(".", 1)[1] + ".ft")
    if not res.is_file():
        return None
    return parse(res.read_text(), f"<{module}>")

    def kind_of(self, name: str) -> str | None:
        b = self.blocks.get(name)
        return b.kind.name if b else None


def desugar(item: ast.Definition) -> ast.Block:
    """`template chat = chatml(system = "...")` is `template chat { style = chatml, system = ... }`."""
    value = item.value
    if isinstance(value, ast.CallExpr):
        style = ast.Attr("style", ast.Ref(value.name, value.name_span), value.name_span, value.name_span)
        body: list[ast.Stmt] = [style]
        body += [ast.Attr(k.name, k.value, k.span.to(k.value.span), k.span) for k in value.kwargs]
        return ast.Block(item.kind, item.name, tuple(body), item.span)
    if isinstance(value, ast.Ref):
        return ast.Block(item.kind, item.name, (ast.Attr("style", value, value.span, value.span),), item.span)
    # Anything else is checked as the block's only attribute, which reports the mistake.
    return ast.Block(item.kind, item.name, (ast.Attr("style", value, value.span, value.span),), item.span)


def collect(module: ast.Module) -> Symbols:
    syms = Symbols()
    for item in module.items:
        if isinstance(item, ast.Use):
            for block in _check_use(item, syms):
                _add(block, syms)
            continue
        if isinstance(item, ast.Preset):
            syms.diagnostics.append(Diagnostic(
                "FT0115", "presets written in .ft are not supported yet",
                [Label(item.span, "preset definition")],
                help="use the stdlib presets (lora(...), full) directly"))
            continue
        _add(desugar(item) if isinstance(item, ast.Definition) else item, syms)
    return syms


def _add(block: ast.Block, syms: Symbols) -> None:
    kind = block.kind.name
    if kind not in registry.STEPS:
        guess = did_you_mean(kind, list(registry.STEPS))
        syms.diagnostics.append(Diagnostic(
            "FT0101", f"unknown block kind `{kind}`", [Label(block.kind.span, "not a block kind")],
            help=f"did you mean `{guess}`?" if guess else
            f"block kinds are: {', '.join(registry.STEPS)}"))
        return
    name = block.name.name
    if name in syms.blocks:
        first = syms.blocks[name]
        syms.diagnostics.append(Diagnostic(
            "FT0103", f"the name `{name}` is defined twice",
            [Label(block.name.span, "defined again here"),
             Label(first.name.span, "first defined here", primary=False)],
            help="block names are shared by all kinds: rename one of them"))
        return
    syms.blocks[name] = block


def _check_use(use: ast.Use, syms: Symbols) -> list[ast.Block]:
    """Checks a `use` line; returns the blocks it imports from a stdlib .ft file."""
    if use.is_file:
        syms.diagnostics.append(Diagnostic(
            "FT0117", "importing from other .ft files is not supported yet",
            [Label(use.span, "file import")], help="copy the blocks into this file for now"))
        return []
    known = STDLIB_MODULES.get(use.module, ())
    lib = stdlib_module(use.module) if use.module.startswith("stdlib.") else None
    defined: dict[str, ast.Block] = {}
    if lib is not None:
        syms.sources[lib.file] = lib.source
        for it in lib.items:
            if isinstance(it, (ast.Block, ast.Definition)):
                defined[it.name.name] = desugar(it) if isinstance(it, ast.Definition) else it
    if not known and lib is None:
        guess = did_you_mean(use.module, list(STDLIB_MODULES))
        syms.diagnostics.append(Diagnostic(
            "FT0117", f"unknown module `{use.module}`", [Label(use.span, "no such module")],
            help=f"did you mean `{guess}`?" if guess else f"modules: {', '.join(STDLIB_MODULES)}"))
        return []
    imported = []
    offered = [*known, *defined]
    for n in use.names:
        if n.name in defined:
            imported.append(defined[n.name])
        elif n.name not in known:
            guess = did_you_mean(n.name, offered)
            syms.diagnostics.append(Diagnostic(
                "FT0117", f"`{use.module}` has no `{n.name}`", [Label(n.span, "not in this module")],
                help=f"did you mean `{guess}`?" if guess else f"it offers: {', '.join(offered)}"))
    return imported
