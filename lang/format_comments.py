"""Where `ft fmt` writes each comment (lang/format.py lays out the rest).

**In:** a parsed module's comments (text, line, column) and its source lines. **Out:**
the comments due at each point of the layout, taken once each, in source order: those
before a line, the one trailing a line, those inside a statement or item that go above
it, as `Entry`s (one logical group of output lines) with the blank line the user left.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlang.lang import ast


@dataclass
class Entry:
    """One logical line group of output: a comment, or a rendered item/statement."""

    lines: list[str]  # without indentation for the first line's prefix; already laid out
    blank_before: bool = False
    align: tuple[str, str] | None = None  # (name, "= value") for a one-line attribute
    trailing: str | None = None  # a comment to append to the last line


class Comments:
    """A module's comments not yet written, in order, and the source lines around them."""

    def __init__(self, module: ast.Module) -> None:
        self.source_lines = ast.source_lines(module.source)
        self.comments = sorted(module.comments, key=lambda c: (c.line, c.col))
        self.next_comment = 0

    def _peek(self) -> ast.Comment | None:
        return self.comments[self.next_comment] if self.next_comment < len(self.comments) else None

    def take_before(self, line: int) -> list[ast.Comment]:
        """Comments on lines before `line`, in order."""
        out = []
        while (c := self._peek()) is not None and c.line < line:
            out.append(c)
            self.next_comment += 1
        return out

    def take_trailing(self, line: int, after_col: int | None = None) -> ast.Comment | None:
        """The comment at the end of `line`; with `after_col` (where a statement ends), only
        when nothing but spaces, commas and a parenthesised value's `)` lie between: in
        `a = 1, b = 2  # c` it is b's, not a's; in `a = 1 }  # c` it follows the block's
        `}`, so it is not a's (it trails the block: it stays outside it)."""
        c = self._peek()
        if c is None or c.line != line or c.own_line:
            return None
        if after_col is not None and 1 <= line <= len(self.source_lines) and \
                self.source_lines[line - 1][after_col - 1:c.col - 1].strip(" \t\f,)"):
            return None
        self.next_comment += 1
        return c

    def has_comment_within(self, first: int, last: int) -> bool:
        """Whether a not-yet-written comment lies on lines first..last."""
        c = self._peek()
        return c is not None and first <= c.line <= last

    def blank_between(self, after_line: int, before_line: int) -> bool:
        """Whether the source has an empty line strictly between the two lines."""
        for i in range(max(after_line, 0) + 1, before_line):
            if i - 1 < len(self.source_lines) and not self.source_lines[i - 1].strip():
                return True
        return False

    def comment_entries(self, comments: list[ast.Comment], prev_line: int) -> tuple[list[Entry], int]:
        entries = []
        for c in comments:
            entries.append(Entry([c.text], blank_before=self.blank_between(prev_line, c.line)))
            prev_line = c.line
        return entries, prev_line

    def lead_entries(self, first: int, inner_end: int, prev_line: int) -> tuple[list[Entry], bool]:
        """The comments written above a statement or item that starts on line `first`:
        those before it, then those inside it before line `inner_end` (in a value the
        layout reflows, or a preset's parameters), each on its own line; and whether a
        blank line goes before the statement itself (it goes before what comes first)."""
        lead, lead_end = self.comment_entries(self.take_before(first), prev_line)
        blank = self.blank_between(lead_end if lead else prev_line, first)
        inside = [Entry([c.text]) for c in self.take_before(inner_end)]
        if inside:  # their own entries: the statement keeps its `=` aligned with its neighbours
            inside[0].blank_before, blank = blank, False
        return lead + inside, blank

    def trailing_text(self, line: int, after_col: int | None = None) -> str | None:
        c = self.take_trailing(line, after_col)
        return c.text if c else None
