"""`ft gc` never removes what a run or another .ft file in the folder still uses."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ft_bin, run_ft

pytestmark = pytest.mark.e2e

ROWS = '''ft 0.1

dataset rows {{
  source = jsonl("{src}")
}}

curate short {{
  sql "SELECT * FROM rows WHERE length(text) < 40"
}}
'''


def write_rows(path: Path, start: int, n: int) -> None:
    with path.open("a") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"text": f"{path.stem} row {i}"}) + "\n")


def test_two_files_keep_their_own_state_and_gc_of_one_keeps_the_other(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_rows(tmp_path / f"{name}.jsonl", 0, 5)
        (tmp_path / f"{name}.ft").write_text(ROWS.format(src=f"{name}.jsonl"))
    assert run_ft("run", "a.ft", cwd=tmp_path).returncode == 0
    assert run_ft("run", "b.ft", cwd=tmp_path).returncode == 0
    # Same node ids, separate state: b's run does not change what a's plan says.
    assert sorted(p.name for p in (tmp_path / ".ft" / "state").iterdir()) == ["a.ft", "b.ft"]
    write_rows(tmp_path / "a.jsonl", 5, 3)
    plan = run_ft("plan", "a.ft", cwd=tmp_path).stdout
    assert "a.jsonl changed (+3 rows)" in plan and "b.jsonl" not in plan, plan

    gc = run_ft("gc", "a.ft", "--keep-runs", "0", cwd=tmp_path)
    assert gc.returncode == 0 and "b.ft" in gc.stdout, gc.stdout + gc.stderr
    again = run_ft("run", "b.ft", cwd=tmp_path)
    assert "nothing to do: 2 steps cached" in again.stderr, again.stderr

    # b's two artifacts (its dataset and its curate output: DuckDB writes curate's Parquet,
    # so even a query that keeps every row is a file of its own) go; a's stay.
    (tmp_path / "b.ft").unlink()  # a deleted file's artifacts are no longer kept, and gc says so
    gc = run_ft("gc", "a.ft", "--keep-runs", "0", cwd=tmp_path)
    assert "b.ft is gone" in gc.stderr and "removed 2 artifacts," in gc.stdout, gc.stdout + gc.stderr


TRAIN = '''ft 0.1

dataset corpus {
  source = jsonl("corpus.jsonl")
}

model base {
  init = tiny(hidden = 16, layers = 1, heads = 2, vocab = 128, context = 32, data = corpus)
}

train pre {
  from = base
  data = corpus
  objective = clm
  max_steps = 200
  max_length = 16
}
'''


def test_gc_started_during_a_run_waits_and_keeps_the_run_s_artifacts(tmp_path: Path) -> None:
    write_rows(tmp_path / "corpus.jsonl", 0, 40)
    (tmp_path / "p.ft").write_text(TRAIN)
    env = dict(os.environ, NO_COLOR="1")
    with (tmp_path / "run.log").open("w") as log:
        run = subprocess.Popen([*ft_bin(), "run", "p.ft"], cwd=tmp_path, stderr=log, env=env)
        state = tmp_path / ".ft" / "state" / "p.ft" / "dataset.corpus.json"
        deadline = time.monotonic() + 120
        while not state.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.poll() is None, "the run ended before gc could start: make it longer"
        gc = subprocess.run([*ft_bin(), "gc", "p.ft", "--keep-runs", "0"], cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=300)
        assert run.wait(timeout=300) == 0, (tmp_path / "run.log").read_text()
    assert gc.returncode == 0 and "waiting for the ft run" in gc.stderr, gc.stdout + gc.stderr
    assert "removed 0 artifacts" in gc.stdout, gc.stdout
    again = run_ft("run", "p.ft", cwd=tmp_path)
    assert "nothing to do: 3 steps cached" in again.stderr, again.stderr
