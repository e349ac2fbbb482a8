"""Bayesian search with Optuna: search(...) values and the `search { ... }` sub-block compile
into one ordinary train node per trial plus a `search.<name>` winner; the study is rebuilt
from the trials' committed metadata; bad input is a compile error at its line. The slow test
runs the real `ft` on a tiny task: TPE with 8 trials against an 8-point grid, then a rerun."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import run_ft
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import FtError
from ftlang.stdlib import search as S
from ftlang.stdlib.spec import Artifact, Call, StepError

SRC = """ft 0.1
dataset d { source = jsonl("d.jsonl") }
model base { init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 300, data = d) }
train sft {
  from = base
  data = d
  LINE5
  LINE6
  search { SETTINGS }
}
eval e {
  models = [sft]
  data = d
  metrics = [perplexity]
}
"""


def _compile(tmp_path: Path, line5: str = "lr = search(loguniform(1e-5, 1e-3))",
             line6: str = "method = lora(r = search(choice([8, 16, 32])))",
             settings: str = "trials = 3, objective = min loss on d") -> Any:
    (tmp_path / "d.jsonl").write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    src = SRC.replace("LINE5", line5).replace("LINE6", line6).replace("SETTINGS", settings)
    return compile_source(src, str(tmp_path / "p.ft"), tmp_path)


def test_each_trial_is_a_train_node_and_the_winner_feeds_downstream(tmp_path: Path) -> None:
    p = _compile(tmp_path)
    trials = [f"train.sft[trial={k}]" for k in range(3)]
    assert [n for n in p.nodes if n.startswith("train.")] == trials
    t2 = p.nodes[trials[2]]
    assert t2.kind == "train" and t2.point == {"trial": "2"}
    assert [r.node for r in t2.params["search"]["history"]] == trials[:2]
    assert "trials" not in t2.params["search"]  # more trials must not change the keys of these
    assert S.find(t2.params, "") == [("lr", t2.params["lr"]), ("method.r", t2.params["method"].args["r"])]
    assert [r.node for r in p.nodes["search.sft"].params["trials"]] == trials
    assert [r.node for r in p.nodes["eval.e"].params["models"]] == ["search.sft"]
    # Raising `trials` leaves the earlier trials' params (hence keys) as they were.
    more = _compile(tmp_path, settings="trials = 5, objective = min loss on d")
    assert all(more.nodes[t].params == p.nodes[t].params for t in trials)


@pytest.mark.parametrize(("line5", "line6", "settings", "code", "line"), [
    ("lr = 1e-4", "method = full", "trials = 0, objective = min loss on d", "FT0107", 9),
    ('scheduler = search(choice([linear, cosine]))', "lr = 1e-4", "trials = 2, objective = min loss on d",
     "FT0400", 7),
    ('template = search(choice(["a"]))', "lr = 1e-4", "trials = 2, objective = min loss on d", "FT0400", 7),
    ("lr = search(loguniform(1e-3, 1e-5))", "method = full", "trials = 2, objective = min loss on d",
     "FT0401", 7),
    ("weight_decay = search(loguniform(0, 0.1))", "method = full", "trials = 2, objective = min loss on d",
     "FT0401", 7),
    ("lr = search(1e-3)", "method = full", "trials = 2, objective = min loss on d", "FT0401", 7),
    ("lr = search(uniform(1e-5, 1e-3))", "method = full", "trials = 2", "FT0402", 9),
    ("lr = search(uniform(1e-5, 1e-3))", "method = full", "trials = 2, objective = max accuracy on d",
     "FT0402", 9),
    ("lr = search(uniform(1e-5, 1e-3))", "method = full",
     "trials = 2, objective = min loss on d, pruner = median", "FT0404", 9),
    ("lr = search(uniform(1e-5, 1e-3))", "epochs = sweep [1, 2]", "trials = 2, objective = min loss on d",
     "FT0403", 7),
    ("lr = 1e-4", "method = full", "trials = 2, objective = min loss on d", "FT0402", 9),
])
def test_bad_search_is_a_compile_error_at_its_line(tmp_path: Path, line5: str, line6: str, settings: str,
                                                   code: str, line: int) -> None:
    with pytest.raises(FtError) as e:
        _compile(tmp_path, line5, line6, settings)
    errors = [d for d in e.value.diagnostics if d.level == "error"]
    assert [(d.code, d.labels[0].span.line) for d in errors][:1] == [(code, line)], errors


def test_search_outside_a_block_attribute_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FtError) as e:
        _compile(tmp_path, line5="lr = 1e-4", line6='report_to = [search(choice([1, 2]))]')
    assert e.value.diagnostics[0].code == "FT0400"


def _record(node: str, params: dict[str, Any], value: float, state: str = "complete",
            intermediate: list[list[float]] | None = None) -> Artifact:
    rec = {"params": params, "value": value, "state": state, "intermediate": intermediate or []}
    return Artifact(node, "0", Path("."), None, {"search": rec})


SETTINGS = {"sampler": "tpe", "seed": 0, "startup": 2, "pruner": "none", "mode": "min", "metric": "loss"}
SPACE = {"lr": S._distribution(Call("search", {"space": "loguniform", "type": "float", "low": 1e-5,
                                               "high": 1e-1, "choices": None}))}


def _history(n: int, loss: Any) -> list[Artifact]:
    """n trials replayed as a live study would have run them, each with loss(lr)."""
    out: list[Artifact] = []
    for k in range(n):
        study = S.replay({**SETTINGS, "history": out}, SPACE)
        lr = study.ask(SPACE).params["lr"]
        out.append(_record(f"t{k}", {"lr": lr}, loss(lr)))
    return out


def test_the_study_is_rebuilt_from_the_trials_metadata() -> None:
    import math

    hist = _history(5, lambda lr: (math.log10(lr) + 2) ** 2)  # best at lr = 1e-2
    ask = S.replay({**SETTINGS, "history": hist}, SPACE).ask(SPACE).params
    again = S.replay({**SETTINGS, "history": hist}, SPACE).ask(SPACE).params
    assert ask == again  # a deterministic function of the seed and earlier results
    # TPE reads the results: after the 2 random startup trials, other losses for the same
    # values give another proposal.
    third = S.replay({**SETTINGS, "history": hist[:2]}, SPACE).ask(SPACE).params
    assert third == hist[2].meta["search"]["params"]
    flipped = [_record(a.node, a.meta["search"]["params"], -a.meta["search"]["value"]) for a in hist[:2]]
    assert S.replay({**SETTINGS, "history": flipped}, SPACE).ask(SPACE).params != third
    # A record that the replay would not have asked for is refused, not silently used.
    bad = hist[:1] + [_record("t1", {"lr": 0.5}, 1.0)]
    with pytest.raises(StepError, match="replaying t1"):
        S.replay({**SETTINGS, "history": bad}, SPACE)


def test_substitute_puts_each_value_at_its_place() -> None:
    lr = Call("search", {"space": "loguniform", "type": "float", "low": 1e-5, "high": 1e-3, "choices": None})
    r = Call("search", {"space": "choice", "type": "int", "low": None, "high": None, "choices": [8, 16]})
    p = {"lr": lr, "method": Call("lora", {"r": r, "alpha": None}), "search": {"trial": 0}}
    out = S.substitute(p, {"lr": 2e-4, "method.r": 16})
    assert out["lr"] == 2e-4 and out["method"] == Call("lora", {"r": 16, "alpha": None})
    assert out["search"] == {"trial": 0}


def _winner(metas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from stepkit import Store

    store = Store(Path(__import__("tempfile").mkdtemp()))
    arts = []
    for node, rec in metas.items():
        folder = store.root / node
        folder.mkdir(parents=True)
        (folder / "w.bin").write_text(node)
        arts.append(Artifact(node, node, folder, None, {"search": rec}))
    _, meta = store.run(S.run, "search.x", {"trials": arts, "mode": "min", "metric": "loss"})
    return meta


def test_the_winner_is_the_best_complete_trial() -> None:
    meta = _winner({"a": {"state": "complete", "value": 2.0, "params": {"lr": 1}},
                    "b": {"state": "pruned", "value": None, "params": {"lr": 2}},
                    "c": {"state": "complete", "value": 1.5, "params": {"lr": 3}}})
    assert (meta["selected"], meta["pruned"], meta["params"]) == ("c", ["b"], {"lr": 3})


def test_a_trial_worse_than_the_median_is_pruned_and_committed(tmp_path: Path) -> None:
    """Five earlier trials reported tiny validation losses at steps 2 and 4: the live trial's
    first validation loss (step 2) is above their median, so MedianPruner stops it there."""
    from ftlang.stdlib import model as model_step
    from stepkit import Store
    from test_stdlib_ml import TINY, TRAIN, WORDS

    store = Store(tmp_path)
    rows = [{"prompt": f"Say {w}", "completion": f" {w}"} for w in WORDS[:12]]
    data = store.dataset("dataset.rows", rows)
    base, _ = store.run(model_step.run, "model.base", {
        "path": None, "hub": None, "revision": None, "gguf": None, "init": Call("tiny", {**TINY, "data": data})})
    settings = {**SETTINGS, "pruner": "median", "startup": 5}
    hist: list[Artifact] = []
    for k in range(5):
        lr = S.replay({**settings, "history": hist}, SPACE).ask(SPACE).params["lr"]
        hist.append(_record(f"train.t[trial={k}]", {"lr": lr}, 0.001, intermediate=[[2, 0.001], [4, 0.001]]))
    lr = Call("search", {"space": "loguniform", "type": "float", "low": 1e-5, "high": 1e-1, "choices": None})
    art, meta = store.run(S.run_trial, "train.t[trial=5]", {
        **TRAIN, "from": base, "data": data, "eval_data": data, "eval_steps": 2, "max_steps": 8,
        "batch_size": 4, "lr": lr, "search": {**settings, "trial": 5, "history": hist, "data": data}})
    assert meta["pruned"] is True and meta["search"]["state"] == "pruned"
    assert meta["steps"] == 2 and meta["search"]["intermediate"][0][0] == 2
    assert (art.path / "ftlang.json").exists() or any(art.path.iterdir())  # a committed model
    winner = _winner({"a": {"state": "complete", "value": 9.0, "params": {}}, "b": meta["search"]})
    assert winner["selected"] == "a" and winner["pruned"] == ["b"]


@pytest.mark.slow
def test_tpe_is_no_worse_than_a_grid_and_a_rerun_trains_nothing(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import bench_search

    bench_search.write_project(tmp_path, trials=8, steps=20)
    first = run_ft("run", "search.ft", cwd=tmp_path, timeout=1800)
    assert first.returncode == 0, first.stdout + first.stderr
    run_id = re.search(r"\(run ([\w-]+)\)", first.stdout + first.stderr).group(1)
    show = run_ft("show", "search.ft", run_id, "--json", cwd=tmp_path)
    meta = {n["node"]: n.get("meta") or {} for n in json.loads(show.stdout)}
    grid, tpe = meta["select.grid"]["scores"], meta["search.tpe"]["scores"]
    assert len(grid) == 8 and len(tpe) == 8
    assert min(tpe.values()) <= min(grid.values())
    second = run_ft("run", "search.ft", cwd=tmp_path)
    assert second.returncode == 0 and "nothing to do" in second.stderr, second.stderr
    # Two more trials: only they train.
    ft = tmp_path / "search.ft"
    ft.write_text(ft.read_text().replace("trials = 8", "trials = 10"))
    third = run_ft("run", "search.ft", cwd=tmp_path, timeout=1800)
    ran = re.findall(r"^\s*run\s+(\S+)", third.stdout + third.stderr, re.M)
    assert ran == ["train.tpe[trial=8]", "train.tpe[trial=9]", "search.tpe"], third.stderr


@pytest.mark.slow
def test_method_arguments_pruning_and_partial_training_end_to_end(tmp_path: Path) -> None:
    """`ft run`: lora(r = search(choice(...)), modules_to_save = [...]) with a median pruner over a
    model trained with trainable = layers(1, 2, head = true)."""
    from safetensors.torch import load_file

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import bench_search

    bench_search.write_project(tmp_path, trials=1, steps=1)
    (tmp_path / "p.ft").write_text((Path(__file__).parent / "fixtures" / "search_lora.ft").read_text())
    out = run_ft("run", "p.ft", cwd=tmp_path, timeout=1800)
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = re.search(r"\(run ([\w-]+)\)", out.stderr).group(1)
    nodes = {n["node"]: n for n in json.loads(run_ft("show", "p.ft", run_id, "--json", cwd=tmp_path).stdout)}
    recs = [n["meta"]["search"] for nid, n in nodes.items() if nid.startswith("train.tuned[")]
    assert len(recs) == 7 and {r["params"]["method.r"] for r in recs} <= {4, 8}
    assert "pruned" in {r["state"] for r in recs}  # the median pruner stopped at least one trial
    winner = nodes["search.tuned"]["meta"]
    assert winner["selected"] not in winner["pruned"] and winner["scores"][winner["selected"]] == \
        min(winner["scores"].values())
    objects = tmp_path / ".ft" / "objects"
    assert nodes["search.tuned"]["digest"] == nodes[winner["selected"]]["digest"]
    adapter = load_file(str(objects / nodes["search.tuned"]["digest"] / "adapter" / "adapter_model.safetensors"))
    assert any(k.endswith("embed_tokens.weight") for k in adapter)  # modules_to_save
    base = load_file(str(objects / nodes["model.base"]["digest"] / "model.safetensors"))
    warm = load_file(str(objects / nodes["train.warm"]["digest"] / "model.safetensors"))
    for name, t in base.items():
        # block 1 and the head train; the head is tied to the embeddings in this tiny model
        frozen = ".layers.0." in name or name.endswith("model.norm.weight")
        assert t.equal(warm[name]) == frozen, name


def test_the_plan_says_what_is_known_of_each_trial() -> None:
    lr = Call("search", {"space": "loguniform", "type": "float", "low": 1e-5, "high": 1e-1, "choices": None})
    hist = _history(2, lambda v: v)
    params = {"lr": lr, "search": {**SETTINGS, "trial": 2, "history": hist}}
    metas = [a.meta for a in hist]
    asked = S.replay({**SETTINGS, "history": hist}, SPACE).ask(SPACE).params["lr"]
    assert S.plan_note(params, None, metas) == f"trial 2: will train with lr = {asked:.4g} (TPE's proposal)"
    assert "known when trial 1 is done" in S.plan_note(params, None, [metas[0], None])
    done = {"search": {"params": {"lr": 0.5}, "state": "pruned"}}
    assert S.plan_note(params, done) == "trial 2: lr = 0.5: pruned"
