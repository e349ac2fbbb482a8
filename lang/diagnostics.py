"""Diagnostics: rustc-style messages with codes, spans, carets and help lines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ftlang.lang.ast import Span


@dataclass(frozen=True)
class Code:
    title: str  # "unknown reference"
    explain: str  # when it happens and what to do, for docs/errors.md


# Every code: a one-line title and what it means. docs/errors.md is generated from this
# one table (python -m ftlang.compiler.docgen errors), each code with an example.
CODES: dict[str, Code] = {
    "FT0001": Code('syntax error',
         'The parser found a token it did not expect. The help line lists what would fit.'),
    "FT0002": Code('unexpected end of file',
         'The file ends inside a block, a list or a call; the help names the bracket left '
         'open.'),
    "FT0003": Code('unexpected character', 'A character that is not part of ftlang, such as `;` or `@`.'),
    "FT0004": Code('unterminated string', 'A string without its closing quote on the same line.'),
    "FT0005": Code('`:` used where `=` was meant',
         '`name: value` is YAML; ftlang sets attributes with `=`. `:` only declares a '
         'type.'),
    "FT0006": Code('missing value after `=`', '`name =` with nothing after it.'),
    "FT0007": Code('`${...}` interpolation',
         '`${...}` is shell/YAML interpolation. Refer to a block by name, or use '
         '`env("NAME")`.'),
    "FT0008": Code('unsupported language version',
         'The `ft` line names a language version this ftlang does not know.'),
    "FT0009": Code('single-quoted string', 'Strings use double quotes.'),
    "FT0101": Code('unknown block kind',
         'The first word of a block is not a block kind (or a preset family, for a '
         'preset).'),
    "FT0102": Code('unknown reference',
         'A name that no block defines, a part a block does not have, or a table a query '
         'reads that is not an input.'),
    "FT0103": Code('duplicate block name',
         'Two blocks (or presets) with the same name; both places are shown.'),
    "FT0104": Code('unknown attribute',
         'An attribute or argument the block or call does not take; the help suggests the '
         'closest one and lists the rest.'),
    "FT0105": Code('missing required attribute', 'A required attribute or argument is missing.'),
    "FT0106": Code('wrong type',
         'A value of the wrong type: a string where a reference was meant (or the '
         'reverse), a quoted number, an unknown choice.'),
    "FT0107": Code('value out of range',
         'A number outside its allowed range (lr > 0, r >= 1, dropout <= 0.99, ...).'),
    "FT0108": Code('duplicate attribute', 'An attribute or argument given twice; both places are shown.'),
    "FT0109": Code('reference of the wrong kind',
         'A reference to a block of the wrong kind: a model where a dataset is expected, '
         '...'),
    "FT0110": Code('dependency cycle',
         'Blocks that depend on each other in a circle; every edge of the cycle is shown.'),
    "FT0111": Code('file not found', 'A file (a data file, an imported .ft file) that does not exist.'),
    "FT0112": Code('unknown function',
         'An unknown call: a source, method, init, metric or template that does not exist.'),
    "FT0113": Code('invalid split', 'A `split` whose parts do not add up to 1, or without `by`.'),
    "FT0114": Code('conflicting attributes',
         'Attributes that conflict (a model with both `hub` and `path`), or one the chosen '
         'method does not use (`truncation` with dpo, `max_length` with grpo: the help says '
         'why); also warnings such as an unpinned or branch revision, a warmup longer than '
         'max_steps, eval_steps without eval_data.'),
    "FT0115": Code('statement not allowed here',
         'A statement in a block that does not take it (`sql` outside curate, `assert` '
         'outside eval).'),
    "FT0116": Code('YAML-style value',
         'A YAML habit: an unquoted path or hub id (`org/name`), `yes`/`no`/`on`/`off`.'),
    "FT0117": Code('unknown import',
         'A `use` that names an unknown module, or a name the module does not have.'),
    "FT0118": Code('invalid assertion',
         'An `assert` that does not compare `model.metric` values of this eval, or names a'
         ' swept model without a selection.'),
    "FT0119": Code('unknown sub-block', 'A sub-block the block does not have (`schema`, `split`).'),
    "FT0120": Code('environment variable not set',
         '`env("NAME")` without a default, and the variable is not set.'),
    "FT0121": Code('invalid select',
         'A `select = ...` that is misplaced, names an unknown metric or has no sweep to '
         'choose from; a warning when it keeps the worst point.'),
    "FT0122": Code('invalid preset',
         'A preset that is not written `family name(params) = call(...)`, belongs to no '
         'family, or calls itself.'),
    "FT0123": Code('invalid sweep',
         'An empty sweep, a repeated value, a sweep where none is allowed, or sweeps that '
         'would make more than 10,000 steps.'),
    "FT0124": Code('import cycle', 'Files that import each other.'),
    "FT0125": Code('dataset contract',
         'A dataset contract: a consumer needs columns its input does not have, a query '
         'reads a column its tables do not have, or a split is by a missing column.'),
    "FT0126": Code('SQL syntax error',
         'The SQL of a curate block does not parse; the caret points into the query.'),
    "FT0127": Code('nondeterministic SQL',
         'A curate query whose rows could change between runs over the same inputs: the '
         "clock (now(), current_date), random() or USING SAMPLE without a seed, DuckDB's "
         'own state (duckdb_settings(), current_setting(), version()). random() is fine '
         'after a `SELECT setseed(x);` statement; `deterministic = false` allows the rest,'
         ' and the block then reruns every time.'),
    "FT0128": Code('SQL not allowed in curate',
         'A statement or function a curate query may not run: SET, PRAGMA, ATTACH, LOAD, '
         'COPY, EXPORT, CALL (`CALL enable_logging(...)` would end the process), file '
         'readers such as read_csv() (declare a dataset block), query() and DuckDB '
         'internals; or a last statement that is not a query.'),
    "FT0129": Code('SQL rejected by DuckDB',
         "DuckDB's binder rejects a curate query, bound against empty tables with the "
         'upstream columns: an unknown function or type, a wrong argument type, a column '
         'missing from GROUP BY, the `x -> x + 1` lambda DuckDB 2.0 no longer reads.'),
    "FT0130": Code('nesting too deep',
         'Brackets, calls, blocks and operators nested more than 100 levels deep, or more '
         'than 50 operators in one chain (`a + b + ...`). A flat list of any length is '
         'fine.'),
    "FT0131": Code('file cannot be read',
         'A file that exists but cannot be read: a folder, a named pipe or device, a '
         'symbolic link loop, no read permission, or a .ft file that is not UTF-8 (the '
         'caret is on the first bad byte). Checked with stat before opening, so `ft check`'
         ' never hangs.'),
    "FT0140": Code('unsafe export target',
         'An export `to` that could replace what ftlang did not write: the project folder '
         'or one above it, the home folder or one above it, the `.ft/` cache, a folder '
         "holding an input, another export's folder, or (without `allow_outside = true`) a"
         ' path outside the project. At run time ftlang also replaces only a folder it '
         'published itself and that is unchanged since (step error FT0201 otherwise).'),
    "FT0201": Code('step failed',
         "A step failed while running. Its own message says why; a Python error's "
         'traceback is written to .ft/logs/.'),
    "FT0202": Code('assertion failed', 'An eval `assert` was false after the eval ran.'),
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
