"""Editor support: the Pygments lexer (registered as `ft`) and the TextMate grammar."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, ROOT, example_files

pygments = pytest.importorskip("pygments")

SAMPLE = FIXTURES / "fmt" / "messy.expected"
GRAMMAR = ROOT / "editors" / "ft.tmLanguage.json"


def test_lexer_tokens() -> None:
    from ftlang.lang.pygments_lexer import FtLexer
    from pygments.token import Comment, Error, Keyword, Name, Number, String

    tokens = list(FtLexer().get_tokens(SAMPLE.read_text()))
    assert not [t for t in tokens if t[0] is Error]
    kinds = {(ttype, value) for ttype, value in tokens}
    assert (Keyword.Declaration, "train") in kinds and (Name.Class, "sft") in kinds
    assert (Name.Attribute, "lr") in kinds and (Number.Float, "1e-3") in kinds
    assert (Comment.Single, "# header") in kinds and (Keyword, "sweep") in kinds
    assert (String.Double, '"data/corpus.jsonl"') in kinds
    assert any(ttype is Keyword and value.upper() == "SELECT" for ttype, value in tokens)  # SQL inside


def test_every_valid_file_lexes_without_errors() -> None:
    from ftlang.lang.pygments_lexer import FtLexer
    from pygments.token import Error

    files = [*(FIXTURES / "ok").glob("*.ft"), *(ROOT / "stdlib").glob("*.ft"), *example_files()]
    for f in files:
        assert not [t for t in FtLexer().get_tokens(f.read_text()) if t[0] is Error], f


def test_lexer_is_registered_as_ft() -> None:
    """`pygmentize -l ft` finds the lexer through the entry point in pyproject.toml."""
    assert 'ft = "ftlang.lang.pygments_lexer:FtLexer"' in (ROOT / "pyproject.toml").read_text()
    from pygments.lexers import find_lexer_class_by_name, get_lexer_for_filename

    try:
        cls = find_lexer_class_by_name("ft")
    except pygments.util.ClassNotFound:
        pytest.skip("the installed ftlang predates the entry point: pip install -e . again")
    assert cls.__name__ == "FtLexer"
    assert type(get_lexer_for_filename("pipeline.ft")).__name__ == "FtLexer"
    pygmentize = Path(sys.executable).parent / "pygmentize"
    cmd = [str(pygmentize)] if pygmentize.exists() else [sys.executable, "-m", "pygments"]
    out = subprocess.run([*cmd, "-l", "ft", "-f", "html", str(SAMPLE)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert '<span class="kd">train</span>' in out.stdout


def _regexes(node: Any) -> list[str]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("match", "begin", "end") and isinstance(value, str):
                out.append(value)
            else:
                out += _regexes(value)
    elif isinstance(node, list):
        for value in node:
            out += _regexes(value)
    return out


def test_textmate_grammar_is_valid() -> None:
    grammar = json.loads(GRAMMAR.read_text())
    assert grammar["scopeName"] == "source.ft" and "ft" in grammar["fileTypes"]
    regexes = _regexes(grammar)
    assert len(regexes) > 10
    for rx in regexes:
        re.compile(rx)  # the grammar sticks to what both Oniguruma and Python accept
    repo = grammar["repository"]
    includes = re.findall(r'"include": "#(\w+)"', GRAMMAR.read_text())
    assert set(includes) <= set(repo), set(includes) - set(repo)


def test_textmate_grammar_matches_the_language() -> None:
    """A few lines of real .ft against the grammar's own patterns."""
    repo = json.loads(GRAMMAR.read_text())["repository"]
    assert re.match(repo["version"]["match"], "ft 0.1")
    assert re.match(repo["header"]["match"], "train sft {").groups() == ("train", "sft")
    assert re.match(repo["header"]["match"], "method small(r: int = 4) = lora(r = r)")
    assert re.match(repo["use"]["match"], 'use "./lib.ft" { a }')
    attr = repo["statement"]["patterns"][0]["match"]
    assert re.search(attr, "  lr = 1e-4").group(1) == "lr"
    assert not re.search(attr, "  assert a.loss == b.loss")
    number = next(p["match"] for p in repo["value"]["patterns"] if p.get("name", "").startswith("constant.numeric"))
    assert re.search(number, "lr = 2e-4").group(0) == "2e-4"


def test_vscode_extension_manifest() -> None:
    manifest = json.loads((ROOT / "editors" / "package.json").read_text())
    grammar = manifest["contributes"]["grammars"][0]
    assert (ROOT / "editors" / grammar["path"]).resolve() == GRAMMAR.resolve()
    json.loads((ROOT / "editors" / "language-configuration.json").read_text())
