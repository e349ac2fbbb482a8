"""Mistakes `ft check` used to let through (or report confusingly): template arguments of
another family, empty reward lists, empty queries, duplicate schema columns, an unused
`revision`, follow-on assert errors, how `use`d files are read and named, reserved names."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, run_ft
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import Diagnostic, FtError

HEAD = '''ft 0.1
dataset tasks { source = jsonl("data/tasks.jsonl") }
model base { init = tiny(data = tasks) }
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / "ok" / "data", tmp_path / "data")
    return tmp_path


def diags(project: Path, text: str, head: str = HEAD) -> list[Diagnostic]:
    with pytest.raises(FtError) as info:
        compile_source(head + text, "p.ft", project)
    return info.value.diagnostics


def brief(ds: list[Diagnostic]) -> list[str]:
    return [f"{d.code} {d.message}" for d in ds if d.level == "error"]


def assert_ok(project: Path, text: str) -> None:
    compile_source(HEAD + text, "p.ft", project)


# 1 ---- template arguments are checked against the chosen family ---------------------------

@pytest.mark.parametrize("text, message, hint", [
    ('template qa = plain(system = "Be brief.")', "`plain` has no argument `system`", "arguments: separator"),
    ('template qa = chatml(separator = "XX")', "`chatml` has no argument `separator`", "arguments: system"),
    ('template qa {\n  style = plain\n  system = "x"\n}', "`plain` has no argument `system`", "arguments: separator"),
])
def test_template_argument_of_another_family(project: Path, text: str, message: str, hint: str) -> None:
    (d,) = diags(project, text)
    assert (d.code, d.message, d.help) == ("FT0104", message, hint)
    assert d.span is not None and d.span.file == "p.ft" and d.span.line >= 4


def test_template_positional_argument_is_named_as_such(project: Path) -> None:
    (d,) = diags(project, 'template qa = plain("x")')
    assert (d.code, d.message) == ("FT0106", "`plain` takes no positional arguments")
    assert d.span.col == 21 and d.help == "name the arguments: separator = ..."


def test_template_arguments_of_the_family_still_pass(project: Path) -> None:
    assert_ok(project, 'template a = plain(separator = " ")\ntemplate b = chatml(system = "x")\n'
                       'template c { style = llama3, system = "x" }')


# 2 ---- every online method needs a reward -----------------------------------------------------

@pytest.mark.parametrize("method", ["grpo", "rloo", "online_dpo", "ppo"])
def test_online_method_with_no_reward(project: Path, method: str) -> None:
    ds = diags(project, f"train t {{\n  from = base\n  data = tasks\n  method = {method}(reward = [])\n}}")
    assert f"FT0240 {method} has no reward" in brief(ds)
    (d,) = [d for d in ds if d.code == "FT0240"]
    assert d.span.line == 7 and d.help


# 3 ---- an empty query is an error at the sql -------------------------------------------------

@pytest.mark.parametrize("sql", ['""""""', '"""-- nothing"""', '"""  /* no */ ; """', '"  "'])
def test_empty_curate_query(project: Path, sql: str) -> None:
    (d,) = diags(project, f"curate c {{\n  from = tasks\n  sql {sql}\n}}")
    assert (d.code, d.message) == ("FT0126", "the query of curate `c` is empty")
    assert (d.span.line, d.span.col) == (6, 7) and d.help


def test_query_with_comments_and_sql_passes(project: Path) -> None:
    assert_ok(project, 'curate c {\n  sql """-- keep all\nSELECT * FROM tasks"""\n}')


# 4 ---- a schema column declared twice --------------------------------------------------------

def test_duplicate_schema_column(project: Path) -> None:
    ds = diags(project, 'dataset d2 {\n  source = jsonl("data/tasks.jsonl")\n'
                        "  schema { prompt: str, completion: str, prompt: int }\n}")
    (d,) = ds
    assert (d.code, d.message) == ("FT0108", "column `prompt` is declared twice in the schema")
    assert (d.span.line, d.span.col) == (6, 42) and d.labels[1].span.col == 12 and d.help


# 5 ---- `revision` that no source reads -------------------------------------------------------

def test_revision_on_a_built_model(project: Path) -> None:
    (d,) = diags(project, 'model m2 {\n  init = tiny(data = tasks)\n  revision = "4e20de3"\n}')
    assert (d.code, d.message) == ("FT0114", "`revision` has no effect on a model loaded with `init`")
    assert d.span.line == 6 and "hub" in (d.help or "")


def test_revision_on_a_hub_model_still_passes(project: Path) -> None:
    assert_ok(project, 'model m2 {\n  hub = "org/name"\n  revision = "4e20de3"\n}')


# 6 ---- no follow-on errors after a bad metric list -------------------------------------------

def test_bad_metric_argument_has_no_follow_on_errors(project: Path) -> None:
    ds = diags(project, "eval e {\n  models = [base]\n  data = tasks\n  metrics = [exact_match(strp = true)]\n"
                        "  assert base.exact_match > 0.5\n  assert base.exact_match < 2\n}")
    assert brief(ds) == ["FT0104 `exact_match` has no argument `strp`"]


def test_unmeasured_metric_is_still_reported(project: Path) -> None:
    ds = diags(project, "eval e {\n  models = [base]\n  data = tasks\n  metrics = [loss]\n"
                        "  assert base.exact_match > 0.5\n}")
    assert brief(ds) == ["FT0118 `exact_match` is not measured by this eval"]


# 7 ---- `use`d files are read as the main file is ---------------------------------------------

def test_use_of_a_fifo_does_not_hang(project: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    os.mkfifo(project / "fifo.ft")
    (project / "m.ft").write_text('ft 0.1\nuse "./fifo.ft" { z }\n')
    r = run_ft("check", "m.ft", cwd=project, timeout=60)
    assert r.returncode != 0
    assert "error[FT0131]: cannot read fifo.ft: not a regular file" in r.stderr
    assert "--> m.ft:2:1" in r.stderr


def test_use_of_a_latin1_file_names_the_byte(project: Path) -> None:
    (project / "lat.ft").write_bytes(b'ft 0.1\ntemplate z = chatml(system = "caf\xe9")\n')
    ds = diags(project, 'use "./lat.ft" { z }\n', head="ft 0.1\n")
    (d,) = ds
    assert d.code == "FT0131" and "not UTF-8" in d.message and "did you mean" not in (d.help or "")
    assert (d.span.file, d.span.line, d.span.col) == ("lat.ft", 2, 34)
    assert d.labels[1].span.file == "p.ft"  # and the `use` that read it


def test_use_of_a_file_with_a_bom(project: Path) -> None:
    (project / "bom.ft").write_bytes(b"\xef\xbb\xbfft 0.1\ntemplate z = chatml()\n")
    compile_source('ft 0.1\nuse "./bom.ft" { z }\n', "p.ft", project)


def test_use_of_a_non_ft_file_is_refused_unread(project: Path) -> None:
    (project / "secret.txt").write_text("hf_SECRETTOKEN\n")
    (d,) = diags(project, 'use "./secret.txt" { x }\n', head="ft 0.1\n")
    assert (d.code, d.message) == ("FT0131", "cannot import ./secret.txt: not a .ft file")
    assert d.span.file == "p.ft" and ".ft" in (d.help or "")
    assert "SECRET" not in d.message + (d.help or "") + "".join(lb.message for lb in d.labels)


# 8 ---- used files are named so that the name works from the working folder -------------------

def _two_files(project: Path, lib_text: str) -> Path:
    (project / "sub").mkdir()
    (project / "m2.ft").write_text('ft 0.1\nuse "./sub/lib.ft" { z }\n')
    (project / "sub" / "lib.ft").write_text(lib_text)
    return project / "sub"


def _shown_file(stderr: str) -> str:
    line = next(x for x in stderr.splitlines() if x.strip().startswith("-->"))
    return line.split("-->", 1)[1].strip().rsplit(":", 2)[0]


def test_used_file_name_resolves_from_the_working_folder(project: Path) -> None:
    sub = _two_files(project, "ft 0.1\ntemplate z = chatml(system = 3)\n")
    for cwd, main in ((sub, "../m2.ft"), (project, "m2.ft"), (project.parent, f"{project.name}/m2.ft")):
        r = run_ft("check", main, cwd=cwd, timeout=120)
        assert r.returncode != 0, r.stderr
        shown = _shown_file(r.stderr)
        assert (cwd / shown).resolve() == (sub / "lib.ft").resolve(), (cwd, shown)
    assert _shown_file(run_ft("check", "m2.ft", cwd=project).stderr) == "sub/lib.ft"
    # named as the main file is: through the folder its name starts from, not absolute
    shown = _shown_file(run_ft("check", f"{project.name}/m2.ft", cwd=project.parent).stderr)
    assert shown == f"{project.name}/sub/lib.ft"


def test_used_file_cache_does_not_go_stale_from_a_parent_folder(project: Path) -> None:
    good = "ft 0.1\ntemplate z = chatml()\n"
    sub = _two_files(project, good)
    (project / ".ft").mkdir()
    decoy = project / project.name / "sub"  # where a project-relative reading of the name points
    decoy.mkdir(parents=True)
    (decoy / "lib.ft").write_text(good)
    main = f"{project.name}/m2.ft"
    assert run_ft("check", main, cwd=project.parent).returncode == 0
    assert run_ft("check", main, cwd=project.parent).returncode == 0  # now served from the cache
    (sub / "lib.ft").write_text("ft 0.1\ntemplate z = chatml(system = 3)\n")
    r = run_ft("check", main, cwd=project.parent)
    assert r.returncode != 0 and "FT0106" in r.stderr, r.stderr


def test_used_file_cache_does_not_go_stale_from_another_folder(project: Path) -> None:
    good = "ft 0.1\ntemplate z = chatml()\n"
    sub = _two_files(project, good)
    (project / ".ft").mkdir()
    (project / "lib.ft").write_text(good)  # a decoy where a cwd-relative `lib.ft` would point
    assert run_ft("check", "../m2.ft", cwd=sub).returncode == 0
    (sub / "lib.ft").write_text("ft 0.1\ntemplate z = chatml(system = 3)\n")
    r = run_ft("check", "../m2.ft", cwd=sub)
    assert r.returncode != 0 and "FT0106" in r.stderr, r.stderr


# 9 ---- reserved words cannot name a block ----------------------------------------------------

@pytest.mark.parametrize("text, word, col", [
    ('export true {\n  model = base\n  to = "out"\n}', "true", 8),
    ("template sweep = plain()", "sweep", 10),
    ('dataset min { source = jsonl("data/tasks.jsonl") }', "min", 9),
])
def test_reserved_word_as_block_name(project: Path, text: str, word: str, col: int) -> None:
    ds = diags(project, text)
    (d,) = [d for d in ds if d.code == "FT0001"]
    assert d.message == f"`{word}` is a reserved word and cannot name a block"
    assert (d.span.line, d.span.col) == (4, col) and d.help
