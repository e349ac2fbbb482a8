"""Exports carry a Hugging Face model card, peft's adapter README, shards, and can push
(issue 11 item 5, issue 16 item 7).

One real `ft run` of a tiny pipeline (base -> LoRA sft -> eval -> three exports) is shared
by the card tests; the push checks run `ft` with HF_HUB_OFFLINE=1 / without a token, and
the upload itself against a monkeypatched HfApi.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import ft_bin, run_ft
from ftlang.stdlib import hub
from ftlang.stdlib.spec import Call, StepError

PIPELINE = '''ft 0.1

dataset corpus {
  source = jsonl("data/corpus.jsonl")
}

dataset tasks {
  source = jsonl("data/tasks.jsonl")
}

model base {
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 200, context = 64, data = corpus)
}

train sft {
  from = base
  data = tasks
  method = lora(r = 4)
  max_steps = 4
  batch_size = 4
  max_length = 32
}

eval report {
  models = [base, sft]
  data = tasks
  max_new_tokens = 2
}

export merged {
  model = sft
  max_shard_size = "40KB"
  to = "out/merged"
}

export unmerged {
  model = sft
  merge = false
  to = "out/unmerged"
}

export gg {
  model = sft
  format = gguf(quant = "f16")
  to = "out/gg"
}
'''


def write_project(root: Path, text: str = PIPELINE) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "corpus.jsonl").write_text(
        "".join(json.dumps({"text": f"row {i} of the corpus says hello"}) + "\n" for i in range(40)))
    (root / "data" / "tasks.jsonl").write_text(
        "".join(json.dumps({"prompt": f"Add {i} and 1", "completion": str(i + 1)}) + "\n" for i in range(24)))
    (root / "p.ft").write_text(text)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = write_project(tmp_path_factory.mktemp("card"))
    out = run_ft("run", "p.ft", cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr
    return root, out


def state(root: Path, node: str) -> dict[str, Any]:
    return json.loads((root / ".ft" / "state" / "p.ft" / f"{node}.json").read_text())


@pytest.mark.e2e
def test_card_front_matter_parses_and_holds_the_lineage(project: tuple[Path, Any]) -> None:
    from huggingface_hub import ModelCard

    root, _ = project
    card = ModelCard.load(root / "out" / "merged" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert "ftlang" in data["tags"] and "lora" in data["tags"]
    ft = data["ftlang"]
    assert ft["node"] == "export.merged" and ft["model"] == "train.sft"
    assert ft["model_digest"] == state(root, "train.sft")["digest"]
    train, base = ft["lineage"]
    assert train["node"] == "train.sft" and train["method"]["name"] == "lora"
    assert train["method"]["args"]["r"] == 4
    assert train["hyperparameters"]["max_steps"] == 4 and train["hyperparameters"]["batch_size"] == 4
    # The dataset the training read, by the digest of its content.
    assert train["datasets"] == [{"name": "dataset.tasks", "digest": state(root, "dataset.tasks")["digest"]}]
    assert base["node"] == "model.base" and base["source"]["init"].startswith("tiny(")
    assert ft["packages"]["transformers"] and ft["packages"]["peft"]
    # The eval's metrics, as the eval committed them.
    metrics = json.loads((root / ".ft" / "objects" / state(root, "eval.report")["digest"] / "metrics.json")
                         .read_text())["models"]["sft"]
    got = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert got == {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    assert {r.dataset_name for r in card.data.eval_results} == {"tasks"}
    # The body: the .ft source verbatim, limitations, package versions.
    assert (root / "p.ft").read_text().rstrip("\n") in card.text
    assert "## Limitations" in card.text and "random weights" in card.text
    assert re.search(r"- transformers \d", card.text)


@pytest.mark.e2e
def test_unmerged_export_keeps_peft_adapter_readme(project: tuple[Path, Any]) -> None:
    from huggingface_hub import ModelCard

    root, _ = project
    folder = root / "out" / "unmerged"
    peft_card = ModelCard.load(folder / "adapter" / "README.md")
    assert peft_card.data.library_name == "peft"
    # No absolute cache folder as base_model: the adapter's bytes do not depend on where the project is.
    assert peft_card.data.to_dict().get("base_model") is None
    assert str(root) not in (folder / "adapter" / "README.md").read_text()
    top = ModelCard.load(folder / "README.md")
    assert top.data.ftlang["node"] == "export.unmerged"
    assert "adapter/" in top.text


@pytest.mark.e2e
def test_max_shard_size_shards_and_loads(project: tuple[Path, Any]) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    root, _ = project
    folder = root / "out" / "merged"
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and all(s.stat().st_size <= 60_000 for s in shards)
    assert (folder / "model.safetensors.index.json").is_file()
    assert not (folder / "model.safetensors").exists()
    from ftlang.stdlib import modelio

    sharded = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    source = modelio.load_model(root / ".ft" / "objects" / state(root, "train.sft")["digest"], merged=True)
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():  # the shards hold exactly the merged weights
        assert torch.equal(sharded(ids).logits, source(ids).logits)


@pytest.mark.e2e
def test_gguf_export_folder_loads_and_has_its_card(project: tuple[Path, Any]) -> None:
    import torch
    from ftlang.stdlib import modelio
    from huggingface_hub import ModelCard

    root, _ = project
    folder = root / "out" / "gg"
    assert (folder / "model-f16.gguf").is_file() and not list(folder.glob("*.safetensors"))
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "gguf" and "gguf" in card.data.tags
    assert "model-f16.gguf" in card.text and "quantised (f16)" in card.text
    # The export is a model artifact downstream steps can load (through transformers' GGUF reader).
    back = modelio.load_model(folder)
    source = modelio.load_model(root / ".ft" / "objects" / state(root, "train.sft")["digest"], merged=True)
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        ref, got = source(ids).logits, back(ids).logits
    assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-3


def test_bad_export_attributes_are_compile_errors(tmp_path: Path) -> None:
    cases = [
        ('push = hub("not a repo")', "FT0300"),
        ('max_shard_size = "2 GB"', "FT0301"),
        ('format = gguf(quant = "q8_0")\n  merge = false', "FT0302"),
    ]
    for extra, code in cases:
        text = PIPELINE.replace('  merge = false\n  to = "out/unmerged"', f'  {extra}\n  to = "out/unmerged"')
        root = write_project(tmp_path / code, text)
        out = run_ft("check", "p.ft", cwd=root)
        assert out.returncode != 0 and code in out.stdout + out.stderr, (extra, out.stdout + out.stderr)
        assert "p.ft:" in out.stdout + out.stderr and "Traceback" not in out.stderr


PUSHING = PIPELINE.replace('  max_shard_size = "40KB"\n', '  push = hub("me/tiny", private = true)\n')


def ft_env(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    full.update(NO_COLOR="1", HF_HOME=str(root / "hf-home"), **env)
    return subprocess.run([*ft_bin(), "run", "p.ft"], cwd=root, capture_output=True, text=True,
                          timeout=300, env=full)


@pytest.mark.e2e
def test_push_offline_fails_before_anything_runs(tmp_path: Path) -> None:
    root = write_project(tmp_path, PUSHING)
    out = ft_env(root, HF_HUB_OFFLINE="1")
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "FT0300" in text and "HF_HUB_OFFLINE" in text and "p.ft:" in text
    assert "Traceback" not in text
    # Before the run: no step started, nothing was trained or committed.
    assert not re.search(r"^\s*(run|done)\s", out.stdout, re.M), out.stdout
    assert not any((root / ".ft" / "objects").glob("*"))


@pytest.mark.e2e
def test_push_without_token_fails_before_anything_runs(tmp_path: Path) -> None:
    root = write_project(tmp_path, PUSHING)
    out = ft_env(root, HF_HUB_OFFLINE="0")
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "FT0300" in text and "no token" in text and "hf auth login" in text, text
    assert not re.search(r"^\s*(run|done)\s", out.stdout, re.M), out.stdout
    assert not any((root / ".ft" / "objects").glob("*"))


class FakeApi:
    calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self, repo_id: str, **kw: Any) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kw: Any) -> Any:
        self.calls.append(("upload_folder", {**kw, "files": sorted(p.name for p in Path(kw["folder_path"]).iterdir())}))
        from huggingface_hub import CommitInfo

        return CommitInfo(commit_url=f"https://huggingface.co/{kw['repo_id']}/commit/abc", commit_message="m",
                          commit_description="", oid="abc")


def test_upload_creates_the_repo_and_uploads_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    FakeApi.calls = []
    (tmp_path / "README.md").write_text("---\nlibrary_name: transformers\n---\n")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    got = hub.upload(tmp_path, Call("hub", {"repo": "me/tiny", "private": True}), message="ftlang: export.x")
    (c1, a1), (c2, a2) = FakeApi.calls
    assert c1 == "create_repo" and a1["repo_id"] == "me/tiny" and a1["private"] is True and a1["exist_ok"] is True
    assert c2 == "upload_folder" and a2["repo_id"] == "me/tiny" and a2["commit_message"] == "ftlang: export.x"
    assert a2["files"] == ["README.md", "model.safetensors"]
    assert got == {"repo": "me/tiny", "private": True, "commit": "abc",
                   "url": "https://huggingface.co/me/tiny/commit/abc"}


def test_upload_http_error_is_a_step_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    class Refusing(FakeApi):
        def create_repo(self, repo_id: str, **kw: Any) -> str:
            response = httpx.Response(403, request=httpx.Request("POST", "https://huggingface.co/api/repos/create"))
            raise HfHubHTTPError("403 Forbidden: you cannot write to me/tiny", response=response)

    monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(StepError, match="push to me/tiny failed") as err:
        hub.upload(tmp_path, Call("hub", {"repo": "me/tiny", "private": False}), message="m")
    assert "write token" in (err.value.hint or "")


@pytest.mark.e2e
def test_export_with_push_uploads_its_folder_with_the_card(project: tuple[Path, Any], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """export.run itself (on the e2e project's trained adapter) pushes what it built."""
    import huggingface_hub
    from ftlang.stdlib import export
    from ftlang.stdlib.spec import Artifact, StepContext
    from stepkit import complete

    root, _ = project
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    FakeApi.calls = []
    st = state(root, "train.sft")
    model = Artifact("train.sft", st["digest"], root / ".ft" / "objects" / st["digest"])
    params = complete("export", {"model": model, "to": tmp_path / "unused",
                                 "push": Call("hub", {"repo": "me/tiny", "private": True}, "upload")})
    ctx = StepContext(node="export.pushed", name="pushed", params=params, out=tmp_path / "out",
                      project=root, cache=root / ".ft" / "cache", key="k" * 64)
    ctx.out.mkdir()
    meta = export.run(ctx)
    (_, created), (_, uploaded) = FakeApi.calls
    assert created["repo_id"] == "me/tiny" and created["private"] is True
    assert uploaded["folder_path"] == str(ctx.out)
    assert {"README.md", "model.safetensors", "config.json", "tokenizer.json"} <= set(uploaded["files"])
    assert "train.sft" in uploaded["commit_message"]
    assert meta["pushed"]["repo"] == "me/tiny" and meta["pushed"]["commit"] == "abc"
