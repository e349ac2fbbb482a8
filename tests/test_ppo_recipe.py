"""examples/ppo_recipe.ft, the LLaMA-Factory RLHF recipe (SFT -> reward model -> PPO), run
end to end with the real `ft` command on a tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import ROOT, run_ft


def test_ppo_recipe_runs_end_to_end(tmp_path: Path) -> None:
    shutil.copy(ROOT / "examples" / "ppo_recipe.ft", tmp_path / "ppo_recipe.ft")
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "examples" / "data" / "tasks.jsonl", tmp_path / "data" / "tasks.jsonl")
    out = run_ft("run", "ppo_recipe.ft", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    import ftlang

    p = ftlang.load(tmp_path / "ppo_recipe.ft")
    rm, ppo, sft = (p.artifact(f"train.{n}") for n in ("rm", "ppo", "sft"))
    assert dict(rm.meta)["accuracy"] >= 0.8, rm.meta
    m = dict(ppo.meta)
    # PPO against the reward model raises its score; the KL to the SFT model stays small.
    assert sum(m["reward"][-3:]) / 3 > m["reward"][0] + 0.3, m["reward"]
    assert m["kl"][0] == 0.0 or abs(m["kl"][0]) < 1e-4
    assert max(m["kl"]) < 4.0, m["kl"]
    # The policy is a LoRA adapter stacked on the SFT model; the value head is not saved.
    saved = json.loads((ppo.path / "ftlang_model.json").read_text())
    assert saved["type"] == "adapter" and saved["base"] == sft.digest
    assert not any("value" in f.name for f in ppo.path.rglob("*"))
    again = run_ft("run", "ppo_recipe.ft", cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do: 7 steps cached" in again.stderr, again.stderr
