"""Sweeps: cartesian products, fan-out, list references, joins, and `select`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES
from ftlang.compiler import compile_source
from ftlang.compiler.ir import RefValue
from ftlang.compiler.sweeps import format_number
from ftlang.lang.diagnostics import FtError
from ftlang.stdlib.spec import Call

HEAD = '''ft 0.1
dataset corpus { source = jsonl("data/corpus.jsonl") }
dataset tasks { source = jsonl("data/tasks.jsonl") }
curate clean {
  from = tasks
  sql "SELECT prompt, completion FROM tasks"
  split { train = 0.8, heldout = 0.2, by = prompt }
}
model base { init = tiny(data = corpus) }
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / "ok" / "data", tmp_path / "data")
    return tmp_path


def compile_(project: Path, body: str):  # noqa: ANN201
    return compile_source(HEAD + body, "p.ft", project)


def errors(project: Path, body: str) -> list[str]:
    with pytest.raises(FtError) as info:
        compile_(project, body)
    return [f"{d.code} {d.message}" for d in info.value.diagnostics]


def test_cartesian_product_and_readable_ids(project: Path) -> None:
    p = compile_(project, "train sft {\n from = base\n data = clean.train\n lr = sweep [1e-4, 2e-4]\n"
                          " method = lora(r = sweep [4, 8])\n}\n")
    ids = sorted(n for n in p.nodes if n.startswith("train."))
    assert ids == ["train.sft[lr=1e-4,r=4]", "train.sft[lr=1e-4,r=8]",
                   "train.sft[lr=2e-4,r=4]", "train.sft[lr=2e-4,r=8]"]
    node = p.nodes["train.sft[lr=2e-4,r=8]"]
    assert node.params["lr"] == 2e-4 and node.params["method"].args["r"] == 8
    assert node.params["method"].args["alpha"] is None  # untouched defaults stay defaults
    assert node.point == {"lr": "2e-4", "r": "8"}
    assert all("/" not in n for n in p.nodes)


def test_fan_out_downstream_and_list_reference_takes_every_point(project: Path) -> None:
    p = compile_(project, "train sft { from = base, data = clean.train, lr = sweep [1e-4, 2e-4] }\n"
                          "train dpo { from = sft, data = clean.train, epochs = sweep [1, 2] }\n"
                          "eval report { models = [base, sft], data = clean.heldout }\n"
                          "export out { model = dpo, to = \"out/x\" }\n")
    dpo = sorted(n for n in p.nodes if n.startswith("train.dpo"))
    assert dpo == ["train.dpo[epochs=1,sft.lr=1e-4]", "train.dpo[epochs=1,sft.lr=2e-4]",
                   "train.dpo[epochs=2,sft.lr=1e-4]", "train.dpo[epochs=2,sft.lr=2e-4]"]
    assert p.nodes["train.dpo[epochs=2,sft.lr=1e-4]"].params["from"].node == "train.sft[lr=1e-4]"
    models = [r.node for r in p.nodes["eval.report"].params["models"]]
    assert models == ["model.base", "train.sft[lr=1e-4]", "train.sft[lr=2e-4]"]
    assert len([n for n in p.nodes if n.startswith("export.out")]) == 4
    for nid in p.nodes:
        assert set(p.graph.predecessors(nid)) == {r.node for r in p.nodes[nid].refs()}


def test_points_are_joined_not_crossed(project: Path) -> None:
    """Both inputs of `pair` depend on the same sweep: they agree on its value."""
    p = compile_(project, "train sft { from = base, data = clean.train, lr = sweep [1e-4, 2e-4] }\n"
                          "train dpo { from = sft, data = clean.train }\n"
                          "eval pair { models = [dpo], data = clean.heldout }\n"
                          "train again { from = dpo, data = clean.train, seed = sweep [1, 2] }\n")
    assert len([n for n in p.nodes if n.startswith("train.again")]) == 4
    assert [r.node for r in p.nodes["eval.pair"].params["models"]] == [
        "train.dpo[sft.lr=1e-4]", "train.dpo[sft.lr=2e-4]"]


def test_select_adds_a_node_and_later_references_mean_the_winner(project: Path) -> None:
    p = compile_(project, "train sft {\n from = base\n data = clean.train\n lr = sweep [1e-4, 2e-4]\n"
                          " select = min loss on clean.heldout\n}\n"
                          "train dpo { from = sft, data = clean.train }\n"
                          "eval report {\n models = [base, sft, dpo]\n data = clean.heldout\n"
                          " assert sft.loss <= base.loss\n}\n")
    sel = p.nodes["select.sft"]
    assert sel.kind == "select" and sel.spec.run == "ftlang.stdlib.select:run"
    assert [r.node for r in sel.params["models"]] == ["train.sft[lr=1e-4]", "train.sft[lr=2e-4]"]
    assert sel.params["data"] == RefValue("curate.clean", "heldout")
    assert sel.params["metric"] == "loss" and sel.params["mode"] == "min"
    assert p.nodes["train.dpo"].params["from"].node == "select.sft"
    assert [r.node for r in p.nodes["eval.report"].params["models"]] == [
        "model.base", "select.sft", "train.dpo"]


def test_select_mistakes(project: Path) -> None:
    got = errors(project, "train sft { from = base, data = clean.train, select = min loss on clean.heldout }\n"
                          "train b { from = base, data = clean.train, lr = sweep [1e-4, 2e-4],"
                          " select = min bleu on clean.heldout }\n"
                          "train c { from = base, data = clean.train, lr = sweep [1e-4, 2e-4],"
                          " select = min loss on clean }\n")
    assert any(e.startswith("FT0121 `select` needs a sweep") for e in got)
    assert any(e.startswith("FT0121 `bleu` cannot select") for e in got)
    assert any("say which part" in e for e in got)


def test_select_the_worst_is_a_warning(project: Path) -> None:
    p = compile_(project, "train sft { from = base, data = clean.train, lr = sweep [1e-4, 2e-4],"
                          " select = max loss on clean.heldout }\n")
    assert [w.code for w in p.warnings] == ["FT0121"] and p.warnings[0].level == "warning"


def test_assert_on_a_swept_model_is_ambiguous(project: Path) -> None:
    got = errors(project, "train sft { from = base, data = clean.train, lr = sweep [1e-4, 2e-4] }\n"
                          "eval r {\n models = [base, sft]\n data = clean.heldout\n assert sft.loss < 9\n}\n")
    assert got == ["FT0118 `sft` is swept: `sft.loss` names 2 models"]


@pytest.mark.parametrize("body, message", [
    ("lr = sweep []", "FT0123 a sweep needs at least one value"),
    ("lr = sweep [1e-4, 0.0001]", "FT0123 the sweep repeats the value `1e-4`"),
    ("lr = sweep [1e-4, sweep [2e-4]]", "FT0123 `sweep` is not allowed here"),
    ("lr = sweep [1e-4, -1]", "FT0107 `lr` must be > 0, found -1"),
    ("method = sweep [lora(r = 4), lora(r = 0)]", "FT0107 `r` must be >= 1, found 0"),
])
def test_bad_sweeps(project: Path, body: str, message: str) -> None:
    got = errors(project, f"train sft {{ from = base, data = clean.train, {body} }}\n")
    assert got == [message]


def test_sweep_in_a_split_is_not_allowed(project: Path) -> None:
    got = errors(project, "curate c2 {\n from = tasks\n sql \"SELECT * FROM tasks\"\n"
                          " split { a = 0.5, b = 0.5, by = prompt, seed = sweep [1, 2] }\n}\n")
    assert got == ["FT0123 `sweep` is not allowed here"]


def test_sweep_over_calls_and_strings(project: Path) -> None:
    p = compile_(project, "train sft { from = base, data = clean.train,"
                          " method = sweep [full, lora(r = 8)] }\n"
                          "template t { style = chatml, system = sweep [\"Be brief.\", \"a/b\"] }\n")
    assert {n for n in p.nodes if n.startswith("train.")} == {
        "train.sft[method=full]", "train.sft[method=lora(r=8)]"}
    assert {n for n in p.nodes if n.startswith("template.")} == {
        "template.t[system=Be_brief.]", "template.t[system=a_b]"}
    assert p.nodes["train.sft[method=lora(r=8)]"].params["method"] == Call(
        "lora", {"r": 8, "alpha": None, "dropout": 0.05, "target_modules": "all-linear",
                 "bias": "none", "rslora": False, "dora": False, "quant": "none", "double_quant": False,
                 "modules_to_save": None})


def test_no_sweep_keeps_plain_ids(project: Path) -> None:
    p = compile_(project, "train sft { from = base, data = clean.train }\n")
    assert "train.sft" in p.nodes and p.nodes["train.sft"].point == {}


@pytest.mark.parametrize("value, text", [
    (1e-4, "1e-4"), (2e-4, "2e-4"), (5e-6, "5e-6"), (0.05, "0.05"), (0.1, "0.1"), (3e-4, "3e-4"),
    (2.0, "2"), (0.00012345, "1.2345e-4"), (1e20, "1e20"), (0.5, "0.5"), (1.5, "1.5"), (-1e-4, "-1e-4"),
])
def test_number_labels(value: float, text: str) -> None:
    assert format_number(value) == text
    assert float(text) == value


def test_runaway_fan_out_is_a_diagnostic(project: Path) -> None:
    chain = "".join(f"train t{i} {{ from = {'base' if i == 0 else f't{i - 1}'}, data = clean.train,"
                    f" seed = sweep [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] }}\n" for i in range(4))
    got = errors(project, chain)
    assert got == ["FT0123 the sweeps make more than 10000 steps"]
