"""`ft fmt`: the canonical layout of a .ft file (to be completed by the language work)."""

from __future__ import annotations


def format_source(text: str, file: str = "<input>") -> str:
    """Returns `text` in canonical layout; raises FtError when it does not parse."""
    from ftlang.lang.parser import parse

    parse(text, file)
    return text
