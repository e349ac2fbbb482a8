"""`ft fmt`: canonical, idempotent, comment-preserving, and meaning-preserving."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, ROOT, example_files, run_ft
from ftlang.lang import ast
from ftlang.lang.diagnostics import FtError
from ftlang.lang.format import WIDTH, format_source
from ftlang.lang.parser import parse


def shape(node: Any) -> Any:
    """An AST as nested tuples without spans: what "the same program" means."""
    if isinstance(node, ast.Span):
        return None
    if isinstance(node, ast.Module):
        return (shape(node.version), shape(node.items))
    if dataclasses.is_dataclass(node):
        return (type(node).__name__,) + tuple(
            shape(getattr(node, f.name)) for f in dataclasses.fields(node)
            if f.name not in ("span", "name_span", "body_span"))
    if isinstance(node, (list, tuple)):
        return tuple(shape(x) for x in node)
    return node


def parses(path: Path) -> bool:
    try:
        parse(path.read_text(), str(path))
    except FtError:
        return False
    return True


CORPUS = sorted(p for p in [*(FIXTURES / "ok").glob("*.ft"), *(FIXTURES / "err").glob("*.ft"),
                            *example_files(), *(ROOT / "stdlib").glob("*.ft"),
                            *(FIXTURES / "fmt").glob("*.ft")]
                if parses(p))


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(ROOT)))
def test_round_trip(path: Path) -> None:
    text = path.read_text()
    once = format_source(text, path.name)
    assert shape(parse(once, path.name)) == shape(parse(text, path.name))
    assert format_source(once, path.name) == once, "not idempotent"
    assert [c.text for c in parse(once).comments] == [c.text for c in parse(text).comments]
    assert once.endswith("\n") and not once.endswith("\n\n")
    assert all(line == line.rstrip() for line in once.splitlines())


def test_corpus_is_not_empty() -> None:
    assert len(CORPUS) >= 20


def test_formatted_fixture_is_stable() -> None:
    """tests/fixtures/fmt/messy.ft formats to exactly tests/fixtures/fmt/messy.expected."""
    src = FIXTURES / "fmt" / "messy.ft"
    expected = src.with_suffix(".expected")
    got = format_source(src.read_text(), src.name)
    if not expected.exists():  # first run writes it for review
        expected.write_text(got)
    assert got == expected.read_text()


def test_layout_rules() -> None:
    text = ('ft 0.1\nmodel base { hub = "Qwen/Qwen2.5-0.5B", revision = "4e20de3" }\n'
            'curate c {\nfrom=t\nsplit { train = 0.9, heldout = 0.1, by = prompt }\n'
            'sql """SELECT * FROM t"""\n}\n')
    assert format_source(text) == (
        'ft 0.1\n\nmodel base {\n  hub      = "Qwen/Qwen2.5-0.5B"\n  revision = "4e20de3"\n}\n\n'
        'curate c {\n  from = t\n  split { train = 0.9, heldout = 0.1, by = prompt }\n'
        '  sql """SELECT * FROM t"""\n}\n')


def test_numbers_and_strings_are_kept_as_written() -> None:
    text = 'x a {\n  lr = 1e-4\n  b  = 0.50\n  s  = "tab\\there \\"q\\""\n}\n'
    assert format_source(text) == text


def test_long_values_break_one_item_per_line() -> None:
    items = ", ".join(f'"module_{i}"' for i in range(12))
    out = format_source(f"x a {{\n  target = [{items}]\n}}\n")
    lines = out.splitlines()
    assert lines[1] == "  target = [" and lines[2] == '    "module_0",' and lines[-2] == "  ]"
    assert all(len(line) <= WIDTH for line in lines)


def test_parentheses_only_where_needed() -> None:
    text = "x a {\n  a = (1 + 2) * 3\n  b = 1 + (2 * 3)\n  c = 1 - (2 - 3)\n  d = -(1 + 2)\n}\n"
    out = format_source(text)
    assert "a = (1 + 2) * 3" in out and "b = 1 + 2 * 3" in out
    assert "c = 1 - (2 - 3)" in out and "d = -(1 + 2)" in out


def test_long_string_is_reindented_not_rewritten() -> None:
    text = 'curate c {\n      sql """\n          SELECT a,\n              b\n          FROM t\n      """\n}\n'
    out = format_source(text)
    assert out == 'curate c {\n  sql """\n    SELECT a,\n        b\n    FROM t\n  """\n}\n'


def test_presets_and_uses() -> None:
    text = ('use "./lib.ft" { a }\nmethod small(r: int = 4, alpha: int = 2 * r) = lora(r = r, '
            'alpha = alpha)\n')
    assert format_source(text) == text


def test_empty_and_comment_only_files() -> None:
    assert format_source("") == ""
    assert format_source("# just a note\n\n\n") == "# just a note\n"


def test_syntax_error_raises() -> None:
    with pytest.raises(FtError):
        format_source("x a {\n")


def test_cli_check_and_write(tmp_path: Path) -> None:
    f = tmp_path / "p.ft"
    f.write_text("ft 0.1\ndataset t {source=jsonl(\"x.jsonl\")}\n")
    check = run_ft("fmt", "--check", "p.ft", cwd=tmp_path)
    assert check.returncode == 1 and "would reformat p.ft" in check.stdout
    assert f.read_text().startswith("ft 0.1\ndataset")  # --check writes nothing
    assert run_ft("fmt", "p.ft", cwd=tmp_path).returncode == 0
    assert f.read_text() == 'ft 0.1\n\ndataset t {\n  source = jsonl("x.jsonl")\n}\n'
    assert run_ft("fmt", "--check", "p.ft", cwd=tmp_path).returncode == 0
