"""Text -> AST after an edit: only the top-level items whose text changed are parsed again.

In:  a file's text and name, and a memo the caller keeps between parses (a dict; `ft check`,
     `ft plan` and `ft run` keep it in .ft/progcache/, see runtime/progcache.py).
Out: the same ast.Module as `parser.parse(text, file)` (tests/test_incremental_parse.py
     compares them, spans included), and the memo holding this text's pieces.

The text is cut at every line boundary outside brackets and strings where a new item
starts (a line that is not blank, not a comment); a piece is parsed on its own, preceded
by as many newlines as lines before it, so Lark numbers its lines as in the file. A piece
is reused when its text and first line are unchanged: editing one block leaves every other
block as parsed before; inserting a line re-parses the blocks below it. Anything unusual
(a piece that does not parse, a version line after an item, unbalanced brackets) parses the
whole file instead, so errors read exactly as they always do.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from typing import Any

from ftlang.lang import ast
from ftlang.lang.parser import finish, parse, parse_items, plain_text

# Strings (long ones first), comments, brackets and newlines: all the splitter must see.
_TOKEN = re.compile(r'"""(?:.|\n)*?"""|"(?:\\.|[^"\\\n])*"|#[^\n]*|[{}\[\]()]|\n')
_OPEN, _CLOSE = frozenset("{[("), frozenset("}])")
_ITEM_START = re.compile(r"[ \t\f]*[^\s#]")


def split(text: str) -> list[tuple[int, str]] | None:
    """(first line, text) of each piece, in order; None where brackets do not balance."""
    pieces: list[tuple[int, str]] = []
    depth, start, start_line, line = 0, 0, 1, 1
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok == "\n":
            line += 1
            at = m.end()
            if depth == 0 and at > start and _ITEM_START.match(text, at):
                pieces.append((start_line, text[start:at]))
                start, start_line = at, line
        elif tok in _OPEN:
            depth += 1
        elif tok in _CLOSE:
            depth -= 1
            if depth < 0:
                return None
        elif tok.startswith('"""'):
            line += tok.count("\n")
    if depth:
        return None
    if start < len(text):
        pieces.append((start_line, text[start:]))
    return pieces


# Past this many changed pieces the whole file is parsed at once (and the memo refilled
# from it): a piece far down the file pays for lexing the newlines put before it.
MAX_FRESH = 32


def parse_with(text: str, file: str, memo: dict[Any, Any]) -> ast.Module:
    """`parser.parse(text, file)`, reusing the pieces `memo` holds; the memo is left
    holding exactly this text's pieces. Raises FtError as parser.parse does."""
    from ftlang.lang.diagnostics import FtError

    text = plain_text(text)
    pieces = split(text)
    if pieces is None:
        return parse(text, file)
    keys = [(file, line, hashlib.blake2b(piece.encode(), digest_size=16).digest()) for line, piece in pieces]
    if sum(k not in memo for k in keys) > MAX_FRESH:
        module = parse(text, file)  # a first parse, or most of the file changed
        memo.clear()
        memo.update(_grouped(module, keys))
        return module
    version: ast.Version | None = None
    items: list[ast.Item] = []
    fresh: dict[Any, Any] = {}
    for key, (line, piece) in zip(keys, pieces):
        got = memo.get(key)
        if got is None:
            try:
                got = parse_items("\n" * (line - 1) + piece, file)
            except FtError:
                return parse(text, file)  # the whole file's own error, as always
        fresh[key] = got
        v, its = got
        if v is not None:
            if version is not None or items:
                return parse(text, file)  # a version line after an item: the whole file says so
            version = v
        items.extend(its)
    memo.clear()
    memo.update(fresh)
    return finish(ast.Module(file, "", version, items), text)


def _grouped(module: ast.Module, keys: list[Any]) -> dict[Any, Any]:
    """The memo of a whole-file parse: each item under the piece its first line is in."""
    starts = [k[1] for k in keys]
    groups: list[tuple[ast.Version | None, list[ast.Item]]] = [(None, []) for _ in keys]

    def piece_of(line: int) -> int:
        return bisect.bisect_right(starts, line) - 1

    if module.version is not None:
        groups[piece_of(module.version.span.line)] = (module.version, [])
    for item in module.items:
        groups[piece_of(item.span.line)][1].append(item)
    return dict(zip(keys, groups))
