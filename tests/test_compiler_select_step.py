"""The select step (stdlib/select.py): the winner's files, byte for byte, and the same digest.

The metric itself is stubbed here (no torch); tests marked slow run the real pipeline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_ft
from ftlang.runtime.hashing import tree_digest, tree_files
from ftlang.stdlib import select
from ftlang.stdlib.spec import Artifact, StepContext


def _data(tmp: Path) -> Artifact:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp / "data"
    folder.mkdir()
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["1", "2"]}), folder / "heldout.parquet")
    return Artifact("curate.clean", "d" * 64, folder, "heldout")


def _model(tmp: Path, name: str, content: str) -> Artifact:
    folder = tmp / name
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "weights.bin").write_text(content)
    (folder / "ftlang_model.json").write_text(json.dumps({"name": name}))
    return Artifact(f"train.sft[lr={name}]", "m" * 64, folder)


@pytest.mark.parametrize("mode, scores, winner", [
    ("min", {"1e-4": 2.0, "2e-4": 1.5}, "2e-4"),
    ("max", {"1e-4": 0.5, "2e-4": 0.25}, "1e-4"),
    ("min", {"1e-4": 1.0, "2e-4": 1.0}, "1e-4"),  # a tie goes to the first point
])
def test_winner_is_copied_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
                                        scores: dict[str, float], winner: str) -> None:
    models = [_model(tmp_path, "1e-4", "first"), _model(tmp_path, "2e-4", "second")]
    monkeypatch.setattr(select, "score", lambda ctx, art, prompts, refs, device: scores[art.path.name])
    out = tmp_path / "out"
    out.mkdir()
    ctx = StepContext("select.sft", "sft", {"models": models, "data": _data(tmp_path), "metric": "loss",
                                            "mode": mode, "prompt_field": "prompt",
                                            "completion_field": "completion"}, out, tmp_path, tmp_path)
    meta = select.run(ctx)
    assert meta["selected"] == f"train.sft[lr={winner}]"
    assert tree_digest(tree_files(out)) == tree_digest(tree_files(tmp_path / winner))


def test_select_spec_is_not_a_user_block_kind() -> None:
    from ftlang.stdlib import registry

    assert select.SPEC.kind == "select" and select.SPEC.output == "model"
    assert "select" not in registry.STEPS or registry.STEPS["select"] is select.SPEC


@pytest.mark.slow
@pytest.mark.e2e
def test_sweep_and_select_run_end_to_end(tmp_path: Path) -> None:
    from conftest import ROOT

    shutil.copytree(ROOT / "examples" / "data", tmp_path / "data")
    (tmp_path / "p.ft").write_text('''ft 0.1
dataset corpus { source = jsonl("data/corpus.jsonl") }
dataset tasks { source = jsonl("data/tasks.jsonl") }
curate clean {
  sql "SELECT prompt, completion FROM tasks LIMIT 200"
  split { train = 0.8, heldout = 0.2, by = prompt }
}
model base { init = tiny(data = corpus, vocab = 128, hidden = 32, layers = 1, heads = 2) }
train sft {
  from      = base
  data      = clean.train
  method    = lora(r = 4)
  lr        = sweep [1e-3, 1e-2]
  max_steps = 2
  select    = min loss on clean.heldout
}
eval report {
  models  = [base, sft]
  data    = clean.heldout
  metrics = [loss]
}
''')
    out = run_ft("run", "p.ft", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    state = {p.stem: json.loads(p.read_text())["digest"] for p in (tmp_path / ".ft" / "state" / "p.ft").glob("*.json")}
    assert state["select.sft"] in (state["train.sft[lr=1e-3]"], state["train.sft[lr=0.01]"])
    again = run_ft("run", "p.ft", cwd=tmp_path)
    assert "nothing to do" in again.stderr
