"""What the language server answers, as plain functions of a buffer's text.

Diagnostics come from the compiler's own entry point (`compile_source`, what `ft check`
runs), so codes and spans are the same. Completion and hover read the stdlib declarations
(`registry.STEPS`, `registry.CALLS`: the one source of truth, as docs/language.md is)
and the symbols of the last buffer that parsed. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftlang.lang import ast
from ftlang.runtime.lsp_context import Context, context_at, offset_of, to_utf16, word_at
from ftlang.stdlib import registry
from ftlang.stdlib.spec import Attr, Signature, TypeExpr
from lsprotocol import types as lsp


@dataclass
class Document:
    """One open `.ft` buffer: its text, where it lives, and its last good symbols."""

    path: Path
    text: str = ""
    shown: str = ""  # the file name the compiler puts in spans (as `ft check` shows it)
    symbols: Any = None  # compiler.symbols.Symbols of the last text that parsed
    module: Any = None  # its lang.ast.Module
    sources: dict[str, str] = field(default_factory=dict)
    memo: Any = None  # compiler.Memo of the last compile: a keystroke re-parses one block


# ---- diagnostics ------------------------------------------------------------------------------

def check(doc: Document) -> list[lsp.Diagnostic]:
    """The buffer's diagnostics, exactly as `ft check` finds them; refreshes its symbols."""
    from ftlang.compiler import _display, compile_source
    from ftlang.lang.diagnostics import FtError

    doc.shown = _display(doc.path)
    _refresh_symbols(doc)
    try:
        found = compile_source(doc.text, doc.shown, doc.path.resolve().parent, memo=doc.memo).warnings
    except FtError as exc:
        found = exc.diagnostics
    return [_to_lsp(d, doc) for d in found]


def _refresh_symbols(doc: Document) -> None:
    from ftlang.compiler import Memo, symbols
    from ftlang.lang.diagnostics import FtError
    from ftlang.lang.incremental import parse_with

    if doc.memo is None:
        doc.memo = Memo()
    try:
        module = parse_with(doc.text, doc.shown, doc.memo.parse)
    except FtError:
        return  # keep the last good symbols: completion still knows the blocks
    doc.module = module
    doc.symbols = symbols.collect(module, doc.path.resolve().parent)
    doc.sources = {doc.shown: doc.text, **doc.symbols.sources}


def span_range(span: ast.Span, text: str) -> lsp.Range:
    """A compiler span (1-based line, 1-based column, end exclusive) as an LSP range."""
    lines = text.split("\n")

    def pos(line: int, col: int) -> lsp.Position:
        here = lines[line - 1] if 0 < line <= len(lines) else ""
        return lsp.Position(max(line - 1, 0), to_utf16(here, max(col - 1, 0)))

    return lsp.Range(pos(span.line, span.col), pos(span.end_line, span.end_col))


_SEVERITY = {"error": lsp.DiagnosticSeverity.Error, "warning": lsp.DiagnosticSeverity.Warning,
             "note": lsp.DiagnosticSeverity.Information, "help": lsp.DiagnosticSeverity.Hint}


def _to_lsp(d: Any, doc: Document) -> lsp.Diagnostic:
    span = d.span
    message = d.message + "".join(f"\nnote: {n}" for n in d.notes) + (f"\nhelp: {d.help}" if d.help else "")
    if span is None:
        where = lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
    elif span.file == doc.shown:
        where = span_range(span, doc.text)
    else:  # in an imported file: shown on the `use` that brings it, saying where
        message = f"{span.file}:{span.line}:{span.col}: {message}"
        where = _use_range(doc, span.file)
    related = [lsp.DiagnosticRelatedInformation(
        lsp.Location(uri_of(lb.span.file, doc), span_range(lb.span, doc.sources.get(lb.span.file, ""))),
        lb.message or "here") for lb in d.labels[1:]]
    return lsp.Diagnostic(where, message, severity=_SEVERITY.get(d.level, lsp.DiagnosticSeverity.Error),
                          code=d.code, source="ftlang", related_information=related or None)


def _use_range(doc: Document, file: str) -> lsp.Range:
    for item in getattr(doc.module, "items", []):
        if isinstance(item, ast.Use) and item.is_file and Path(item.module).name == Path(file).name:
            return span_range(item.span, doc.text)
    return lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))


def uri_of(file: str, doc: Document) -> str:
    """The URI of a span's file: the buffer, an imported file, or a stdlib `.ft` module."""
    if file == doc.shown:
        return doc.path.resolve().as_uri()
    if file.startswith("<stdlib.") and file.endswith(">"):
        from importlib import resources

        return Path(str(resources.files("ftlang.stdlib").joinpath(file[8:-1] + ".ft"))).resolve().as_uri()
    from ftlang.compiler.symbols import source_path

    return source_path(file, doc.shown, doc.path.resolve().parent).resolve().as_uri()


# ---- what the cursor is in: signatures along the open brackets ----------------------------------

def _call_signature(name: str, family: str, doc: Document) -> Signature | None:
    """The declared signature of a call (a preset's parameters for a preset)."""
    if family and name in registry.CALLS.get(family, {}):
        return registry.CALLS[family][name]
    preset = getattr(doc.symbols, "presets", {}).get(name)
    if preset is not None:
        attrs = []
        for p in preset.params:
            default = _Written(_text_of(p.default.span, doc)) if p.default is not None else None
            try:
                attrs.append(Attr(p.name, p.type, default, f"a parameter of the {preset.kind.name} preset `{name}`"))
            except ValueError:
                continue
        return Signature(name, tuple(attrs), f"{preset.kind.name} preset `{name}`")
    for table in registry.CALLS.values():
        if name in table:
            return table[name]
    return None


class _Written:
    """A preset parameter's default as written (`2 * r`), shown as is by docgen's _default."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def _text_of(span: ast.Span, doc: Document) -> str:
    lines = doc.sources.get(span.file, "").split("\n")
    if span.line != span.end_line or not 0 < span.line <= len(lines):
        return "..."
    return lines[span.line - 1][span.col - 1:span.end_col - 1]


def _family(t: TypeExpr | None) -> str:
    if t is None:
        return ""
    return t.item.family if t.kind == "list" and t.item is not None else t.family


def _resolve(ctx: Context, doc: Document) -> tuple[Signature | None, TypeExpr | None]:
    """The signature whose names are written at the cursor, and the type of the innermost
    open list (its items are values), walking the open brackets from the outside in."""
    sig: Signature | None = None
    list_type: TypeExpr | None = None
    spec = None
    for f in ctx.frames:
        if f.bracket == "{":
            if f.kind:
                spec = registry.STEPS.get(f.kind)
                sig = spec.signature if spec else None
            else:
                sig = spec.subblocks.get(f.name) if spec else None
            list_type = None
        elif f.bracket == "[":
            a = sig.attr(f.attr) if sig and f.attr else None
            list_type = a.of if a else None
        else:
            a = sig.attr(f.attr) if sig and f.attr else None
            family = f.family or _family(a.of if a else list_type)
            sig = _call_signature(f.name, family, doc)
            list_type = None
    return sig, list_type


# ---- completion ------------------------------------------------------------------------------

def _attr_doc(a: Attr) -> str:
    from ftlang.compiler.docgen import _default

    return f"`{a.name}`: `{a.type}`, default {_default(a)}" + (f"\n\n{a.doc}" if a.doc else "")


def _item(label: str, kind: lsp.CompletionItemKind, detail: str = "", doc: str = "",
          insert: str | None = None) -> lsp.CompletionItem:
    return lsp.CompletionItem(label, kind=kind, detail=detail or None, insert_text=insert,
                              documentation=lsp.MarkupContent(lsp.MarkupKind.Markdown, doc) if doc else None)


def _names(sig: Signature, spec: Any, call: bool) -> list[lsp.CompletionItem]:
    kind = lsp.CompletionItemKind.Property if not call else lsp.CompletionItemKind.Variable
    out = [_item(a.name, kind, a.type, _attr_doc(a), f"{a.name} = ") for a in sig.attrs]
    if spec is not None and not call:
        out += [_item(s, lsp.CompletionItemKind.Module, "sub-block", sub.doc, f"{s} {{ ")
                for s, sub in spec.subblocks.items()]
        out += [_item(s, lsp.CompletionItemKind.Keyword, "statement") for s in spec.statements]
    return out


def _values(t: TypeExpr | None, a: Attr | None, doc: Document) -> list[lsp.CompletionItem]:
    """What may be written as a value of type `t`: references, calls, choices."""
    if t is None:
        return []
    if t.kind == "list" and t.item is not None:
        return _values(t.item, a, doc)
    if t.kind == "enum" and a is not None:
        return [_item(c, lsp.CompletionItemKind.EnumMember, a.name) for c in a.choices]
    if t.kind == "bool":
        return [_item(v, lsp.CompletionItemKind.Keyword, "bool") for v in ("true", "false")]
    if t.kind == "call":
        out = [_item(n, lsp.CompletionItemKind.Function, t.family, s.doc) for n, s in
               registry.CALLS.get(t.family, {}).items()]
        presets = getattr(doc.symbols, "presets", {})
        return out + [_item(n, lsp.CompletionItemKind.Function, f"{t.family} preset") for n, p in presets.items()
                      if p.kind.name == t.family]
    if t.kind in ("model", "dataset", "template"):
        return references(t.kind, doc)
    return []


def references(produces: str, doc: Document) -> list[lsp.CompletionItem]:
    """Blocks whose output is of kind `produces`, with the parts of curate splits."""
    out = []
    for name, block in getattr(doc.symbols, "blocks", {}).items():
        kind = block.kind.name
        if registry.PRODUCES.get(kind) != produces:
            continue
        out.append(_item(name, lsp.CompletionItemKind.Reference, f"{kind} {name}"))
        split = registry.STEPS[kind].subblocks.get("split")
        for stmt in block.body:
            if isinstance(stmt, ast.SubBlock) and stmt.name == "split" and split is not None:
                out += [_item(f"{name}.{s.name}", lsp.CompletionItemKind.Reference, f"part of {kind} {name}")
                        for s in stmt.body if isinstance(s, ast.Attr) and split.attr(s.name) is None]
    return out


def complete(doc: Document, line: int, character: int) -> list[lsp.CompletionItem]:
    ctx = context_at(doc.text, offset_of(doc.text, line, character))
    if ctx.statement.count('"') % 2 == 1:
        return []  # inside a string or SQL
    if not ctx.frames:
        if ctx.naming():
            return [_item(k, lsp.CompletionItemKind.Class, "block kind", s.signature.doc, f"{k} ")
                    for k, s in registry.STEPS.items()] + [_item("use", lsp.CompletionItemKind.Keyword)]
        return []
    sig, list_type = _resolve(ctx, doc)
    inner = ctx.inner
    if inner is not None and inner.bracket == "[":
        a = None
        sig_outer, _ = _resolve(Context(ctx.frames[:-1]), doc)
        if sig_outer is not None:
            a = sig_outer.attr(inner.attr)
        return _values(list_type, a, doc)
    if sig is None:
        return []
    call = inner is not None and inner.bracket == "("
    if ctx.naming():
        spec = registry.STEPS.get(inner.kind) if inner is not None and inner.kind else None
        return _names(sig, spec, call)
    attr = ctx.attr_name()
    a = sig.attr(attr) if attr else None
    items = _values(a.of, a, doc) if a is not None else []
    here = ctx.block.name if ctx.block else ""
    return [i for i in items if i.kind != lsp.CompletionItemKind.Reference  # a block never
            or i.label.split(".", 1)[0] != here]  # refers to itself


# ---- hover and definition ---------------------------------------------------------------------

def hover(doc: Document, line: int, character: int) -> lsp.Hover | None:
    found = _word(doc, line, character)
    if found is None:
        return None
    word, start, end, after = found
    lines = doc.text.split("\n")
    where = lsp.Range(lsp.Position(line, to_utf16(lines[line], start)), lsp.Position(line, to_utf16(lines[line], end)))
    ctx = context_at(doc.text, offset_of(doc.text, line, to_utf16(lines[line], start)))
    text = None
    if after.startswith("=") and not after.startswith("==") and ctx.frames:
        sig, _ = _resolve(ctx, doc)
        a = sig.attr(word) if sig else None
        text = _attr_doc(a) if a else None
    elif not ctx.frames and ctx.naming() and word in registry.STEPS:
        spec = registry.STEPS[word]
        text = f"block `{word}`: {spec.signature.doc}\n\nattributes: " + ", ".join(
            f"`{a.name}`" for a in spec.signature.attrs)
    elif after.startswith("("):
        outer = _resolve(ctx, doc)[0] if ctx.frames else None
        attr = ctx.attr_name()
        a = outer.attr(attr) if outer and attr else None
        sig = _call_signature(word, _family(a.of) if a else "", doc)
        if sig is not None:
            text = f"`{word}(...)`: {sig.doc}\n\n" + "\n".join(
                f"- {_attr_doc(x).replace(chr(10) * 2, ': ', 1)}" for x in sig.attrs)
    if text is None:
        target = _definition(doc, word)
        if target is not None:
            block = getattr(doc.symbols, "blocks", {}).get(word.split(".", 1)[0])
            kind = block.kind.name if block is not None else "preset"
            span = target
            text = f"{kind} `{word.split('.', 1)[0]}`, defined at {span.file}:{span.line}:{span.col}"
    if text is None:
        return None
    return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, text), range=where)


def _word(doc: Document, line: int, character: int) -> tuple[str, int, int, str] | None:
    """The word under the cursor, its columns, and the text after it (stripped)."""
    from ftlang.runtime.lsp_context import from_utf16

    lines = doc.text.split("\n")
    if line >= len(lines):
        return None
    here = lines[line]
    found = word_at(here, from_utf16(here, character))
    if found is None:
        return None
    word, start, end = found
    return word, start, end, here[end:].lstrip()


def _definition(doc: Document, word: str) -> ast.Span | None:
    name = word.split(".", 1)[0]
    syms = doc.symbols
    if syms is None:
        return None
    if name in syms.blocks:
        return syms.blocks[name].name.span
    if name in syms.presets:
        return syms.presets[name].name.span
    return None


def definition(doc: Document, line: int, character: int) -> lsp.Location | None:
    """Where the reference under the cursor is defined, in this file or an imported one."""
    found = _word(doc, line, character)
    span = _definition(doc, found[0]) if found else None
    if span is None:
        return None
    return lsp.Location(uri_of(span.file, doc), span_range(span, doc.sources.get(span.file, "")))
