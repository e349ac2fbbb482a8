"""The grammar, the AST's spans and the error converter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, example_files
from ftlang.lang import ast
from ftlang.lang.diagnostics import FtError, render
from ftlang.lang.parser import parse

DESIGN_SKETCH = '''ft 0.1
use stdlib.methods { lora, full }

dataset chats {
  source = jsonl("data/chats.jsonl")
  schema { prompt: str, response: str }  # `:` only ever means "has type"
}

curate clean {
  from = chats
  sql """
    SELECT DISTINCT ON (prompt) prompt, response
    FROM chats
  """
  split { train = 0.95, heldout = 0.05, by = prompt, seed = 17 }
}

template chat = chatml(system = "You are a concise, helpful assistant.")
model base {
  hub      = "Qwen/Qwen2.5-0.5B"
  revision = "4e20de3"
}
train sft {
  method = lora(r = 16,
                alpha = 2 * 16)
  lr     = 1e-4
  models = [a, b,
            c]
}
eval report {
  assert aligned.exact_match >= base.exact_match - 0.01
}
'''


def test_grammar_is_conflict_free_in_strict_mode() -> None:
    """Strict mode (no shift/reduce conflicts, no colliding terminals) needs interegular,
    which ftlang's own import of lark leaves out: a fresh process imports lark whole first."""
    code = ("import lark, lark.lexer; assert lark.lexer.has_interegular\n"
            "from ftlang.lang.parser import _parser; assert _parser(strict=True) is not None")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_parser_imports_lark_without_its_optional_modules() -> None:
    code = ("import sys; from ftlang.lang.parser import parse; parse('ft 0.1\\n', 'x.ft')\n"
            "assert 'lark' in sys.modules and 'regex' not in sys.modules and 'interegular' not in sys.modules\n"
            "import regex, interegular  # still importable for anything else\n"
            "assert regex.match('a', 'a')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_design_sketch_parses_with_spans() -> None:
    m = parse(DESIGN_SKETCH, "x.ft")
    assert m.version and m.version.text == "0.1"
    kinds = [type(i).__name__ for i in m.items]
    assert kinds == ["Use", "Block", "Block", "Definition", "Block", "Block", "Block"]
    train = m.items[5]
    assert isinstance(train, ast.Block) and train.name.name == "sft"
    lr = train.body[1]
    assert isinstance(lr, ast.Attr) and isinstance(lr.value, ast.Num)
    assert lr.value.value == 1e-4 and isinstance(lr.value.value, float) and lr.value.text == "1e-4"
    assert (lr.span.line, lr.span.col) == (26, 3)
    method = train.body[0]
    assert isinstance(method, ast.Attr) and isinstance(method.value, ast.CallExpr)
    alpha = method.value.kwargs[1].value
    assert isinstance(alpha, ast.BinOp) and alpha.op == "*"
    curate = m.items[2]
    assert isinstance(curate, ast.Block)
    sql = curate.body[1]
    assert isinstance(sql, ast.Sql) and sql.text.long and sql.text.value.startswith("SELECT DISTINCT")


def test_values() -> None:
    m = parse('x a {\n s = "a\\"b\\n"\n i = 3\n f = 2.5\n e = 1e-4\n t = true\n n = -2\n l = []\n r = c.d\n}\n')
    block = m.items[0]
    assert isinstance(block, ast.Block)
    vals = {s.name: s.value for s in block.body if isinstance(s, ast.Attr)}
    assert isinstance(vals["s"], ast.Str) and vals["s"].value == 'a"b\n'
    assert isinstance(vals["i"], ast.Num) and vals["i"].value == 3 and isinstance(vals["i"].value, int)
    assert isinstance(vals["e"], ast.Num) and isinstance(vals["e"].value, float)
    assert isinstance(vals["t"], ast.Bool) and vals["t"].value is True
    assert isinstance(vals["n"], ast.Neg)
    assert isinstance(vals["l"], ast.ListExpr) and vals["l"].items == ()
    assert isinstance(vals["r"], ast.Ref) and vals["r"].parts == ("c", "d")


def test_comments_are_collected_not_parsed() -> None:
    m = parse('# head\nx a { # trailing\n  s = "# not a comment" # real\n}\n')
    assert [(c.line, c.own_line) for c in m.comments] == [(1, True), (2, False), (3, False)]
    assert m.comments[2].text == "# real"


def test_file_without_trailing_newline() -> None:
    assert parse("x a { b = 1 }").items


@pytest.mark.parametrize("text, code", [
    ("x a {\n  lr: 2e-4\n}", "FT0005"),
    ("x a {\n  lr =\n}", "FT0006"),
    ("x a {\n  lr = ${x}\n}", "FT0007"),
    ('x a {\n  s = "abc\n}', "FT0004"),
    ("x a {\n  s = 'abc'\n}", "FT0009"),
    ("x a {\n  s = 1\n", "FT0002"),
    ("x a {\n  s = 1 t = 2\n}", "FT0001"),
    ("x a {\n  s = @\n}", "FT0003"),
    ("ft 2.0\n", "FT0008"),
    ("x a {\n  hub = Qwen/Qwen2.5-0.5B\n}", "FT0116"),
])
def test_syntax_errors_become_diagnostics(text: str, code: str) -> None:
    with pytest.raises(FtError) as info:
        parse(text, "t.ft")
    (diag,) = info.value.diagnostics
    assert diag.code == code
    out = render(diag, {"t.ft": text})
    assert out.startswith(f"error[{code}]") and "--> t.ft:" in out and "^" in out


def test_every_shipped_ft_parses() -> None:
    files = example_files() + list((ROOT / "stdlib").glob("*.ft"))
    for f in files:
        parse(f.read_text(), str(f))


def test_grammar_file_is_package_data() -> None:
    from importlib import resources

    assert resources.files("ftlang.lang").joinpath("ft.lark").is_file()
    assert Path(ROOT / "lang" / "ft.lark").exists()
