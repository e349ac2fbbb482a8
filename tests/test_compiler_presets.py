"""Presets written in .ft, local imports (with cycles), and env(...) values."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES
from ftlang.compiler import compile_source
from ftlang.compiler.ir import EnvValue, FileValue
from ftlang.lang.diagnostics import FtError, render_all
from ftlang.stdlib.spec import Call

HEAD = '''ft 0.1
dataset corpus { source = jsonl("data/corpus.jsonl") }
model base { init = tiny(data = corpus) }
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / "ok" / "data", tmp_path / "data")
    return tmp_path


def method_of(project: Path, text: str, block: str = "train.t") -> Call:
    p = compile_source(HEAD + text, "p.ft", project)
    return p.nodes[block].params["method"]


def errors(project: Path, text: str, file: str = "p.ft") -> list[str]:
    with pytest.raises(FtError) as info:
        compile_source(HEAD + text, file, project)
    return [f"{d.code} {d.message}" for d in info.value.diagnostics]


def lora(**args: object) -> Call:
    base = {"r": 16, "alpha": None, "dropout": 0.05, "target_modules": "all-linear", "bias": "none",
            "rslora": False, "dora": False, "quant": "none", "double_quant": False, "modules_to_save": None}
    return Call("lora", {**base, **args})


TRAIN = "train t { from = base, data = corpus, objective = clm, method = METHOD }\n"


def test_stdlib_preset_expands_to_its_call(project: Path) -> None:
    got = method_of(project, "use stdlib.methods { dora }\n" + TRAIN.replace("METHOD", "dora(r = 8)"))
    assert got == lora(r = 8, alpha = 16, dora = True)


def test_preset_is_the_same_value_as_the_call_it_expands_to(project: Path) -> None:
    a = method_of(project, "use stdlib.methods { dora }\n" + TRAIN.replace("METHOD", "dora()"))
    b = method_of(project, TRAIN.replace("METHOD", "lora(r = 16, alpha = 32, dropout = 0.05, dora = true)"))
    assert a == b


def test_local_preset_with_arithmetic_and_positional_args(project: Path) -> None:
    text = ("method small(r: int = 4, alpha: int = 2 * r + 1) = lora(r = r, alpha = alpha)\n"
            + TRAIN.replace("METHOD", "small(8)"))
    assert method_of(project, text) == lora(r = 8, alpha = 17)


def test_preset_calling_a_preset(project: Path) -> None:
    text = ("use stdlib.methods { dora }\nmethod tiny_dora(r: int = 2) = dora(r = r, alpha = r)\n"
            + TRAIN.replace("METHOD", "tiny_dora()"))
    assert method_of(project, text) == lora(r = 2, alpha = 2, dora = True)


def test_preset_argument_sweep(project: Path) -> None:
    p = compile_source(HEAD + "use stdlib.methods { dora }\n" + TRAIN.replace("METHOD", "dora(r = sweep [4, 8])"),
                       "p.ft", project)
    assert p.nodes["train.t[r=4]"].params["method"] == lora(r = 4, alpha = 8, dora = True)
    assert p.nodes["train.t[r=8]"].params["method"] == lora(r = 8, alpha = 16, dora = True)


def test_template_preset_in_a_definition(project: Path) -> None:
    text = 'template terse(system: str = "Be terse.") = chatml(system = system)\ntemplate t = terse()\n'
    p = compile_source(HEAD + text, "p.ft", project)
    assert p.nodes["template.t"].params == {"style": "chatml", "system": "Be terse.", "separator": "\n"}


@pytest.mark.parametrize("text, message", [
    ("method m(r: int = 4) = lora(r = r)\n" + TRAIN.replace("METHOD", 'm(r = "x")'),
     'FT0106 `r` expects an integer, found a string'),
    ("method m(r: int = 4) = lora(r = r)\n" + TRAIN.replace("METHOD", "m(q = 1)"),
     "FT0104 `m` has no parameter `q`"),
    ("method m(r: int) = lora(r = r)\n" + TRAIN.replace("METHOD", "m()"),
     "FT0105 `m` needs the argument `r`"),
    ("method m(r: int = 4) = lora(r = r)\n" + TRAIN.replace("METHOD", "m(r = 0)"),
     "FT0107 `r` must be >= 1, found 0"),
    ("method m(r: int = 0) = lora(r = r)\n", "FT0107 `r` must be >= 1, found 0"),
    ("method m(r: int = 4) = lora(rr = r)\n", "FT0104 `lora` has no argument `rr`"),
    ("method m(r: integer = 4) = lora(r = r)\n", "FT0106 unknown parameter type `integer`"),
    ("method m(r: int = 4, r: int = 2) = lora(r = r)\n", "FT0108 parameter `r` is declared twice"),
    ("method m(r: int = 4) { r = r }\n", "FT0122 a preset returns one call: write it after `=`"),
    ("widget m(r: int = 4) = lora(r = r)\n", "FT0122 `widget` is not a family presets can belong to"),
    ("method lora(r: int = 4) = lora(r = r)\n", "FT0103 `lora` is a builtin method: a preset cannot replace it"),
    ("method a(r: int = 1) = b(r = r)\nmethod b(r: int = 1) = a(r = r)\n",
     "FT0122 preset `a` calls itself: a -> b -> a"),
    ("method m(r: int = 4) = 3\n", "FT0122 a method preset returns a method call, found a number"),
    ("template t2(s: str = \"x\") = chatml(system = s)\n" + TRAIN.replace("METHOD", "t2()"),
     "FT0112 unknown method `t2`"),
    ("use stdlib.methods { doro }\n", "FT0117 `stdlib.methods` has no `doro`"),
])
def test_preset_mistakes(project: Path, text: str, message: str) -> None:
    assert message in errors(project, text)


def test_error_inside_a_preset_also_shows_the_call(project: Path) -> None:
    text = ("method m(r: int, alpha: int = r - 4) = lora(r = r, alpha = alpha)\n"
            + TRAIN.replace("METHOD", "m(r = 4)"))
    with pytest.raises(FtError) as info:
        compile_source(HEAD + text, "p.ft", project)
    out = render_all(info.value.diagnostics, {"p.ft": HEAD + text})
    assert "`alpha` must be >= 1, found 0" in out and "in this call of `m`" in out


def test_every_stdlib_preset_checks(project: Path) -> None:
    from importlib import resources

    from ftlang.lang.parser import parse

    for res in resources.files("ftlang.stdlib").iterdir():
        if res.name.endswith(".ft"):
            module = parse(res.read_text(), res.name)
            names = [i.name.name for i in module.items if hasattr(i, "name")]
            text = f"use stdlib.{res.name[:-3]} {{ {', '.join(names)} }}\n"
            compile_source(HEAD + text, "p.ft", project)


# ---- local imports ------------------------------------------------------------------------


def test_local_import_brings_blocks_and_what_they_need(project: Path) -> None:
    (project / "lib").mkdir()
    shutil.copytree(project / "data", project / "lib" / "data")
    (project / "lib" / "common.ft").write_text(
        'ft 0.1\ndataset shared { source = jsonl("data/tasks.jsonl") }\n'
        "curate clean { from = shared\n sql \"SELECT * FROM shared\" }\n"
        "method m(r: int = 2) = lora(r = r)\n")
    p = compile_source('ft 0.1\nuse "./lib/common.ft" { clean, m }\n'
                       "model b { init = tiny(data = clean) }\n"
                       "train t { from = b, data = clean, method = m() }\n", "p.ft", project)
    assert {"dataset.shared", "curate.clean", "train.t"} <= set(p.nodes)
    source = p.nodes["dataset.shared"].params["source"].args["path"]
    assert isinstance(source, FileValue) and source.abs == str(project / "lib" / "data" / "tasks.jsonl")


def test_import_cycle_is_a_diagnostic(project: Path) -> None:
    (project / "a.ft").write_text('ft 0.1\nuse "./b.ft" { y }\ntemplate x = chatml()\n')
    (project / "b.ft").write_text('ft 0.1\nuse "./a.ft" { x }\ntemplate y = chatml()\n')
    with pytest.raises(FtError) as info:
        compile_source((project / "a.ft").read_text(), "a.ft", project)
    (diag,) = info.value.diagnostics
    assert diag.code == "FT0124" and diag.message == "import cycle: a.ft -> b.ft -> a.ft"
    assert diag.span.file == "b.ft"
    assert "b.ft" in info.value.sources


def test_import_mistakes(project: Path) -> None:
    (project / "lib.ft").write_text("ft 0.1\ntemplate chat = chatml()\n")
    got = errors(project, 'use "./lbi.ft" { chat }\nuse "./lib.ft" { caht }\n')
    assert "FT0111 cannot import ./lbi.ft: no such file" in got
    assert "FT0117 `./lib.ft` has no `caht`" in got


def test_imported_name_clashing_with_a_local_one(project: Path) -> None:
    (project / "lib.ft").write_text("ft 0.1\ntemplate chat = chatml()\n")
    got = errors(project, 'use "./lib.ft" { chat }\ntemplate chat = plain()\n')
    assert got == ["FT0103 the name `chat` is defined twice"]


LIB = ('ft 0.1\ndataset corpus { source = jsonl("data/corpus.jsonl") }\n'
       "model base { init = tiny(data = corpus) }\n"
       "template chat = chatml()\n"
       "train sft { from = base, data = corpus, objective = clm }\n"
       'dataset tasks { source = jsonl("data/tasks.jsonl") }\n'
       "eval report {\n  models = [base, sft]\n  data = tasks\n  assert sft.loss < base.loss\n}\n")


def raw_errors(project: Path, text: str) -> list[str]:
    with pytest.raises(FtError) as info:
        compile_source("ft 0.1\n" + text, "p.ft", project)
    return [f"{d.code} {d.message}" for d in info.value.diagnostics]


def test_an_import_hides_what_it_was_not_asked_for(project: Path) -> None:
    (project / "lib.ft").write_text(LIB)
    got = raw_errors(project, 'use "./lib.ft" { sft }\ntrain mine { from = base, data = corpus, objective = clm }\n')
    assert got == ["FT0117 `base` is not imported", "FT0117 `corpus` is not imported"], got
    # Asked for by name, they are visible; what `sft` needs still comes along either way.
    p = compile_source('ft 0.1\nuse "./lib.ft" { sft, base, corpus }\n'
                       "train mine { from = base, data = corpus, objective = clm }\n", "p.ft", project)
    assert {"train.sft", "model.base", "dataset.corpus", "train.mine"} <= set(p.nodes)


def test_a_local_name_clashing_with_a_hidden_dependency_says_why(project: Path) -> None:
    (project / "lib.ft").write_text(LIB.replace("data = corpus, objective = clm", "data = tasks, template = chat"))
    got = raw_errors(project, 'use "./lib.ft" { sft }\ntemplate chat = plain()\n')
    assert got == ["FT0103 the name `chat` is also a block of ./lib.ft, which the imported `sft` uses"], got


def test_an_imported_assert_keeps_its_text(project: Path) -> None:
    (project / "lib.ft").write_text(LIB)
    p = compile_source('ft 0.1\nuse "./lib.ft" { report }\n', "p.ft", project)
    assert [a.text for a in p.nodes["eval.report"].asserts] == ["sft.loss < base.loss"]


def test_syntax_error_in_an_imported_file(project: Path) -> None:
    (project / "lib.ft").write_text("ft 0.1\ntemplate chat = \n")
    with pytest.raises(FtError) as info:
        compile_source(HEAD + 'use "./lib.ft" { chat }\n', "p.ft", project)
    assert info.value.diagnostics[0].span.file == "lib.ft"
    assert "lib.ft" in info.value.sources


# ---- env(...) -------------------------------------------------------------------------------


def test_env_values(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FT_TEST_HUB", "org/model")
    monkeypatch.setenv("HF_TOKEN_X", "hf_secret")
    monkeypatch.setenv("FT_TEST_DATA", "data/tasks.jsonl")
    monkeypatch.delenv("FT_TEST_UNSET", raising=False)
    p = compile_source(HEAD + 'model m { hub = env("FT_TEST_HUB"), revision = env("HF_TOKEN_X") }\n'
                       'dataset d { source = jsonl(env("FT_TEST_DATA")) }\n'
                       'train t { from = base, data = corpus, objective = clm,'
                       ' epochs = env("FT_TEST_UNSET", 3), logging_steps = env("FT_TEST_UNSET", "5") }\n'
                       'export e { model = t, to = env("FT_TEST_UNSET", "out/x") }\n', "p.ft", project)
    params = p.nodes["model.m"].params
    assert params["hub"] == EnvValue("FT_TEST_HUB", "org/model", secret=False)
    assert params["revision"] == EnvValue("HF_TOKEN_X", "hf_secret", secret=True)
    assert p.nodes["dataset.d"].params["source"].args["path"].abs == str(project / "data" / "tasks.jsonl")
    assert p.nodes["train.t"].params["epochs"] == 3.0 and p.nodes["train.t"].params["logging_steps"] == 5
    assert p.nodes["export.e"].params["to"].rel == "out/x"


def test_secret_env_values_stay_out_of_keys(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftlang.runtime.hashing import StatCache
    from ftlang.runtime.keys import components

    text = HEAD + 'model m { hub = "org/x", revision = env("FT_REV", secret = true) }\n'
    monkeypatch.setenv("FT_REV", "s3cr3t-1")
    a = components(compile_source(text, "p.ft", project).nodes["model.m"], {}, StatCache(project / "s.json"))
    monkeypatch.setenv("FT_REV", "s3cr3t-2")
    b = components(compile_source(text, "p.ft", project).nodes["model.m"], {}, StatCache(project / "s.json"))
    assert a == b and "s3cr3t" not in repr(a)


@pytest.mark.parametrize("value, message", [
    ('env("FT_TEST_UNSET")', "FT0120 environment variable `FT_TEST_UNSET` is not set"),
    ("env(FT_TEST_UNSET)", "FT0106 env(...) takes the variable name and an optional default"),
    ('env("FT_TEST_UNSET", "x", color = true)', "FT0104 env(...) has no argument `color`"),
])
def test_env_mistakes(project: Path, value: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FT_TEST_UNSET", raising=False)
    assert errors(project, f'model m {{ hub = {value}, revision = "4e20de3" }}\n') == [message]


def test_env_number_checks(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FT_LR", "fast")
    got = errors(project, 'train t { from = base, data = corpus, objective = clm, lr = env("FT_LR") }\n')
    assert got == ["FT0106 `lr` expects a number, but FT_LR = 'fast'"]
    monkeypatch.setenv("FT_LR", "-1")
    got = errors(project, 'train t { from = base, data = corpus, objective = clm, lr = env("FT_LR") }\n')
    assert got == ["FT0107 `lr` must be > 0, found -1"]


def test_stdlib_preset_without_its_use_line(project: Path) -> None:
    with pytest.raises(FtError) as info:
        compile_source(HEAD + TRAIN.replace("METHOD", "dora(r = 8)"), "p.ft", project)
    (d,) = info.value.diagnostics
    assert d.message == "`dora` is a preset in stdlib.methods, not imported"
    assert d.help == "add `use stdlib.methods { dora }` at the top"


# ---- block presets ------------------------------------------------------------------------

GATE = '''dataset tasks { source = jsonl("data/tasks.jsonl") }
train t { from = base, data = tasks, method = full, max_steps = 2 }
template qa = plain()
'''
BY_HAND = '''eval gate {
  models   = [base, t]
  data     = tasks
  template = qa
  metrics  = [loss, perplexity]
  assert t.loss <= base.loss + 0.25
}
'''


def test_block_preset_is_the_block_it_expands_to(project: Path) -> None:
    """The stdlib forgetting gate is exactly the eval block written by hand: the same params,
    the same assert (`tuned.loss` became `t.loss`), so the same node key."""
    used = compile_source(HEAD + "use stdlib.evals { forgetting }\n" + GATE
                          + "eval gate = forgetting(base = base, tuned = t, data = tasks, template = qa,"
                            " max_increase = 0.25)\n", "p.ft", project)
    hand = compile_source(HEAD + GATE + BY_HAND, "p.ft", project)
    a, b = used.nodes["eval.gate"], hand.nodes["eval.gate"]
    assert a.params == b.params and a.refs() == b.refs()
    assert [x.text for x in a.asserts] == [x.text for x in b.asserts] == ["t.loss <= base.loss + 0.25"]


def test_block_preset_defaults_and_a_local_one(project: Path) -> None:
    text = GATE + '''eval probe(m: model, d: dataset, n: int = 4) {
  models = [m]
  data = d
  template = qa
  max_new_tokens = n * 2
}
eval p1 = probe(m = t, d = tasks)
'''
    node = compile_source(HEAD + text, "p.ft", project).nodes["eval.p1"]
    assert node.params["max_new_tokens"] == 8 and node.params["models"][0].node == "train.t"


@pytest.mark.parametrize("call, message", [
    ("forgetting(base = base, tuned = t, data = tasks)", "FT0105 `forgetting` needs the argument `template`"),
    ("forgetting(base = base, tuned = t, data = tasks, template = qa, max_increse = 1)",
     "FT0104 `forgetting` has no parameter `max_increse`"),
    ("forgetting(base = base, tuned = t, data = tasks, template = qa, max_increase = \"x\")",
     "FT0106 `max_increase` expects a number, found a string"),
    ("forgetting(base = base, tuned = tasks, data = tasks, template = qa)",
     "FT0109 expected a model, but `tasks` is a dataset"),
])
def test_block_preset_mistakes(project: Path, call: str, message: str) -> None:
    got = errors(project, "use stdlib.evals { forgetting }\n" + GATE + f"eval gate = {call}\n")
    assert any(e.startswith(message) for e in got), got


def test_block_preset_of_another_kind_is_refused(project: Path) -> None:
    got = errors(project, "use stdlib.evals { forgetting }\n" + GATE
                 + "train gate = forgetting(base = base, tuned = t, data = tasks, template = qa)\n")
    assert "FT0112 `forgetting` is a eval preset, not a train" in got or \
        any("is a eval preset" in e or "is an eval preset" in e for e in got), got


def test_error_inside_a_block_preset_shows_the_body_and_the_call(project: Path) -> None:
    text = GATE + "eval probe(m: model) {\n  models = [m]\n  data = tasks\n  max_new_tokns = 3\n}\n" \
        "eval p1 = probe(m = t)\n"
    with pytest.raises(FtError) as info:
        compile_source(HEAD + text, "p.ft", project)
    out = render_all(info.value.diagnostics, {"p.ft": HEAD + text})
    assert "max_new_tokns" in out and "in this call of `probe`" in out, out
