"""Determinism (issue 4, item 11): the same .ft on the same data, in two fresh project folders,
gives bitwise identical adapter weights and metrics."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from conftest import run_ft

PIPELINE = '''\
ft 0.1

dataset tasks { source = jsonl("tasks.jsonl") }
dataset prefs { source = jsonl("prefs.jsonl") }

curate clean {
  sql """SELECT prompt, completion FROM tasks"""
  split { train = 0.8, heldout = 0.2, by = prompt, seed = 7 }
}

model base {
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 300, context = 64, data = tasks)
}

train sft {
  from      = base
  data      = clean.train
  method    = lora(r = 8, dropout = 0.1)
  lr        = 2e-2
  max_steps = 20
  packing   = true
  max_length = 64
}

train dpo {
  from      = sft
  data      = prefs
  method    = dpo(adapter = lora(r = 4))
  lr        = 1e-2
  max_steps = 5
}

eval report {
  models  = [base, sft, dpo]
  data    = clean.heldout
  metrics = [loss, exact_match]
}
'''


def _project(root: Path) -> Path:
    rng = random.Random(0)
    words = ("cat", "dog", "sun", "moon", "tree", "bird")
    tasks, prefs = [], []
    for _ in range(120):
        ws = rng.sample(words, 3)
        p, c = "Reverse: " + " ".join(ws), " ".join(reversed(ws))
        tasks.append({"prompt": p, "completion": c})
        prefs.append({"prompt": p, "chosen": c, "rejected": "no"})
    root.mkdir()
    (root / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tasks))
    (root / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prefs))
    (root / "p.ft").write_text(PIPELINE)
    return root


def _artifacts(root: Path) -> dict[str, dict[str, bytes]]:
    import ftlang

    p = ftlang.load(root / "p.ft")
    out = {}
    for node in ("train.sft", "train.dpo", "eval.report"):
        art = p.artifact(node)
        assert art is not None, node
        out[node] = {str(f.relative_to(art.path)): f.read_bytes() for f in sorted(art.path.rglob("*"))
                     if f.is_file()}
    return out


def test_two_fresh_runs_give_identical_bytes(tmp_path: Path) -> None:
    first, second = _project(tmp_path / "one"), _project(tmp_path / "two")
    for root in (first, second):
        out = run_ft("run", "p.ft", cwd=root)
        assert out.returncode == 0, out.stdout + out.stderr
    a, b = _artifacts(first), _artifacts(second)
    assert "adapter/adapter_model.safetensors" in a["train.sft"]
    assert "metrics.json" in a["eval.report"]
    for node in a:
        assert a[node].keys() == b[node].keys(), node
        for name in a[node]:
            assert a[node][name] == b[node][name], f"{node}/{name} differs between the runs"
    shutil.rmtree(second)
