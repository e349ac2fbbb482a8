"""Diagnostics: rustc-style messages with codes, spans, carets and help lines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ftlang.lang.ast import Span

# Every code, with a one-line title. docs/errors.md documents each with an example.
CODES: dict[str, str] = {
    "FT0001": "syntax error",
    "FT0002": "unexpected end of file",
    "FT0003": "unexpected character",
    "FT0004": "unterminated string",
    "FT0005": "`:` used where `=` was meant",
    "FT0006": "missing value after `=`",
    "FT0007": "`${...}` interpolation",
    "FT0008": "unsupported language version",
    "FT0009": "single-quoted string",
    "FT0101": "unknown block kind",
    "FT0102": "unknown reference",
    "FT0103": "duplicate block name",
    "FT0104": "unknown attribute",
    "FT0105": "missing required attribute",
    "FT0106": "wrong type",
    "FT0107": "value out of range",
    "FT0108": "duplicate attribute",
    "FT0109": "reference of the wrong kind",
    "FT0110": "dependency cycle",
    "FT0111": "file not found",
    "FT0112": "unknown function",
    "FT0113": "invalid split",
    "FT0114": "conflicting attributes",
    "FT0115": "statement not allowed here",
    "FT0116": "YAML-style value",
    "FT0117": "unknown import",
    "FT0118": "invalid assertion",
    "FT0119": "unknown sub-block",
    "FT0120": "environment variable not set",
    "FT0121": "invalid select",
    "FT0122": "invalid preset",
    "FT0123": "invalid sweep",
    "FT0124": "import cycle",
    "FT0125": "dataset contract",
    "FT0126": "SQL syntax error",
    "FT0127": "nondeterministic SQL",
    "FT0128": "SQL not allowed in curate",
    "FT0129": "SQL rejected by DuckDB",
    "FT0130": "nesting too deep",
    "FT0131": "file cannot be read",
    "FT0140": "unsafe export target",
    "FT0201": "step failed",
    "FT0202": "assertion failed",
}

LEVELS = ("error", "warning", "note", "help")


@dataclass(frozen=True)
class Label:
    span: Span
    message: str = ""
    primary: bool = True


@dataclass
class Diagnostic:
    code: str
    message: str
    labels: list[Label] = field(default_factory=list)
    level: str = "error"
    help: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def span(self) -> Span | None:
        return self.labels[0].span if self.labels else None

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "level": self.level,
            "message": self.message,
            "help": self.help,
            "notes": self.notes,
            "labels": [
                {"file": lb.span.file, "line": lb.span.line, "col": lb.span.col,
                 "end_line": lb.span.end_line, "end_col": lb.span.end_col,
                 "message": lb.message, "primary": lb.primary}
                for lb in self.labels
            ],
        }


class FtError(Exception):
    """Raised with every diagnostic found; callers print them all."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None) -> None:
        super().__init__("; ".join(d.message for d in diagnostics))
        self.diagnostics = diagnostics
        self.sources: dict[str, str] = sources or {}


_COLORS = {"error": "\033[1;31m", "warning": "\033[1;33m", "note": "\033[1;36m",
           "help": "\033[1;32m", "bold": "\033[1m", "blue": "\033[1;34m", "reset": "\033[0m"}


def render(diag: Diagnostic, sources: dict[str, str], color: bool = False) -> str:
    """rustc layout: header, `--> file:line:col`, each labelled line with a caret."""

    def c(name: str, text: str) -> str:
        return f"{_COLORS[name]}{text}{_COLORS['reset']}" if color else text

    head = f"{diag.level}[{diag.code}]" if diag.code else diag.level
    out = [c(diag.level, head) + c("bold", f": {diag.message}")]
    labels = diag.labels
    width = max((len(str(lb.span.line)) for lb in labels), default=1)
    pad = " " * width
    for i, lb in enumerate(labels):
        s = lb.span
        arrow = "-->" if i == 0 else ":::"
        out.append(f"{pad}{c('blue', arrow)} {s.file}:{s.line}:{s.col}")
        lines = sources.get(s.file, "").splitlines()
        if 1 <= s.line <= len(lines):
            text = lines[s.line - 1]
            end = s.end_col if s.end_line == s.line else len(text) + 1
            n = max(1, end - s.col)
            marker = ("^" if lb.primary else "-") * n
            out.append(f"{pad} {c('blue', '|')}")
            out.append(f"{c('blue', str(s.line).rjust(width))} {c('blue', '|')} {text}")
            msg = f" {lb.message}" if lb.message else ""
            caret = " " * (s.col - 1) + marker + msg
            out.append(f"{pad} {c('blue', '|')} " + c(diag.level if lb.primary else "blue", caret))
    if diag.help or diag.notes:
        out.append(f"{pad} {c('blue', '|')}")
    for note in diag.notes:
        out.append(f"{pad} {c('blue', '=')} note: {note}")
    if diag.help:
        out.append(f"{pad} {c('blue', '=')} {c('help', 'help')}: {diag.help}")
    return "\n".join(out)


def render_all(diags: list[Diagnostic], sources: dict[str, str], color: bool = False) -> str:
    parts = [render(d, sources, color) for d in diags]
    errors = sum(1 for d in diags if d.level == "error")
    warnings = sum(1 for d in diags if d.level == "warning")
    summary = []
    if errors:
        summary.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        summary.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    if summary:
        parts.append(" and ".join(summary) + " found")
    return "\n\n".join(parts)


def to_json(diags: list[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diags], indent=1)


def did_you_mean(word: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The closest candidate, like rustc's suggestions; None when nothing is close."""
    import difflib

    best = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    if best:
        return best[0]
    low = {c.lower(): c for c in candidates}
    return low.get(word.lower())
