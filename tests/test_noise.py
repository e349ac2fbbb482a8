"""Library noise never reaches the screen unless -v (issue 11 item 7).

Each case is triggered for real through the `ft` command: a QLoRA import (bitsandbytes'
"Failed to load CPU gemm_4bit_forward"), a reward model built on a causal LM
(transformers' "score.weight | MISSING" load report), W&B's own terminal lines, and a
resumed tied model ("missing keys ... lm_head.weight"). Each test also runs the case
with -v and sees the noise there, so a case that stops triggering fails instead of
passing silently (the QLoRA warning exists only on a CPU with AVX512-BF16: elsewhere
that one case is checked quiet only).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ft_bin

pytestmark = pytest.mark.e2e

PIPELINE = '''ft 0.1

dataset corpus {
  source = jsonl("data/corpus.jsonl")
}

dataset tasks {
  source = jsonl("data/tasks.jsonl")
}

dataset pairs {
  source = jsonl("data/pairs.jsonl")
}

model base {
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 200, context = 64, data = corpus)
}

train q {
  from = base
  data = tasks
  method = lora(r = 4, quant = "nf4")
  max_steps = 1
  batch_size = 4
  max_length = 32
}

train rm {
  from = base
  data = pairs
  method = reward_model()
  max_steps = 1
  batch_size = 4
  max_length = 32
}

train logged {
  from = base
  data = corpus
  objective = clm
  max_steps = 1
  batch_size = 4
  max_length = 16
  report_to = ["wandb"]
}
'''

RESUMING = '''ft 0.1

dataset corpus {
  source = jsonl("data/corpus.jsonl")
}

model base {
  init = tiny(hidden = 16, layers = 1, heads = 2, vocab = 128, context = 32, data = corpus)
}

train long {
  from = base
  data = corpus
  objective = clm
  max_steps = 300
  save_steps = 5
  batch_size = 2
  max_length = 16
}
'''

NOISE = {
    "qlora": "gemm_4bit_forward",
    "reward": "score.weight",
    "wandb": "wandb:",
}


def project(root: Path, text: str) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "corpus.jsonl").write_text(
        "".join(json.dumps({"text": f"row {i} of the corpus says hello"}) + "\n" for i in range(40)))
    (root / "data" / "tasks.jsonl").write_text(
        "".join(json.dumps({"prompt": f"Add {i} and 1", "completion": str(i + 1)}) + "\n" for i in range(24)))
    (root / "data" / "pairs.jsonl").write_text("".join(json.dumps(
        {"prompt": f"Add {i} and 1", "chosen": str(i + 1), "rejected": str(i + 7)}) + "\n" for i in range(24)))
    (root / "p.ft").write_text(text)
    return root


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    out.update(NO_COLOR="1")
    return out


def ft(root: Path, *args: str) -> str:
    out = subprocess.run([*ft_bin(), "run", "p.ft", *args], cwd=root, capture_output=True, text=True,
                         timeout=600, env=env())
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def _bitsandbytes_warns_here() -> bool:
    """bitsandbytes 0.50.2 warns about gemm_4bit_forward only on a CPU with AVX512-BF16
    (backends/cpu/ops.py): on another CPU the qlora case has no noise to hide."""
    code = "import bitsandbytes.functional as f; print(bool(f.has_avx512bf16()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return out.stdout.strip().endswith("True")


def test_import_load_and_tracker_noise_is_hidden_without_verbose(tmp_path: Path) -> None:
    root = project(tmp_path, PIPELINE)
    quiet = ft(root)
    loud = ft(root, "--force", "q", "--force", "rm", "--force", "logged", "-v")
    triggered = {case: text for case, text in NOISE.items()
                 if case != "qlora" or _bitsandbytes_warns_here()}
    for case, text in NOISE.items():
        assert text not in quiet, (case, quiet)
    for case, text in triggered.items():
        assert text in loud, (case, loud)  # the case really triggers: -v shows it


def _run_until_checkpoint(root: Path, args: tuple[str, ...], after: int) -> str:
    """Starts `ft run`, stops it (SIGTERM, as a user's Ctrl-C) once checkpoint-`after` exists."""
    proc = subprocess.Popen([*ft_bin(), "run", "p.ft", *args], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env())
    deadline = time.monotonic() + 500
    while time.monotonic() < deadline and proc.poll() is None:
        if list((root / ".ft" / "cache" / "checkpoints").glob(f"*/checkpoint-{after}/trainer_state.json")):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out  # stopped mid-training, its checkpoints kept
    return out


@pytest.mark.slow
def test_resume_of_a_tied_model_is_quiet_without_verbose(tmp_path: Path) -> None:
    root = project(tmp_path, RESUMING)
    _run_until_checkpoint(root, (), after=5)
    loud = _run_until_checkpoint(root, ("-v",), after=10)  # resumes from checkpoint-5
    assert "resuming from checkpoint-5" in loud
    assert "lm_head.weight" in loud, loud  # the tied head is "missing" from the checkpoint
    quiet = ft(root)  # resumes from checkpoint-10 and finishes
    assert "lm_head.weight" not in quiet and "missing keys" not in quiet, quiet
