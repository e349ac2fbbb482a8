"""Idle OpenMP threads do not spin for long (stdlib/cputhreads.py prepare_env): a step on a
machine others keep busy must not burn their cores (bench/bench_spin.py measures it)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import ft_bin
from ftlang.stdlib import cputhreads

# The metric reports what the eval step's process sees once torch is loaded.
METRIC = '''import os, sys
def spin(predictions, references, prompts):
    assert "torch" in sys.modules
    return float(os.environ.get("GOMP_SPINCOUNT", "-1"))
'''
PIPELINE = '''ft 0.1
dataset t {
  source = jsonl("t.jsonl")
}
model b {
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 300, data = t)
}
eval e {
  models  = [b]
  data    = t
  max_new_tokens = 1
  metrics = [py("m.py", "spin")]
}
'''


def test_prepare_env_sets_a_short_spin_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(var, raising=False)
    cputhreads.prepare_env()
    assert os.environ["GOMP_SPINCOUNT"] == cputhreads.SPIN_COUNT
    monkeypatch.setenv("GOMP_SPINCOUNT", "77")
    assert cputhreads.prepare_env() is False and os.environ["GOMP_SPINCOUNT"] == "77"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's policy: no spin count added
    assert cputhreads.prepare_env() is False and "GOMP_SPINCOUNT" not in os.environ


def _spin_seen(tmp_path: Path, **extra: str) -> float:
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "a"}) + "\n"
                                              for i in range(4)))
    (tmp_path / "m.py").write_text(METRIC)
    (tmp_path / "p.ft").write_text(PIPELINE)
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(NO_COLOR="1", HF_HUB_OFFLINE="1", **extra)
    done = subprocess.run([*ft_bin(), "run", "p.ft"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for line in (done.stdout + done.stderr).splitlines():  # the eval's table: "b  <value>"
        parts = line.split()
        if len(parts) == 2 and parts[0] == "b":
            return float(parts[1])
    raise AssertionError(f"no metric row in:\n{done.stdout}")


def test_a_step_runs_with_the_short_spin(tmp_path: Path) -> None:
    assert _spin_seen(tmp_path) == float(cputhreads.SPIN_COUNT)


def test_the_users_spin_count_wins(tmp_path: Path) -> None:
    assert _spin_seen(tmp_path, GOMP_SPINCOUNT="7000") == 7000.0
