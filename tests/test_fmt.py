"""`ft fmt`: canonical, idempotent, comment-preserving, and meaning-preserving."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, example_files, run_ft
from ftlang.lang import ast
from ftlang.lang.diagnostics import FtError
from ftlang.lang.format import WIDTH, format_source, meaning
from ftlang.lang.parser import parse

shape = meaning  # an AST without spans (test_fuzz.py uses it too)


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


# Characters str.splitlines() breaks a line at that the grammar does not: inside a string
# or a comment (the form feed also as whitespace between tokens).
OTHER_BREAKS = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", OTHER_BREAKS, ids=lambda c: f"U+{ord(c):04X}")
def test_other_line_breaks_in_strings_and_comments_survive_fmt(char: str) -> None:
    text = (f'ft 0.1\n# note{char}kept\ndataset corpus {{ source = jsonl("a{char}b.jsonl") }}\n'
            'model base { init = tiny(data = corpus) }  # tail\n')
    once = format_source(text, "f.ft")
    assert f'jsonl("a{char}b.jsonl")' in once and f"# note{char}kept" in once and "# tail" in once
    assert shape(parse(once, "f.ft")) == shape(parse(text, "f.ft"))
    assert format_source(once, "f.ft") == once


def test_fmt_and_diagnostics_after_a_carriage_return_in_a_string(tmp_path: Path) -> None:
    """End to end: `ft fmt` rewrites the file with its string whole, and `ft check` shows
    an error's own line under its line number (both were off by one per lone CR)."""
    f = tmp_path / "p.ft"
    f.write_bytes(b'ft 0.1\ndataset corpus { source = jsonl("c\rx.jsonl") }\n'
                  b"model base { init = tiny(data = corpus) }\n"
                  b"train sft {\n  from = base\n  data = corpus\n  epoch = 2\n}\n")
    check = run_ft("check", "p.ft", cwd=tmp_path)
    assert "p.ft:7:3" in check.stdout + check.stderr
    assert "7 |   epoch = 2" in check.stdout + check.stderr
    assert run_ft("fmt", "p.ft", cwd=tmp_path).returncode == 0
    assert b'jsonl("c\rx.jsonl")' in f.read_bytes()
    assert run_ft("fmt", "--check", "p.ft", cwd=tmp_path).returncode == 0


def test_a_crlf_file_is_shown_and_formatted_without_its_carriage_returns() -> None:
    text = 'ft 0.1\r\n# c\r\ndataset corpus { source = jsonl("x.jsonl") }\r\n'
    once = format_source(text, "f.ft")
    assert "\r" not in once and "# c\n" in once
    assert ast.source_lines(text) == ["ft 0.1", "# c", 'dataset corpus { source = jsonl("x.jsonl") }']


def test_fmt_writes_nothing_when_its_result_would_change_the_program(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The guard against a formatter bug: a layout that parses to another program (here a
    string changed) or loses a comment is not written; the file stays byte for byte."""
    from ftlang.lang import format as fmt
    from ftlang.runtime.cli import main

    f = tmp_path / "p.ft"
    original = b'ft 0.1\n# keep me\ndataset t {source=jsonl("x.jsonl")}\n'
    f.write_bytes(original)
    real = fmt.format_module
    for broken in (lambda m: real(m).replace("x.jsonl", "y.jsonl"), lambda m: real(m).replace("# keep me\n", "")):
        monkeypatch.setattr(fmt, "format_module", broken)
        assert main(["fmt", str(f)]) == 1
        assert "left as it is" in capsys.readouterr().err
        assert f.read_bytes() == original
    monkeypatch.setattr(fmt, "format_module", real)
    assert main(["fmt", str(f)]) == 0 and f.read_bytes() != original


def test_fmt_rewrites_a_link_s_target_and_keeps_the_file_s_mode(tmp_path: Path) -> None:
    import os
    import stat

    real = tmp_path / "real.ft"
    real.write_text("ft 0.1\ndataset t {source=jsonl(\"x.jsonl\")}\n")
    real.chmod(0o640)
    link = tmp_path / "link.ft"
    link.symlink_to(real)
    assert run_ft("fmt", "link.ft", cwd=tmp_path).returncode == 0
    assert link.is_symlink() and real.read_text().startswith("ft 0.1\n\ndataset t {\n")
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.ft", "real.ft"]  # no temporary left
