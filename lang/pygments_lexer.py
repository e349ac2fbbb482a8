"""A Pygments lexer for .ft files: `pygmentize -l ft pipeline.ft`.

Registered through the `pygments.lexers` entry point in pyproject.toml. The SQL inside a
`sql \"\"\"...\"\"\"` statement is highlighted with Pygments' own SQL lexer. Imported only by
Pygments (never by the compiler), so Pygments stays an optional dependency.
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, include, using, words
from pygments.lexers.sql import SqlLexer
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
)

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


class FtLexer(RegexLexer):
    """ftlang: declarative LLM fine-tuning pipelines."""

    name = "ftlang"
    aliases = ["ft", "ftlang"]
    filenames = ["*.ft"]
    mimetypes = ["text/x-ftlang"]
    url = "https://github.com/ftlang/ftlang"

    tokens = {
        "root": [
            (r"\s+", Whitespace),
            (r"#.*$", Comment.Single),
            (r"^(ft)([ \t]+)(\d+(?:\.\d+)+)", bygroups(Keyword.Namespace, Whitespace, Number)),
            (r"^(use)\b", Keyword.Namespace),
            # kind name {  /  kind name = ...  /  kind name(params) = ...
            (rf"^({_NAME})([ \t]+)({_NAME})(?=[ \t]*[{{=(])",
             bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (rf"({_NAME})([ \t]*)(?=\{{)", bygroups(Name.Namespace, Whitespace)),  # schema { ... }
            (r"(sql)(\s+)(\"\"\")((?:.|\n)*?)(\"\"\")",
             bygroups(Keyword, Whitespace, String.Doc, using(SqlLexer), String.Doc)),
            (r"(sql)(\s+)(\")((?:\\.|[^\"\\\n])*)(\")",
             bygroups(Keyword, Whitespace, String.Double, using(SqlLexer), String.Double)),
            include("value"),
        ],
        "value": [
            (r"\s+", Whitespace),
            (r"#.*$", Comment.Single),
            (words(("sweep", "assert", "sql", "on"), suffix=r"\b"), Keyword),
            (words(("min", "max"), suffix=r"\b"), Keyword.Pseudo),
            (words(("true", "false"), suffix=r"\b"), Keyword.Constant),
            (r'"""(?:.|\n)*?"""', String.Doc),
            (r'"(?:\\.|[^"\\\n])*"', String.Double),
            (r"(\d+\.\d*|\.\d+|\d+)[eE][+-]?\d+", Number.Float),
            (r"\d+\.\d*|\.\d+", Number.Float),
            (r"\d+", Number.Integer),
            (rf"({_NAME})(\s*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),
            (rf"({_NAME})(\s*)(:)(\s*)({_NAME}(?:\[[^\]\n]*\])?)",
             bygroups(Name.Attribute, Whitespace, Punctuation, Whitespace, Keyword.Type)),
            (r"(env)(?=\s*\()", Name.Builtin),
            (rf"({_NAME}(?:\.{_NAME})*)(?=\s*\()", Name.Function),
            (rf"{_NAME}(?:\.{_NAME})*", Name),
            (r">=|<=|==|!=|[-+*/<>=]", Operator),
            (r"[{}()\[\],.:]", Punctuation),
        ],
    }


__all__ = ["FtLexer"]
