"""The merge block: adapters and full models combined by linear, TIES, DARE and SVD merging.
The result is an ordinary model node: evaluated, trained further and exported."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import run_ft
from ftlang.stdlib import merge
from ftlang.stdlib.spec import Call

WORDS = ("cat", "dog", "sun", "moon", "tree", "bird", "fish", "star")

PIPELINE = """\
ft 0.1

dataset reverse { source = jsonl("reverse.jsonl") }
dataset count { source = jsonl("count.jsonl") }

model base {
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 300, context = 64, data = reverse)
}

train warm {
  from      = base
  data      = reverse
  lr        = 5e-3
  max_steps = 40
}

train a {
  from      = warm
  data      = reverse
  method    = lora(r = 8, dropout = 0.0)
  lr        = 1e-2
  max_steps = 20
}

train b {
  from      = warm
  data      = count
  method    = lora(r = 8, dropout = 0.0)
  lr        = 3e-2
  max_steps = 40
}

merge lin { models = [a, b] }

merge tie {
  models  = [a, b]
  method  = ties(density = 0.5)
  weights = [0.5, 0.5]
}

merge dare {
  models = [a, b]
  method = dare_ties(density = 0.7)
  base   = warm
}

merge low {
  models = [a, b]
  method = svd(rank = 4)
}

train more {
  from      = tie
  data      = count
  method    = lora(r = 4)
  lr        = 1e-2
  max_steps = 5
}

eval report {
  models  = [warm, b, lin, tie, dare, low, more]
  data    = count
  metrics = [loss]
  assert lin.loss < warm.loss
  assert tie.loss < warm.loss
}

export release {
  model = tie
  to    = "out/merged"
}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("merge")
    rng = random.Random(1)
    rev, cnt = [], []
    for _ in range(160):
        ws = rng.sample(WORDS, 3)
        rev.append({"prompt": "Reverse: " + " ".join(ws), "completion": " ".join(reversed(ws))})
        ws = rng.sample(WORDS, rng.randint(2, 4))
        cnt.append({"prompt": "Count: " + " ".join(ws), "completion": str(len(ws))})
    (root / "reverse.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rev))
    (root / "count.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cnt))
    (root / "p.ft").write_text(PIPELINE)
    out = run_ft("run", "p.ft", cwd=root, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return root, out.stdout


def test_merged_models_evaluate_train_and_export(project: tuple[Path, str]) -> None:
    import ftlang

    root, _ = project
    p = ftlang.load(root / "p.ft")
    report = json.loads((p.artifact("eval.report").path / "metrics.json").read_text())["models"]
    assert report["b"]["loss"] < report["warm"]["loss"]
    for name in ("lin", "tie", "dare", "low"):
        meta = json.loads((p.artifact(f"merge.{name}").path / "ftlang_model.json").read_text())
        assert meta["type"] == "full"
        assert report[name]["loss"] != report["warm"]["loss"]
    # Four methods, four different models.
    digests = {p.artifact(f"merge.{n}").digest for n in ("lin", "tie", "dare", "low")}
    assert len(digests) == 4
    assert (root / "out" / "merged" / "model.safetensors").is_file()
    more = json.loads((p.artifact("train.more").path / "ftlang_model.json").read_text())
    assert more["base"] == p.artifact("merge.tie").digest


def test_merge_rules_at_compile_time(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (tmp_path / "bad.ft").write_text("""\
ft 0.1
dataset d { source = jsonl("d.jsonl") }
model base { init = tiny(data = d) }
merge m { models = [base, base], weights = [1.0], method = ties(density = 1.5) }
merge one { models = [base], method = ties() }
""")
    out = run_ft("check", "bad.ft", cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 2
    assert "1 weights for 2 models" in text and "`density` must be" in text
    assert "merging needs at least two models" in text


def test_ties_elects_signs_and_averages_agreeing_entries() -> None:
    import torch

    base = {"w": torch.zeros(4)}
    a = {"w": torch.tensor([1.0, -2.0, 0.1, 3.0])}
    b = {"w": torch.tensor([3.0, 1.0, -0.1, -1.0])}
    out = merge.combine([a, b], base, Call("ties", {"density": 1.0}), [0.5, 0.5])["w"]
    # Entry 0 agrees (+): mean 2. Entry 1: sum -0.5 elects -, only a agrees: -2. Entry 2:
    # sum 0 elects sign 0: nothing agrees -> 0. Entry 3: sum 1 elects +, only a: 3.
    assert torch.allclose(out, torch.tensor([2.0, -2.0, 0.0, 3.0]))
    trimmed = merge.combine([a, b], base, Call("ties", {"density": 0.5}), [0.5, 0.5])["w"]
    assert torch.allclose(trimmed, torch.tensor([3.0, -2.0, 0.0, 3.0]))  # a keeps -2, 3; b keeps 3, 1
    lin = merge.combine([a, b], None, Call("linear", {}), [0.5, 0.5])["w"]
    assert torch.allclose(lin, (a["w"] + b["w"]) / 2)
    d1 = merge.combine([a, b], base, Call("dare_linear", {"density": 0.5, "seed": 3}), [0.5, 0.5])["w"]
    d2 = merge.combine([a, b], base, Call("dare_linear", {"density": 0.5, "seed": 3}), [0.5, 0.5])["w"]
    assert torch.equal(d1, d2)  # seeded: the same drop every time
    m = {"w": torch.randn(8, 8)}
    low = merge.combine([m], {"w": torch.zeros(8, 8)}, Call("svd", {"rank": 2}), [1.0])["w"]
    assert torch.linalg.matrix_rank(low) == 2
