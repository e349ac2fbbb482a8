"""`ft run --executor ray`: each node a Ray task on a local `ray.init()` instance; the same
digests as the local executor; without Ray installed, it says what to install."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from conftest import run_ft
from test_jobs import objects

pytestmark = pytest.mark.e2e

SWEEP = '''ft 0.1
dataset corpus { source = jsonl("data/corpus.jsonl") }
model base {
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 256, context = 64, data = corpus)
}
train t {
  from = base
  data = corpus
  objective = clm
  lr = sweep [1e-3, 3e-3]
  max_steps = 6
  max_length = 32
  batch_size = 4
}
'''


def sweep_project(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    with (root / "data" / "corpus.jsonl").open("w") as f:
        for i in range(120):
            f.write(json.dumps({"text": f"line {i}: the quick brown fox {i % 13} jumps over {i % 7} dogs"}) + "\n")
    (root / "p.ft").write_text(SWEEP)
    return root


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install ftlang[ray])")
def test_a_sweep_on_a_local_ray_instance_gives_the_local_executors_digests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a Ray task of 1 CPU gets 1 thread: the same reductions
    local = sweep_project(tmp_path / "local")
    on_ray = sweep_project(tmp_path / "ray")
    a = run_ft("run", "p.ft", cwd=local)
    b = run_ft("run", "p.ft", "--executor", "ray", cwd=on_ray)
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    assert "started a local Ray instance" in b.stderr
    assert objects(local) == objects(on_ray) and len(objects(local)) == 4


def test_without_ray_it_says_what_to_install(tmp_path: Path) -> None:
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    proj = sweep_project(tmp_path / "p")
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{tmp_path / 'noray'}{os.pathsep}{env_path}"
    try:
        r = run_ft("run", "p.ft", "--executor", "ray", cwd=proj)
    finally:
        os.environ["PYTHONPATH"] = env_path
    assert r.returncode == 2 and "pip install 'ftlang[ray]'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (proj / ".ft" / "objects").exists()


def test_address_without_the_ray_executor_is_a_usage_error(tmp_path: Path) -> None:
    r = run_ft("run", "p.ft", "--address", "ray://head:10001", cwd=sweep_project(tmp_path))
    assert r.returncode == 2 and "--executor ray" in r.stderr
