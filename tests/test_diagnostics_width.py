"""The caret sits under the character a column names, however the line is drawn: tabs,
wide (CJK, emoji) and combining characters, and control characters that would garble the
terminal."""

from __future__ import annotations

import unicodedata

from ftlang.lang.ast import Span
from ftlang.lang.diagnostics import Diagnostic, Label, render


def _cells(s: str) -> int:
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in s)


def _drawn(line: str, word: str) -> tuple[str, str]:
    col = line.index(word) + 1
    diag = Diagnostic("FT0102", "x", [Label(Span("f.ft", 1, col, 1, col + len(word)), "here")])
    out = render(diag, {"f.ft": line}).splitlines()
    return out[3].split("| ", 1)[1], out[4].split("| ", 1)[1]


def test_caret_under_the_word_after_tabs_and_wide_characters() -> None:
    for line in ("\t\tfrom\t= basex", 'x = "日本語é👍", basex = 1', 'x = "e\u0301e\u0301", basex = 1'):
        shown, caret = _drawn(line, "basex")
        assert "\t" not in shown
        assert _cells(shown[:shown.index("basex")]) == caret.index("^"), (line, shown, caret)
        assert caret.count("^") == 5


def test_control_characters_are_not_printed_raw() -> None:
    shown, caret = _drawn("a\rb = basex", "basex")
    assert "\r" not in shown and "\ufffd" in shown
    assert caret.index("^") == shown.index("basex")
