"""SIGKILL of `ft run` during a dataset, a curate and a training step.

After each kill the cache must hold no partial artifact (every key points at a
complete object whose bytes match its digest), and a second run must finish with
exactly the artifacts of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ft_bin, run_ft

pytestmark = pytest.mark.e2e

DATA_FT = '''ft 0.1
dataset big {
  source = jsonl("data/big.jsonl")
  schema { prompt: str, completion: str }
}
curate heavy {
  sql """
    SELECT prompt, completion, md5(prompt || completion) AS h, length(prompt) AS n
    FROM big
  """
  split { train = 0.5, heldout = 0.5, by = h, seed = 1 }
}
'''

TRAIN_FT = '''ft 0.1
dataset corpus { source = jsonl("data/corpus.jsonl") }
model base {
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 256, context = 64, data = corpus)
}
train long {
  from = base
  data = corpus
  objective = clm
  max_steps = 400
  max_length = 32
  batch_size = 4
}
'''


def write_big(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i in range(rows):
            f.write(f'{{"prompt": "question number {i} about item {i % 977}", "completion": "{i * 7}"}}\n')


def write_corpus(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i in range(200):
            f.write(json.dumps({"text": f"line {i}: the quick brown fox {i % 13} jumps over {i % 7} dogs"}) + "\n")


def kill_during(proj: Path, marker: Any, delay: float = 0.0, timeout: float = 180) -> None:
    """Starts `ft run` and SIGKILLs it once `marker()` is true (the step is mid-flight)."""
    proc = subprocess.Popen([*ft_bin(), "run", "p.ft"], cwd=proj, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not marker():
            if proc.poll() is not None:
                pytest.fail("ft run finished before it could be killed: make the step slower")
            if time.monotonic() > deadline:
                pytest.fail("the step never started")
            time.sleep(0.002)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def tmp_has(proj: Path, node: str) -> Any:
    tmp = proj / ".ft" / "tmp"
    return lambda: tmp.is_dir() and any(p.name.startswith(node + "-") for p in tmp.iterdir())


def keys(proj: Path) -> dict[str, str]:
    """node -> artifact digest, from the committed key files."""
    out = {}
    for kf in (proj / ".ft" / "keys").rglob("*.json"):
        data = json.loads(kf.read_text())
        out[data["node"]] = data["digest"]
    return out


def assert_no_partial_artifact(proj: Path) -> None:
    verify = run_ft("verify", "p.ft", cwd=proj)
    assert verify.returncode == 0, verify.stdout


def reference(tmp_path: Path, text: str, make: Any) -> dict[str, str]:
    ref = tmp_path / "reference"
    make(ref)
    (ref / "p.ft").write_text(text)
    out = run_ft("run", "p.ft", cwd=ref)
    assert out.returncode == 0, out.stderr
    return keys(ref)


@pytest.mark.parametrize("node, delay", [("dataset.big", 0.05), ("curate.heavy", 0.02)])
def test_sigkill_during_data_steps(tmp_path: Path, node: str, delay: float) -> None:
    def make(root: Path) -> None:
        write_big(root / "data" / "big.jsonl", 300_000)

    expected = reference(tmp_path, DATA_FT, make)
    proj = tmp_path / "victim"
    make(proj)
    (proj / "p.ft").write_text(DATA_FT)
    kill_during(proj, tmp_has(proj, node), delay)
    assert node not in keys(proj)  # nothing of the killed step was committed
    assert_no_partial_artifact(proj)
    again = run_ft("run", "p.ft", cwd=proj)
    assert again.returncode == 0, again.stderr
    assert keys(proj) == expected
    assert list((proj / ".ft" / "tmp").iterdir()) == []  # leftovers cleaned under the lock


def test_sigkill_during_training(tmp_path: Path) -> None:
    def make(root: Path) -> None:
        write_corpus(root / "data" / "corpus.jsonl")

    expected = reference(tmp_path, TRAIN_FT, make)
    proj = tmp_path / "victim"
    make(proj)
    (proj / "p.ft").write_text(TRAIN_FT)
    trainer = proj / ".ft" / "cache"

    def training() -> bool:  # the Trainer has started writing its scratch or checkpoints
        return any(p.is_dir() for p in trainer.glob("*/train.long*")) or any(
            p.is_dir() for p in trainer.glob("checkpoints/*"))

    kill_during(proj, training, delay=0.5)
    assert "train.long" not in keys(proj) and "model.base" in keys(proj)  # killed mid-training
    assert_no_partial_artifact(proj)
    again = run_ft("run", "p.ft", cwd=proj)
    assert again.returncode == 0, again.stderr
    assert keys(proj) == expected  # bitwise the same model as an uninterrupted run


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_stop_cleanly_and_the_next_run_resumes(tmp_path: Path, sig: int, code: int) -> None:
    proj = tmp_path / "p"
    write_big(proj / "data" / "big.jsonl", 300_000)
    (proj / "p.ft").write_text(DATA_FT)
    proc = subprocess.Popen([*ft_bin(), "run", "p.ft"], cwd=proj, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    marker = tmp_has(proj, "curate.heavy")
    deadline = time.monotonic() + 120
    while not marker():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err
    runs = run_ft("runs", "p.ft", cwd=proj).stdout
    assert "interrupted" in runs, runs  # recorded in the ledger like any run
    assert "dataset.big" in keys(proj) and "curate.heavy" not in keys(proj)
    assert_no_partial_artifact(proj)
    again = run_ft("run", "p.ft", cwd=proj)
    assert again.returncode == 0
    assert "cached  dataset.big" in " ".join(again.stderr.split("\n"))
