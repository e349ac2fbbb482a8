"""Preference optimisation and RL end to end through `ft run`, on a tiny model, on CPU:
SFT (LoRA) -> DPO / KTO / ORPO, and RLHF: SFT -> reward model -> RLOO with rm(...), plus
GRPO, RLOO and online DPO with a Python reward named in the .ft file (examples/methods/methods.ft). Each proves it trained:
the preference loss falls, the reward model ranks the pairs, the mean reward rises.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import run_ft

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "methods"  # the pipeline bench/methods.py measures
# The preference and RL part of it (their upstream comes along).
NODES = ("dpo", "ipo", "kto", "orpo", "rm", "rlhf", "rloo_py", "grpo", "online")
SELECT = [a for n in NODES for a in ("--select", n)]
# What each node must show: the loss falls to below `ratio` x its first value, or the mean
# reward rises by more than `gain`. tests/test_methods_table.py checks these sit well inside
# what bench/methods.py measured on the same file (not at its edge).
THRESHOLDS: dict[str, tuple[str, float]] = {
    "dpo": ("loss_ratio", 0.9), "ipo": ("loss_ratio", 0.9), "kto": ("loss_ratio", 0.9),
    "orpo": ("loss_ratio", 0.9), "rm": ("loss_ratio", 0.7),
    "rlhf": ("reward_gain", 0.3), "rloo_py": ("reward_gain", 0.05), "grpo": ("reward_gain", 0.05),
    "online": ("reward_gain", 0.05),
}


def shows(kind: str, limit: float, start: float, end: float) -> bool:
    return end < start * limit if kind == "loss_ratio" else end > start + limit


def curve(meta: dict[str, Any], kind: str) -> list[float]:
    return meta["train_loss"] if kind == "loss_ratio" else meta["reward"]


@pytest.mark.parametrize("node", list(THRESHOLDS))
def test_each_method_improves_its_objective(project: tuple[Path, str], node: str) -> None:
    kind, limit = THRESHOLDS[node]
    values = curve(_meta(project[0], f"train.{node}"), kind)
    assert len(values) >= 3 and shows(kind, limit, values[0], values[-1]), values


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("pref") / "methods"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".ft", "__pycache__"))
    out = run_ft("run", "methods.ft", *SELECT, cwd=root, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    return root, out.stdout + out.stderr


def _meta(root: Path, node: str) -> dict[str, Any]:
    import ftlang

    art = ftlang.load(root / "methods.ft").artifact(node)
    assert art is not None, node
    return dict(art.meta)


def test_dpo_uses_the_merged_sft_model_as_reference(project: tuple[Path, str]) -> None:
    root, output = project
    assert "the reference model of dpo is `sft` with its lora adapter merged" in output
    import ftlang

    p = ftlang.load(root / "methods.ft")
    dpo, sft = p.artifact("train.dpo"), p.artifact("train.sft")
    meta = json.loads((dpo.path / "ftlang_model.json").read_text())
    assert meta["type"] == "adapter" and meta["base"] == sft.digest  # stacked on the SFT adapter
    m = dict(dpo.meta)
    assert m["train_loss"][0] == pytest.approx(0.693, abs=0.01)  # log 2: policy == reference at start
    assert m["rewards_accuracies"] >= 0.8 and m["rewards_margins"] > 0
    # What trl used as the reference: the policy with its DPO adapter disabled, which is
    # exactly the merged SFT model (not the base under it).
    import torch
    from ftlang.stdlib import modelio

    tok = modelio.load_tokenizer(dpo)
    ids = tok(["Reverse: cat dog sun\n"], return_tensors="pt")["input_ids"]
    policy = modelio.load_model(dpo)
    with torch.no_grad(), policy.disable_adapter():
        reference = policy(input_ids=ids).logits
    with torch.no_grad():
        merged_sft = modelio.load_model(sft, merged=True)(input_ids=ids).logits
        warm = modelio.load_model(p.artifact("train.warm"))(input_ids=ids).logits
    assert torch.allclose(reference, merged_sft, atol=1e-5)
    assert not torch.allclose(reference, warm, atol=1e-3)


@pytest.mark.parametrize("node", ["ipo", "orpo"])
def test_preference_margins_are_positive(project: tuple[Path, str], node: str) -> None:
    assert _meta(project[0], f"train.{node}")["rewards_margins"] > 0  # chosen scored above rejected


def test_reward_model_ranks_pairs_and_rlhf_raises_the_reward(project: tuple[Path, str]) -> None:
    root = project[0]
    rm = _meta(root, "train.rm")
    assert rm["accuracy"] >= 0.9, rm
    import ftlang

    art = ftlang.load(root / "methods.ft").artifact("train.rm")
    cfg = json.loads((art.path / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForSequenceClassification"] and len(cfg["id2label"]) == 1
    # Exported with its head; transformers reads it as a classifier and it ranks a pair.
    import torch
    from ftlang.stdlib import export
    from ftlang.stdlib.spec import StepContext
    from stepkit import complete
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ctx = StepContext(node="export.rm", name="rm",
                      params=complete("export", {"model": art, "merge": True, "to": root / "out"}),
                      out=root / "rm-export-tmp", project=root, cache=root / ".ft" / "cache")
    ctx.out.mkdir()
    export.run(ctx)
    to = ctx.out  # the step's artifact folder: what the runtime publishes
    clf = AutoModelForSequenceClassification.from_pretrained(to)
    tok = AutoTokenizer.from_pretrained(to)
    good = tok(["Reverse: cat dog sun\nsun dog cat<|endoftext|>"], return_tensors="pt")
    bad = tok(["Reverse: cat dog sun\nno<|endoftext|>"], return_tensors="pt")
    with torch.no_grad():
        assert clf(**good).logits[0, 0] > clf(**bad).logits[0, 0]



def test_editing_the_reward_file_reruns_only_its_users(project: tuple[Path, str]) -> None:
    root = project[0]
    rewards = (root / "rewards.py").read_text()
    (root / "rewards.py").write_text(rewards + "\n# tweaked\n")
    plan = run_ft("plan", "methods.ft", *SELECT, cwd=root)
    assert plan.returncode == 0, plan.stderr
    runs = {line.split()[1] for line in plan.stdout.splitlines() if line.split()[:1] == ["run"]}
    assert runs == {"train.grpo", "train.online", "train.rloo_py"}, plan.stdout
    (root / "rewards.py").write_text(rewards)


def test_method_rules_at_compile_time(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (tmp_path / "bad.ft").write_text("""\
ft 0.1
dataset d { source = jsonl("d.jsonl") }
model base { init = tiny(data = d) }
train a { from = base, data = d, method = dpo(adapter = kto()) }
train b { from = base, data = d, patience = 2 }
train c { from = base, data = d, method = rloo(reward = rm(a)), objective = "clm" }
""")
    out = run_ft("check", "bad.ft", cwd=tmp_path)
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert "`adapter = kto(...)` is not a way to train weights" in text
    assert "early stopping needs validation data" in text
    assert "`objective` has no effect with method = rloo(...)" in text
    assert "is not trained with method = reward_model(...)" in text
