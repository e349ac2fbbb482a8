"""W&B and MLflow as their users run them (issue 11 item 6).

Real `ft run`s of a tiny training with report_to = ["mlflow", "wandb"]: without tracker
variables both stay on disk under .ft/ (W&B offline, an MLflow file store); with the user's
MLFLOW_TRACKING_URI / WANDB_PROJECT / WANDB_DIR they log there instead. Each run is named
"<node id> <run id>" and records the node id, node key and the .ft source as params, read
back from what the trackers wrote (MLflow's file store, W&B's offline .wandb records).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import ft_bin
from ftlang.stdlib import trackers

PIPELINE = '''ft 0.1

dataset corpus {
  source = jsonl("data/corpus.jsonl")
}

model base {
  init = tiny(hidden = 16, layers = 1, heads = 2, vocab = 128, context = 32, data = corpus)
}

train pre {
  from = base
  data = corpus
  objective = clm
  max_steps = 2
  batch_size = 4
  max_length = 16
  logging_steps = 1
  report_to = ["mlflow", "wandb"]
}
'''

TRACKER_ENV = ("WANDB_MODE", "WANDB_PROJECT", "WANDB_DIR", "WANDB_NAME", "WANDB_API_KEY", "MLFLOW_TRACKING_URI",
               "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


def ft(root: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], str]:
    full = {k: v for k, v in os.environ.items() if k not in TRACKER_ENV}
    full.update(NO_COLOR="1", **env)
    out = subprocess.run([*ft_bin(), "run", "p.ft", *args], cwd=root, capture_output=True, text=True,
                         timeout=600, env=full)
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = re.search(r"\(run (\S+)\)", out.stdout + out.stderr)
    assert run_id, out.stdout + out.stderr
    return out, run_id.group(1)


def mlflow_run(store: Path) -> dict[str, Any]:
    """The one run in an MLflow file store: its name and params, as MLflow wrote them."""
    import yaml

    (run,) = [d for d in store.glob("*/*") if (d / "meta.yaml").is_file()]
    meta = yaml.safe_load((run / "meta.yaml").read_text())
    params = {p.name: p.read_text() for p in (run / "params").iterdir()}
    return {"name": meta["run_name"], "params": params}


def wandb_run(folder: Path) -> dict[str, Any]:
    """The one offline W&B run under `folder`: run record and config, read from its .wandb
    file (LevelDB log framing in 32 KiB blocks after a 7-byte header; protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, buf, records = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            pos += (32768 - pos % 32768) % 32768
        elif kind == 1:
            records.append(chunk)
        elif kind in (2, 3):
            buf = (buf if kind == 3 else b"") + chunk
        elif kind == 4:
            records.append(buf + chunk)
    out: dict[str, Any] = {"config": {}}
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "run":
            out.update(name=rec.run.display_name, project=rec.run.project)
        if rec.WhichOneof("record_type") == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in rec.config.update})
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trackers")
    (root / "data").mkdir()
    (root / "data" / "corpus.jsonl").write_text(
        "".join(json.dumps({"text": f"row {i} of the corpus says hello"}) + "\n" for i in range(40)))
    (root / "p.ft").write_text(PIPELINE)
    return root


@pytest.mark.e2e
def test_without_tracker_env_both_log_under_ft(project: Path) -> None:
    _, run_id = ft(project)
    logdir = project / ".ft" / "cache" / "runs" / "train.pre"
    key = json.loads((project / ".ft" / "state" / "p.ft" / "train.pre.json").read_text())["key"]
    source = (project / "p.ft").read_text()

    ml = mlflow_run(logdir / "mlruns")
    assert ml["name"] == f"train.pre {run_id}"
    assert ml["params"]["ft.node"] == "train.pre" and ml["params"]["ft.key"] == key
    assert ml["params"]["ft.source"] == source and ml["params"]["ft.run_id"] == run_id

    wb = wandb_run(logdir)
    assert wb["name"] == f"train.pre {run_id}" and wb["project"] == "ftlang"
    assert wb["config"]["ft.node"] == "train.pre" and wb["config"]["ft.key"] == key
    assert wb["config"]["ft.source"] == source


@pytest.mark.e2e
@pytest.mark.slow  # a second training run; the default-environment run above stays in make test
def test_the_users_tracker_env_is_respected(project: Path, tmp_path: Path) -> None:
    mine = tmp_path / "my-mlruns"
    _, run_id = ft(project, "--force", "pre", MLFLOW_TRACKING_URI=mine.as_uri(), MLFLOW_ALLOW_FILE_STORE="true",
                   WANDB_MODE="offline", WANDB_PROJECT="userproj", WANDB_DIR=str(tmp_path))
    ml = mlflow_run(mine)
    assert ml["name"] == f"train.pre {run_id}" and ml["params"]["ft.node"] == "train.pre"
    wb = wandb_run(tmp_path)
    assert wb["project"] == "userproj" and wb["name"] == f"train.pre {run_id}"
    assert wb["config"]["ft.node"] == "train.pre"


@pytest.mark.parametrize("env, mode", [
    ({}, "offline"),
    ({"WANDB_PROJECT": "p"}, "online"),
    ({"WANDB_MODE": "online"}, "online"),
    ({"WANDB_MODE": "offline", "WANDB_PROJECT": "p"}, "offline"),
    ({"WANDB_MODE": "disabled"}, "disabled"),
])
def test_wandb_mode_follows_the_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                            mode: str) -> None:
    monkeypatch.setattr(trackers, "_OURS", {})  # nothing an earlier test's node set in this process
    for k in TRACKER_ENV:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert trackers.wandb_mode() == mode


def test_a_value_ftlang_set_itself_is_not_the_users(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.setattr(trackers, "_OURS", {})
    trackers._set("WANDB_PROJECT", "ftlang")  # what an earlier node of the same process left
    assert trackers.wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_PROJECT", "mine")
    assert trackers.wandb_mode() == "online"
