"""`ft fmt` round trips: over the shipped files, targeted cases and generated layouts,
formatting is idempotent, parses to the same program, and keeps every comment, in order,
in the block it was written in.

A comment's block (`places`) is where it sits: the innermost block, sub-block or preset
body whose braces hold it, or the top level; a comment after a block's `}` is outside it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, example_files, run_ft
from ftlang.lang import ast
from ftlang.lang.diagnostics import FtError
from ftlang.lang.format import expr_text, format_source, meaning
from ftlang.lang.parser import parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

Place = tuple[str, tuple[int, ...]]  # a comment's text, and the path of its block: () is the top level


# ---- the invariants ------------------------------------------------------------------------


def _blocks(module: ast.Module) -> list[tuple[tuple[int, ...], ast.Span, tuple[ast.Stmt, ...]]]:
    """Every block, sub-block and preset body: its path, the span holding its braces, its body."""
    out: list[tuple[tuple[int, ...], ast.Span, tuple[ast.Stmt, ...]]] = []

    def walk(path: tuple[int, ...], span: ast.Span, body: tuple[ast.Stmt, ...]) -> None:
        out.append((path, span, body))
        for j, s in enumerate(body):
            if isinstance(s, ast.SubBlock):
                walk((*path, j), s.span, s.body)

    for i, item in enumerate(module.items):
        span = getattr(item, "body_span", None)
        if span is not None:
            walk((i,), span, item.body)  # type: ignore[union-attr]
    return out


def places(module: ast.Module) -> list[Place]:
    out: list[Place] = []
    for c in module.comments:
        home: tuple[int, ...] = ()
        for path, span, _ in _blocks(module):
            inside = (span.line, span.col) < (c.line, c.col) < (span.end_line, span.end_col)
            if inside and len(path) > len(home):
                home = path
        out.append((c.text, home))
    return out


def assert_round_trip(text: str, name: str = "f.ft") -> str:
    """Formats `text` and checks the three invariants; returns the formatted text."""
    before = parse(text, name)
    once = format_source(text, name)
    after = parse(once, name)
    assert format_source(once, name) == once, f"not idempotent:\n{text}\n---\n{once}"
    assert meaning(after) == meaning(before), f"another program:\n{text}\n---\n{once}"
    assert [c.text for c in after.comments] == [c.text for c in before.comments], \
        f"comments lost or reordered:\n{text}\n---\n{once}"
    assert places(after) == places(before), f"a comment changed block:\n{text}\n---\n{once}"
    return once


def _parses(path: Path) -> bool:
    try:
        parse(path.read_text(), path.name)
    except FtError:
        return False
    return True


CORPUS = sorted(p for p in {*example_files(), *(ROOT / "examples").glob("*.ft"), *FIXTURES.rglob("*.ft")}
                if _parses(p))


def test_corpus_has_the_examples_and_fixtures() -> None:
    assert len(CORPUS) >= 40 and any(p.parent.name == "examples" for p in CORPUS)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_and_fixture_round_trips(path: Path) -> None:
    assert_round_trip(path.read_text(), path.name)


# ---- operators (the grammar's: comparisons, + - * /, unary -; no **) --------------------------

OPERATORS = [
    ("-(-1)", "-(-1)"),  # was --1
    ("- -x", "-(-x)"),
    ("--1", "-(-1)"),
    ("-(-(-1))", "-(-(-1))"),
    ("-(-(a + b))", "-(-(a + b))"),
    ("-(a + b)", "-(a + b)"),
    ("-(2 * 2)", "-(2 * 2)"),
    ("(-2) * 2", "-2 * 2"),
    ("2 * (3 + 4)", "2 * (3 + 4)"),
    ("(2 * 3) + 4", "2 * 3 + 4"),
    ("a - (b - c)", "a - (b - c)"),
    ("(a - b) - c", "a - b - c"),
    ("a / (b * c)", "a / (b * c)"),
    ("1 - -1", "1 - -1"),
    ("1 - (-(-1))", "1 - -(-1)"),
    ("(a < b) == true", "(a < b) == true"),
    ("a < (b + 1)", "a < b + 1"),
    ("-(a < b)", "-(a < b)"),
    ("f(-(-1), k = -(-2))", "f(-(-1), k = -(-2))"),
    ("[-(-1), (1 + 2) * 3]", "[-(-1), (1 + 2) * 3]"),
]


@pytest.mark.parametrize(("written", "formatted"), OPERATORS)
def test_operators_keep_their_meaning_and_read_plainly(written: str, formatted: str) -> None:
    once = assert_round_trip(f"train t {{\n  x = {written}\n}}\n")
    assert once == f"train t {{\n  x = {formatted}\n}}\n"


SPAN = ast.Span("f.ft", 1, 1, 1, 1)
nums = st.sampled_from(["1", "2.5", "1e-4", "0"]).map(lambda t: ast.Num(float(t) if "." in t or "e" in t
                                                                       else int(t), t, SPAN))
leaves = st.one_of(nums, st.sampled_from(["a", "b.c"]).map(lambda d: ast.Ref(tuple(d.split(".")), SPAN)))
ops = st.sampled_from([">=", "<=", "==", "!=", ">", "<", "+", "-", "*", "/"])
trees = st.recursive(leaves, lambda kids: st.one_of(
    kids.map(lambda e: ast.Neg(e, SPAN)),
    st.tuples(ops, kids, kids).map(lambda t: ast.BinOp(t[0], t[1], t[2], SPAN))), max_leaves=6)
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@PROPERTY
@given(trees)
def test_any_operator_tree_prints_to_text_that_parses_back_to_it(e: ast.Expr) -> None:
    text = expr_text(e)
    assert "--" not in text
    parsed = parse(f"x a {{\n  v = {text}\n}}\n").items[0]
    assert isinstance(parsed, ast.Block) and isinstance(parsed.body[0], ast.Attr)
    assert meaning(parsed.body[0].value) == meaning(e), text


# ---- comments ------------------------------------------------------------------------------

EXPORT = '''ft 0.1

export release {
  model = sft
  to    = "out/x"
  # note
}
'''

COMMENTS = [
    # a comment before a block's `}` stays there: export, nested, settings, preset body, empty
    EXPORT,
    'train t {\n  split {\n    a = 1\n    # inner\n  }\n  # outer\n}\n',
    'cache {\n  remote = "s3://b"\n  # note\n}\n',
    "method m(r: int = 4) {\n  a = r\n  # note\n}\n",
    "export e {\n  # only a comment\n}\n",
    "export e {\n  split {\n    # only a comment\n  }\n}\n",
    # trailing comments, comments between items, before the first, at the end of the file
    "# first\n\n# before\nx a {\n  a  = 1  # t\n  bb = 2  # u\n}\n\n# between\ny b {  # head\n  c = 2\n}  # after\n\n# end\n",
    "ft 0.1  # version\ntemplate t = chatml()  # tail\n",
]


@pytest.mark.parametrize("text", COMMENTS, ids=range(len(COMMENTS)))
def test_canonical_comments_stay_exactly_where_they_are(text: str) -> None:
    assert assert_round_trip(text) == text


MOVED = [
    # inside a list or call the layout joins: above its statement, `=` still aligned
    ("x a {\n  long_name = [1,  # c\n    2]\n  b = 1\n}\n",
     "x a {\n  # c\n  long_name = [1, 2]\n  b         = 1\n}\n"),
    ("x a {\n  l = [\n    1,  # one\n    # two\n    2,\n  ]  # end\n  # last\n}\n",
     "x a {\n  # one\n  # two\n  l = [1, 2]  # end\n  # last\n}\n"),
    # among a preset's parameters: above the preset, not into its body
    ("method m(\n  r: int = 4,  # rank\n) {\n  a = r\n}\n", "# rank\nmethod m(r: int = 4) {\n  a = r\n}\n"),
    ("method m(\n  r: int = 4,  # rank\n) = lora(r = r)\n", "# rank\nmethod m(r: int = 4) = lora(r = r)\n"),
    # inside a definition's value or a `use` list: above the item, not after it
    ('template t = chatml(\n  system = "x",\n  # inside\n)\n# after\n',
     '# inside\ntemplate t = chatml(system = "x")\n# after\n'),
    ("use stdlib.methods {\n  lora,\n  # c\n}\n", "# c\nuse stdlib.methods { lora }\n"),
    # two statements on a line: the comment stays with the second
    ("x a {\n  a = 1, b = 2  # c\n}\n", "x a {\n  a = 1\n  b = 2  # c\n}\n"),
    ("x a {\n  split { a = 1 }, b = 2  # c\n}\n", "x a {\n  split { a = 1 }\n  b = 2  # c\n}\n"),
    # after a block's `}`: outside it, where the layout opens the block or not
    ("x a { b = 1 }  # c\n", "x a {\n  b = 1\n}  # c\n"),
    ("x a {\n  b = 1\n  s { c = 1 }  # c\n}\n", "x a {\n  b = 1\n  s { c = 1 }  # c\n}\n"),
    ("x a {\n  s {\n    c = 1 } }  # c\n", "x a {\n  s { c = 1 }\n}  # c\n"),
    ("x a {\n  s { c = (1) }  # c\n  t = (2)  # d\n}\n", "x a {\n  s { c = 1 }  # c\n  t = 2  # d\n}\n"),
]


@pytest.mark.parametrize(("text", "expected"), MOVED, ids=range(len(MOVED)))
def test_comments_the_layout_moves_stay_in_their_block(text: str, expected: str) -> None:
    assert assert_round_trip(text) == expected


# ---- generated layouts ---------------------------------------------------------------------

NAMES = ["a", "b", "lr", "model", "data", "x_1"]
LONG = '"' + "long_text " * 7 + '"'  # two of them pass the layout's width: lists and calls break


class _Layout:
    """A random program in a random layout, a `#@` wherever a comment may go."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def flip(self, p: float = 0.5) -> bool:
        return self.draw(st.floats(0, 1)) < p

    def pick(self, xs: list[str]) -> str:
        return self.draw(st.sampled_from(xs))

    def nl(self, indent: str) -> str:
        """A line break where the grammar allows one, with comments and a blank line maybe."""
        out = "  #@" if self.flip(0.3) else ""
        out += "\n" + ("\n" if self.flip(0.15) else "")
        while self.flip(0.2):
            out += indent + "#@\n"
        return out + indent

    def seq(self, items: list[str], indent: str, close: str) -> str:
        """Items of a bracket (after its opening) and its closing, broken or not."""
        if not items:
            return self.nl(indent) + close if self.flip(0.2) else close
        inner = indent + "  "
        out = self.nl(inner) if self.flip(0.3) else ""
        for i, x in enumerate(items):
            out += x
            if i < len(items) - 1:
                out += "," + (self.nl(inner) if self.flip(0.3) else " ")
        if self.flip(0.3):
            return out + ("," if self.flip() else "") + self.nl(indent) + close
        return out + close

    def expr(self, indent: str, depth: int = 0) -> str:
        atoms = ["1", "2.50", "1e-4", "a", "b.c", '"s"', '"# not a comment"', "true", LONG]
        if depth > 2 or self.flip(0.4):
            return self.pick(atoms)
        kind = self.pick(["list", "call", "binop", "neg", "paren", "sweep", "select"])
        n = self.draw(st.integers(0, 3))
        if kind == "list":
            return "[" + self.seq([self.expr(indent + "  ", depth + 1) for _ in range(n)], indent, "]")
        if kind == "call":
            args = [(f"{self.pick(NAMES)} = " if self.flip() else "") + self.expr(indent + "  ", depth + 1)
                    for _ in range(n)]
            args.sort(key=lambda a: " = " in a)  # positional arguments first
            return self.pick(["f", "lora", "m.g"]) + "(" + self.seq(args, indent, ")")
        if kind == "binop":
            left, right = (f"({self.expr(indent, depth + 1)})" if self.flip(0.6) else self.pick(atoms)
                           for _ in range(2))
            return f"{left} {self.pick(['+', '-', '*', '/', '<', '==', '>='])} {right}"
        if kind == "neg":  # also `--1`, `- -a`, `-(-1)`
            operand = self.pick(["1", "a", "-1", " -a", "(-1)"]) if self.flip() else \
                f"({self.expr(indent, depth + 1)})"
            return "-" + operand
        if kind == "paren":
            return f"({self.expr(indent, depth + 1)})"
        if kind == "sweep":
            return "sweep [" + self.seq([self.pick(atoms[:3]) for _ in range(n)], indent, "]")
        return f"min loss on {self.pick(['d', 'd.heldout'])}"

    def stmt(self, indent: str, depth: int) -> str:
        kind = self.pick(["attr", "attr", "attr", "typed", "sub", "sql", "assert"])
        if kind == "sub" and depth < 2:
            return self.pick(["split", "schema", "lora"]) + " " + self.body(indent, depth + 1)
        if kind == "typed":
            return f"{self.pick(NAMES)}: {self.pick(['str', 'int', 'list[str]'])}"
        if kind == "sql":
            return self.pick(['sql "SELECT 1"', 'sql """SELECT 1"""',
                              f'sql """\n{indent}  SELECT a -- # not a comment\n{indent}  FROM t\n{indent}"""'])
        if kind == "assert":
            return f"assert {self.expr(indent)}"
        return f"{self.pick(NAMES)} = {self.expr(indent)}"

    def body(self, indent: str, depth: int = 0) -> str:
        inner = indent + "  "
        stmts = [self.stmt(inner, depth) for _ in range(self.draw(st.integers(0, 4)))]
        if not stmts:
            return "{" + (self.nl(indent) if self.flip(0.5) else " ") + "}"
        out = "{" + (self.nl(inner) if self.flip(0.7) else " ")
        for i, s in enumerate(stmts):
            out += s
            if i < len(stmts) - 1 and self.flip(0.25):
                out += ", "  # several statements on a line
            elif i < len(stmts) - 1:
                out += ("," if self.flip(0.1) else "") + self.nl(inner)
        if self.flip(0.7):
            return out + ("," if self.flip(0.1) else "") + self.nl(indent) + "}"
        return out + " }"

    def item(self) -> str:
        kind = self.pick(["block", "block", "block", "settings", "definition", "preset", "use"])
        if kind == "block":
            return f"{self.pick(['train', 'export', 'dataset', 'eval'])} {self.pick(NAMES)} {self.body('')}"
        if kind == "settings":
            return f"cache {self.body('')}"
        if kind == "definition":
            return f"template {self.pick(NAMES)} = {self.expr('')}"
        if kind == "use":
            names = [self.pick(NAMES) for _ in range(self.draw(st.integers(1, 3)))]
            return "use stdlib.methods {" + self.seq(names, "", "}")
        params = [f"{self.pick(NAMES)}: int" + (f" = {self.expr('  ')}" if self.flip() else "")
                  for _ in range(self.draw(st.integers(0, 3)))]
        head = f"method {self.pick(NAMES)}(" + self.seq(params, "", ")")
        return head + (f" = {self.expr('')}" if self.flip() else " " + self.body(""))

    def program(self) -> str:
        out = "#@\n" if self.flip(0.3) else ""
        if self.flip():
            out += "ft 0.1" + self.nl("")
        for _ in range(self.draw(st.integers(0, 4))):
            out += self.item() + self.nl("")
        n = 0
        while "#@" in out:  # each comment its own text: order and place are then checkable
            out = out.replace("#@", f"# c{n}", 1)
            n += 1
        return out


@st.composite
def layouts(draw: st.DrawFn) -> str:
    return _Layout(draw).program()


@PROPERTY
@given(layouts())
def test_generated_layouts_round_trip(text: str) -> None:
    assert_round_trip(text)  # the generator writes only what the grammar allows: parse raises otherwise


# ---- the real command ----------------------------------------------------------------------


def test_ft_fmt_rewrites_a_real_file_keeping_comments_and_meaning(tmp_path: Path) -> None:
    f = tmp_path / "p.ft"
    f.write_text('ft 0.1\n\ntrain t {\n  x = -(-1)\n  y = - -a\n  z = -(a + b)\n  w = 2 * (3 + 4)\n}\n\n'
                 'export release {\n  model = sft\n  to    = "out/x"  # where\n  # note\n}\n'
                 'method m(\n  r: int = 4,  # rank\n) {\n  a = r\n}\n')
    done = run_ft("fmt", "p.ft", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "left as it is" not in done.stderr
    assert f.read_text() == (
        'ft 0.1\n\ntrain t {\n  x = -(-1)\n  y = -(-a)\n  z = -(a + b)\n  w = 2 * (3 + 4)\n}\n\n'
        'export release {\n  model = sft\n  to    = "out/x"  # where\n  # note\n}\n\n'
        '# rank\nmethod m(r: int = 4) {\n  a = r\n}\n')
    again = run_ft("fmt", "--check", "p.ft", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == ""
