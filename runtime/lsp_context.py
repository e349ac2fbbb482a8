"""Where a position in a `.ft` buffer is, read from the text alone.

The language server completes and hovers while the user types, when the file often does
not parse; so this scans the text before the cursor (strings, `\"\"\"` SQL and comments
skipped) and keeps the stack of open brackets: each `{` with its block header, each `(`
with the call it opens and the attribute that call is the value of.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADER = re.compile(r"(\w+)\s+(\w+)\s*$")  # `train sft` before `{`
_CALL = re.compile(r"([A-Za-z_][\w.]*)\s*$")  # `lora` before `(`
_ATTR = re.compile(r"(\w+)\s*=\s*$")  # `method =` before a value
_DEF = re.compile(r"^\s*(\w+)\s+\w+\s*=\s*$")  # `template chat =` (a one-line definition)
_WORD = re.compile(r"[\w.]+")


@dataclass
class Frame:
    """One open bracket: `{` of a block or sub-block, `(` of a call, `[` of a list."""

    bracket: str  # "{", "(" or "["
    kind: str = ""  # `{` of a block: its kind ("train")
    name: str = ""  # block or sub-block name, or the call name
    attr: str = ""  # `(` / `[`: the attribute or argument whose value it is
    family: str = ""  # `(` of a one-line definition: the family (`template`)


@dataclass
class Context:
    frames: list[Frame] = field(default_factory=list)
    statement: str = ""  # the current statement before the cursor, strings blanked

    @property
    def block(self) -> Frame | None:
        """The top-level block the cursor is in."""
        return self.frames[0] if self.frames and self.frames[0].kind else None

    @property
    def inner(self) -> Frame | None:
        return self.frames[-1] if self.frames else None

    def attr_name(self) -> str | None:
        """`name` when the statement so far is `name = <partial value>`."""
        m = re.match(r"^\s*(\w+)\s*=\s*[\w.\"]*$", self.statement)
        return m.group(1) if m else None

    def naming(self) -> bool:
        """Whether the cursor is where an attribute (or argument) name is written."""
        return re.fullmatch(r"\s*\w*", self.statement) is not None


def context_at(text: str, offset: int) -> Context:
    """The open brackets and the current statement at character `offset` of `text`."""
    frames: list[Frame] = []
    stmt: list[str] = []  # the current statement's characters, strings blanked
    i, n = 0, min(offset, len(text))
    while i < n:
        ch = text[i]
        if text.startswith('"""', i):
            end = text.find('"""', i + 3)
            if end == -1 or end + 3 > n:  # the cursor is inside the SQL text
                return Context(frames, '"')
            stmt.append('""')
            i = end + 3
            continue
        if ch == '"':
            j = i + 1
            while j < n and text[j] not in '"\n':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                return Context(frames, "".join(stmt) + '"')  # inside a string
            stmt.append('""')
            i = j + 1
            continue
        if ch == "#":
            j = text.find("\n", i)
            i = n if j == -1 or j > n else j
            continue
        before = "".join(stmt)
        if ch == "{":
            if not frames:
                m = _HEADER.search(before)
                frames.append(Frame("{", kind=m.group(1) if m else "", name=m.group(2) if m else ""))
            else:
                m = re.search(r"(\w+)\s*$", before)
                frames.append(Frame("{", name=m.group(1) if m else ""))
            stmt = []
        elif ch in "([":
            call = _CALL.search(before) if ch == "(" else None
            head = before[:call.start()] if call else before
            attr = _ATTR.search(head)
            d = _DEF.match(head) if not frames else None
            frames.append(Frame(ch, name=call.group(1) if call else "", attr=attr.group(1) if attr else "",
                                family=d.group(1) if d else ""))
            stmt = []
        elif ch in ")]}":
            if frames:
                frames.pop()
            stmt = []
        elif ch == "," or (ch == "\n" and (not frames or frames[-1].bracket == "{")):
            stmt = []  # statements end at a new line, except inside ( ) and [ ]
        else:
            stmt.append(ch)
        i += 1
    return Context(frames, "".join(stmt))


def word_at(line: str, col: int) -> tuple[str, int, int] | None:
    """The dotted word around column `col` (0-based) of a line: (word, start, end)."""
    for m in _WORD.finditer(line):
        if m.start() <= col <= m.end():
            return m.group(0), m.start(), m.end()
    return None


def offset_of(text: str, line: int, character: int) -> int:
    """The character offset of an LSP position (0-based line, UTF-16 character)."""
    lines = text.split("\n")
    start = sum(len(x) + 1 for x in lines[:line])
    here = lines[line] if line < len(lines) else ""
    return start + from_utf16(here, character)


def from_utf16(line: str, units: int) -> int:
    """A UTF-16 column (what LSP counts) as a character index into `line`."""
    count = 0
    for i, ch in enumerate(line):
        if count >= units:
            return i
        count += 2 if ord(ch) > 0xFFFF else 1
    return len(line)


def to_utf16(line: str, chars: int) -> int:
    """A character index into `line` as a UTF-16 column."""
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in line[:chars])
