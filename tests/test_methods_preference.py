"""Preference optimisation and RL end to end through `ft run`, on a tiny model, on CPU:
SFT (LoRA) -> DPO / KTO / ORPO, and RLHF: SFT -> reward model -> RLOO with rm(...), plus
GRPO and online DPO with a Python reward named in the .ft file. Each proves it trained:
the preference loss falls, the reward model ranks the pairs, the mean reward rises.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import run_ft

WORDS = ("cat", "dog", "sun", "moon", "tree", "bird", "fish", "star")
BAD = ("no", "I do not know", "cat cat cat")

PIPELINE = """\
ft 0.1

dataset tasks { source = jsonl("tasks.jsonl") }
dataset prefs { source = jsonl("prefs.jsonl") }
dataset marks { source = jsonl("marks.jsonl") }
dataset prompts { source = jsonl("prompts.jsonl") }

model base {
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 300, context = 64, data = tasks)
}

train warm {
  from       = base
  data       = tasks
  lr         = 5e-3
  max_steps  = 40
  max_length = 32
}

train sft {
  from      = warm
  data      = tasks
  method    = lora(r = 8, dropout = 0.0)
  lr        = 1e-2
  max_steps = 20
}

train dpo {
  from      = sft
  data      = prefs
  method    = dpo(beta = 0.1, adapter = lora(r = 8, dropout = 0.0))
  lr        = 2e-2
  max_steps = 30
}

train ipo {
  from      = sft
  data      = prefs
  method    = dpo(beta = 0.1, loss = "ipo")
  lr        = 2e-3
  max_steps = 30
}

train kto {
  from      = sft
  data      = marks
  method    = kto(beta = 0.1)
  lr        = 2e-3
  max_steps = 30
}

train orpo {
  from      = sft
  data      = prefs
  method    = orpo(beta = 0.1)
  lr        = 2e-3
  max_steps = 30
}

train rm {
  from      = sft
  data      = prefs
  method    = reward_model()
  lr        = 2e-3
  max_steps = 30
}

train rlhf {
  from      = sft
  data      = prompts
  method    = rloo(reward = rm(rm), max_new_tokens = 6)
  lr        = 3e-3
  max_steps = 30
}

train grpo {
  from      = sft
  data      = prompts
  method    = grpo(reward = py("rewards.py", "cats"), max_new_tokens = 6)
  lr        = 3e-3
  max_steps = 30
}

train online {
  from      = sft
  data      = prompts
  method    = online_dpo(reward = py("rewards.py", "cats"), max_new_tokens = 6)
  lr        = 3e-3
  max_steps = 30
}
"""

REWARDS = '''\
def cats(prompts, completions, completion, **columns):
    """Share of the word "cat" in a completion; `completion` is the data's reference column."""
    assert len(prompts) == len(completions) == len(completion)
    assert all(p.startswith("Reverse: ") for p in prompts)  # prompts as written, untemplated
    return [sum(w == "cat" for w in c.split()) / max(len(c.split()), 1) for c in completions]
'''


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("pref")
    rng = random.Random(3)
    tasks, prefs, marks = [], [], []
    for i in range(200):
        ws = rng.sample(WORDS, 3)
        p, c = "Reverse: " + " ".join(ws), " ".join(reversed(ws))
        bad = rng.choice(BAD)
        tasks.append({"prompt": p, "completion": c})
        # `completion` rides along until the compiler's contracts know reward_model's columns.
        prefs.append({"prompt": p, "chosen": c, "rejected": bad, "completion": c})
        marks.append({"prompt": p, "completion": c if i % 2 else bad, "label": bool(i % 2)})
    _write(root / "tasks.jsonl", tasks)
    _write(root / "prefs.jsonl", prefs)
    _write(root / "marks.jsonl", marks)
    _write(root / "prompts.jsonl", tasks[:48])
    (root / "rewards.py").write_text(REWARDS)
    (root / "p.ft").write_text(PIPELINE)
    out = run_ft("run", "p.ft", cwd=root, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    return root, out.stdout + out.stderr


def _meta(root: Path, node: str) -> dict[str, Any]:
    import ftlang

    art = ftlang.load(root / "p.ft").artifact(node)
    assert art is not None, node
    return dict(art.meta)


def test_dpo_uses_the_merged_sft_model_as_reference(project: tuple[Path, str]) -> None:
    root, output = project
    assert "the reference model of dpo is `sft` with its lora adapter merged" in output
    import ftlang

    p = ftlang.load(root / "p.ft")
    dpo, sft = p.artifact("train.dpo"), p.artifact("train.sft")
    meta = json.loads((dpo.path / "ftlang_model.json").read_text())
    assert meta["type"] == "adapter" and meta["base"] == sft.digest  # stacked on the SFT adapter
    m = dict(dpo.meta)
    assert m["train_loss"][-1] < 0.6 < m["train_loss"][0] + 0.01, m["train_loss"]
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


@pytest.mark.parametrize("node", ["ipo", "kto", "orpo"])
def test_preference_losses_fall(project: tuple[Path, str], node: str) -> None:
    m = _meta(project[0], f"train.{node}")
    assert m["train_loss"][-1] < m["train_loss"][0] * 0.9, m["train_loss"]
    assert m.get("rewards_margins", 1.0) > 0


def test_reward_model_ranks_pairs_and_rlhf_raises_the_reward(project: tuple[Path, str]) -> None:
    root = project[0]
    rm = _meta(root, "train.rm")
    assert rm["train_loss"][-1] < rm["train_loss"][0] * 0.7 and rm["accuracy"] >= 0.9, rm
    import ftlang

    art = ftlang.load(root / "p.ft").artifact("train.rm")
    cfg = json.loads((art.path / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForSequenceClassification"] and len(cfg["id2label"]) == 1
    rl = _meta(root, "train.rlhf")
    assert rl["reward"][-1] > rl["reward"][0], rl["reward"]
    # Exported with its head; transformers reads it as a classifier and it ranks a pair.
    import torch
    from ftlang.stdlib import export
    from ftlang.stdlib.spec import StepContext
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ctx = StepContext(node="export.rm", name="rm", params={"model": art, "merge": True, "to": root / "out"},
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


@pytest.mark.parametrize("node", ["grpo", "online"])
def test_python_reward_rises(project: tuple[Path, str], node: str) -> None:
    m = _meta(project[0], f"train.{node}")
    assert len(m["reward"]) >= 3 and m["reward"][-1] > m["reward"][0] + 0.05, m["reward"]


def test_editing_the_reward_file_reruns_only_its_users(project: tuple[Path, str]) -> None:
    root = project[0]
    (root / "rewards.py").write_text(REWARDS + "\n# tweaked\n")
    plan = run_ft("plan", "p.ft", cwd=root)
    assert plan.returncode == 0, plan.stderr
    runs = {line.split()[1] for line in plan.stdout.splitlines() if line.split()[:1] == ["run"]}
    assert runs == {"train.grpo", "train.online"}, plan.stdout
    (root / "rewards.py").write_text(REWARDS)


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
