"""More mistakes `ft check` used to let through: an assert that compares no metric, an eval of
no model, a regular expression `re` cannot compile, tiny() heads that do not divide hidden,
list entries given twice, a number literal that underflows to 0. Each test runs the real
`ft check` on a real .ft file and reads the code, the place and the message it prints."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, run_ft

HEAD = '''ft 0.1
dataset tasks { source = jsonl("data/tasks.jsonl") }
model base { init = tiny(data = tasks) }
model other { init = tiny(data = tasks, seed = 1) }
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / "ok" / "data", tmp_path / "data")
    return tmp_path


def check(project: Path, text: str) -> str:
    """`ft check p.ft` on HEAD + text: its stderr, after asserting it failed."""
    (project / "p.ft").write_text(HEAD + text)
    r = run_ft("check", "p.ft", cwd=project, timeout=120)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr


def passes(project: Path, text: str) -> None:
    (project / "p.ft").write_text(HEAD + text)
    r = run_ft("check", "p.ft", cwd=project, timeout=120)
    assert r.returncode == 0, r.stderr


def first(stderr: str) -> tuple[str, str, int, int, str]:
    """(code, message, line, col, caret line) of the first diagnostic ft check printed."""
    lines = stderr.splitlines()
    head = re.match(r"error\[(FT\d{4})\]: (.*)", lines[0])
    assert head, stderr
    where = re.search(r"--> p\.ft:(\d+):(\d+)", lines[1])
    assert where, stderr
    caret = next(ln for ln in lines[2:] if "^" in ln)
    return head.group(1), head.group(2), int(where.group(1)), int(where.group(2)), caret


def errors(stderr: str) -> int:
    m = re.search(r"(\d+) errors? found", stderr)
    return int(m.group(1)) if m else 0


def eval_block(body: str) -> str:
    return "eval e {\n  models = [base]\n  data = tasks\n" + body + "}\n"


# 1 ---- an assert that compares no metric ------------------------------------------------------

@pytest.mark.parametrize("expr, verdict", [("1 > 2", "false"), ("2 > 1", "true"), ("0", "false"),
                                           ("-(1 + 1) * 3 >= 10 / 0", "false")])
def test_assert_of_numbers_only(project: Path, expr: str, verdict: str) -> None:
    err = check(project, eval_block(f"  assert {expr}\n"))
    code, message, line, col, caret = first(err)
    assert (code, message) == ("FT0118", f"the assertion compares no metric: it is always {verdict}")
    assert (line, col) == (8, 10)
    assert caret.endswith("^" * len(expr) + f" always {verdict}")
    assert "help: an assert checks measured values: compare `model.metric`, e.g. assert base." in err
    assert errors(err) == 1


def test_assert_with_a_metric_still_passes(project: Path) -> None:
    passes(project, eval_block("  assert base.exact_match >= 0.5 * 1\n  assert 1 < base.loss\n"))


# 2 ---- an eval of no model ----------------------------------------------------------------------

def test_eval_with_no_models(project: Path) -> None:
    err = check(project, "eval e {\n  models = []\n  data = tasks\n  assert base.loss < 1\n}\n")
    code, message, line, col, caret = first(err)
    assert (code, message, line, col) == ("FT0105", "eval `e` evaluates no model", 6, 3)
    assert "an empty list" in caret and "help: list the models to compare" in err
    assert errors(err) == 1  # the assert naming `base` does not add a second error


# 3 ---- regular expressions that re cannot compile ----------------------------------------------

@pytest.mark.parametrize("metric, col, reason", [
    ('regex("answer: (\\\\d+")', 20, "missing ), unterminated subpattern at position 8"),
    ('regex(pattern = "a{2,1}", fullmatch = true)', 30, "min repeat greater than max repeat at position 2"),
    ('refusal_rate(patterns = ["sorry", "a**"])', 48, "multiple repeat at position 2"),
])
def test_metric_regex_that_does_not_compile(project: Path, metric: str, col: int, reason: str) -> None:
    err = check(project, eval_block(f"  metrics = [{metric}]\n"))
    code, message, line, c, caret = first(err)
    assert (code, message, line, c) == ("FT0132", f"invalid regular expression: {reason}", 8, col)
    assert caret.rstrip().endswith("^ not a Python regex")
    assert "help: Python `re` syntax" in err


def test_metric_regex_that_compiles_passes(project: Path) -> None:
    passes(project, eval_block('  metrics = [regex("answer: (\\\\d+)"), exact_match, refusal_rate(patterns = ["no"])]\n'))
    passes(project, eval_block('  metrics = [regex("")]\n'))  # empty: each reference is the pattern


# 4 ---- tiny(): heads must divide hidden into an even head size --------------------------------

def test_tiny_heads_do_not_divide_hidden(project: Path) -> None:
    err = check(project, "model m {\n  init = tiny(\n    data = tasks,\n    hidden = 100,\n    heads = 3,\n  )\n}\n")
    code, message, line, col, caret = first(err)
    assert (code, message) == ("FT0114", "tiny(): hidden = 100 is not divisible by heads = 3")
    assert (line, col) == (9, 13)
    assert caret.endswith("^ does not divide hidden = 100")
    assert "p.ft:8:14" in err  # the `hidden` it does not divide, as a second label
    assert "help: e.g. heads = 2: hidden / heads must be a whole, even number" in err


def test_tiny_odd_head_size_points_at_hidden(project: Path) -> None:
    err = check(project, "model m { init = tiny(data = tasks, hidden = 100) }\n")
    code, message, line, col, caret = first(err)
    assert (code, message) == ("FT0114", "tiny(): the head size hidden / heads = 25 must be even "
                                         "(rotary embeddings)")
    assert (line, col) == (5, 46) and caret.endswith("^^^ 100 / 4 = 25, an odd head size")
    assert "e.g. heads = 5" in err


def test_tiny_swept_heads_are_checked_at_every_point(project: Path) -> None:
    err = check(project, "model m { init = tiny(data = tasks, heads = sweep [4, 3]) }\n")
    code, message, line, col, _ = first(err)
    assert (code, message, line, col) == ("FT0114", "tiny(): hidden = 64 is not divisible by heads = 3", 5, 45)


def test_tiny_heads_that_fit_pass(project: Path) -> None:
    passes(project, "model m { init = tiny(data = tasks, hidden = 96, heads = 6) }\n")


# 5 ---- entries listed twice ---------------------------------------------------------------------

@pytest.mark.parametrize("text, message, line, col, first_at", [
    ("eval e {\n  models = [base, other, base]\n  data = tasks\n}\n",
     "`base` is listed twice in `models`", 6, 26, "p.ft:6:13"),
    (eval_block("  metrics = [loss, exact_match, loss]\n"), "the metric `loss` is listed twice in `metrics`",
     8, 33, "p.ft:8:14"),
    (eval_block("  metrics = [exact_match, exact_match(strip = false)]\n"),
     "the metric `exact_match` is listed twice in `metrics`", 8, 27, "p.ft:8:14"),
    (eval_block("  extra_data = [tasks, tasks]\n"), "`tasks` is listed twice in `extra_data`", 8, 24, "p.ft:8:17"),
    ("mix m {\n  from = [tasks, tasks]\n  ratios = [0.5, 0.5]\n}\n", "`tasks` is listed twice in `from`", 6, 18,
     "p.ft:6:11"),
])
def test_entry_listed_twice(project: Path, text: str, message: str, line: int, col: int, first_at: str) -> None:
    err = check(project, text)
    code, msg, ln, c, caret = first(err)
    assert (code, msg, ln, c) == ("FT0108", message, line, col)
    assert caret.endswith("listed again here")
    assert f"::: {first_at}" in err and "first listed here" in err
    assert errors(err) == 1


def test_distinct_entries_pass(project: Path) -> None:
    passes(project, "eval e {\n  models = [base, other]\n  data = tasks\n  metrics = [loss, exact_match]\n}\n"
                    "dataset more { source = jsonl(\"data/tasks.jsonl\") }\n"
                    "mix m {\n  from = [tasks, more]\n  ratios = [0.5, 0.5]\n}\n")


# 6 ---- a number literal out of the range of a float ------------------------------------------

@pytest.mark.parametrize("value, shown", [("1e-400", "1e-400"), ("-1e-400", "-1e-400"), ("2 * 1e-330", "1e-330")])
def test_literal_that_underflows(project: Path, value: str, shown: str) -> None:
    err = check(project, f"train t {{\n  from = base\n  data = tasks\n  lr = {value}\n}}\n")
    code, message, line, col, caret = first(err)
    assert code == "FT0107"
    assert message == f"`lr` = {shown} is out of the range of a float: it underflows to 0"
    assert line == 8 and col == (12 if value.startswith("2 *") else 8)
    assert caret.endswith("^ underflows to 0") and "found 0" not in err


def test_literal_that_underflows_in_an_assert(project: Path) -> None:
    err = check(project, eval_block("  assert base.loss < 1e-999\n"))
    code, message, line, col, caret = first(err)
    assert (code, message, line, col) == ("FT0107", "the number 1e-999 is out of the range of a float", 8, 22)
    assert caret.endswith("^^^^^^ underflows to 0") and errors(err) == 1


def test_small_and_zero_literals_pass(project: Path) -> None:
    passes(project, "train t {\n  from = base\n  data = tasks\n  lr = 5e-300\n  warmup = 0.0e-400\n}\n")


# 7 ---- a file that declares nothing ---------------------------------------------------------

@pytest.mark.parametrize("text, where", [
    ("", "p.ft:1:1"),
    ("# a pipeline, one day\n\n", "p.ft:1:1"),
    ("ft 0.1\n# nothing yet\n", "p.ft:1:1"),
])
def test_a_file_that_declares_nothing_is_a_warning_not_a_silent_ok(project: Path, text: str, where: str) -> None:
    (project / "p.ft").write_text(text)
    for command in ("check", "run"):
        r = run_ft(command, "p.ft", cwd=project, timeout=120)
        assert r.returncode == 0, r.stderr  # a warning: an empty library file is not wrong
        assert "warning[FT0133]: p.ft declares nothing" in r.stderr and f"--> {where}" in r.stderr, r.stderr


def test_a_file_of_definitions_only_gets_no_such_warning(project: Path) -> None:
    (project / "p.ft").write_text('ft 0.1\ntemplate qa = plain(separator = "\\n")\n')
    r = run_ft("check", "p.ft", cwd=project, timeout=120)
    assert r.returncode == 0 and "FT0133" not in r.stderr, r.stderr


def test_a_slow_set_up_statement_is_cut_off_and_the_check_goes_on(project: Path) -> None:
    # ft check runs a curate's set-up statements on empty tables; one that would run for hours
    # is interrupted after sqlrules.BIND_SECONDS (the step will say what it says), never hangs.
    (project / "p.ft").write_text(HEAD + 'curate c {\n  from = tasks\n  sql """\n'
                                  "    CREATE TEMP TABLE big AS SELECT sum(i % 7) AS s FROM range(100000000000) t(i);\n"
                                  '    SELECT prompt, completion FROM tasks\n  """\n}\n')
    r = run_ft("check", "p.ft", cwd=project, timeout=60)
    assert r.returncode == 0 and "p.ft: ok" in r.stdout + r.stderr, r.stderr
