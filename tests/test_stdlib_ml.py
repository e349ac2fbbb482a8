"""The machine-learning steps (model, train, eval, export) on a tiny model, on CPU.

Contexts are built by hand; artifacts are committed under <tmp>/objects/<digest>/ as
the runtime does, so adapters find their base by digest.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from ftlang.stdlib import evaluate, export, model, modelio, template, train
from ftlang.stdlib.spec import Artifact, Call, StepError
from stepkit import Store, files

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("cat", "dog", "sun", "moon", "tree", "bird", "fish", "star")
TINY = {"arch": "llama", "hidden": 32, "layers": 1, "heads": 2, "intermediate": None,
        "vocab": 300, "context": 64, "seed": 0}
TRAIN: dict[str, Any] = {
    "method": Call("full", {}), "objective": "sft", "template": None, "prompt_field": "prompt",
    "completion_field": "completion", "text_field": "text", "lr": None, "epochs": 1.0,
    "max_steps": -1, "batch_size": 8, "grad_accum": 1, "max_length": 32, "warmup": 0.0,
    "scheduler": "linear", "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 0,
    "logging_steps": 5}
LORA = Call("lora", {"r": 8, "alpha": None, "dropout": 0.0, "target_modules": "all-linear",
                     "bias": "none", "rslora": False, "dora": False, "modules_to_save": None})


def _tasks(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.sample(WORDS, 3)
        rows.append({"prompt": "Reverse: " + " ".join(words), "completion": " ".join(reversed(words))})
    return rows


def _counts(n: int, seed: int = 1) -> list[dict[str, str]]:
    """A second task: the LoRA learns it on top of a model tuned on the first."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.sample(WORDS, rng.randint(2, 4))
        rows.append({"prompt": "Count: " + " ".join(words), "completion": str(len(words))})
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    os.environ.setdefault("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
    return Store(tmp_path_factory.mktemp("ft"))


@pytest.fixture(scope="module")
def data(store: Store) -> dict[str, Artifact]:
    rows, counts = _tasks(240), _counts(200)
    text = [{"text": f"{r['prompt']}\n{r['completion']}"} for r in rows + counts]
    return {"train": store.dataset("dataset.train", rows[:200]),
            "heldout": store.dataset("dataset.heldout", rows[200:]),
            "count": store.dataset("dataset.count", counts),
            "text": store.dataset("dataset.text", text)}


def _tiny_params(data: Artifact, **kw: Any) -> dict[str, Any]:
    return {"path": None, "hub": None, "revision": None, "init": Call("tiny", {**TINY, **kw, "data": data})}


@pytest.fixture(scope="module")
def base(store: Store, data: dict[str, Artifact]) -> Artifact:
    art, meta = store.run(model.run, "model.base", _tiny_params(data["text"]))
    assert meta["params"] > 0
    return art


@pytest.fixture(scope="module")
def warm(store: Store, base: Artifact, data: dict[str, Artifact]) -> Artifact:
    """The base after a short full fine-tune: LoRA needs trained embeddings to move the loss."""
    art, meta = store.run(train.run, "train.warm", {
        **TRAIN, "from": base, "data": data["train"], "lr": 5e-3, "max_steps": 40})
    assert meta["steps"] == 40
    return art


@pytest.fixture(scope="module")
def lora(store: Store, warm: Artifact, data: dict[str, Artifact]) -> tuple[Artifact, dict[str, Any]]:
    return store.run(train.run, "train.sft", {
        **TRAIN, "from": warm, "data": data["count"], "method": LORA, "lr": 1e-2, "max_steps": 30})


def test_tiny_init_is_deterministic(store: Store, base: Artifact, data: dict[str, Artifact]) -> None:
    ctx = store.ctx("model.again", _tiny_params(data["text"]))
    model.run(ctx)
    assert files(ctx.out) == files(base.path)
    assert modelio.read_meta(base) == {"type": "full", "template": None}
    tok = modelio.load_tokenizer(base)
    # The chat markers are single special tokens; EOS and pad are distinct.
    for marker in ("<|im_start|>", "<|im_end|>"):
        assert tok(marker)["input_ids"] == [tok.convert_tokens_to_ids(marker)]
    # A text and its decode round-trip (the prefix space is stripped again).
    assert tok.decode(tok("Reverse: cat dog 12")["input_ids"]) == "Reverse: cat dog 12"
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<pad>"
    assert not any(str(store.root) in b.decode("utf-8", "replace") for b in files(base.path).values())


def test_tiny_rejects_bad_heads(store: Store, data: dict[str, Artifact]) -> None:
    with pytest.raises(StepError, match="divisible"):
        model.run(store.ctx("model.bad", _tiny_params(data["text"], hidden=30, heads=4)))


def test_lora_sft_lowers_the_loss(lora: tuple[Artifact, dict[str, Any]]) -> None:
    art, meta = lora
    losses = meta["train_loss"]
    assert meta["steps"] == 30 and len(losses) >= 3
    assert losses[-1] < losses[0] * 0.8, losses
    assert modelio.read_meta(art)["type"] == "adapter"
    assert (art.path / "adapter" / "adapter_config.json").is_file()
    # The Trainer's scratch folder is gone; nothing but the model went into the artifact.
    assert list((art.path.parent.parent / "cache" / "trainer").iterdir()) == []
    assert sorted(p.name for p in art.path.iterdir()) == [
        "adapter", modelio.META, "tokenizer.json", "tokenizer_config.json"]
    # peft's adapter README is kept (exports ship it), without the base's absolute folder.
    readme = (art.path / "adapter" / "README.md").read_text()
    assert "library_name: peft" in readme and str(art.path.parent) not in readme
    cfg = json.loads((art.path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] is None  # no absolute path in the artifact
    assert cfg["target_modules"] == sorted(cfg["target_modules"])  # not set order


def test_adapter_reloads_to_identical_logits(store: Store, warm: Artifact,
                                             data: dict[str, Artifact]) -> None:
    import torch

    # Trained twice from the same inputs: byte-identical artifacts...
    params = {**TRAIN, "from": warm, "data": data["train"], "method": LORA, "lr": 1e-2, "max_steps": 5}
    first, second = store.ctx("train.a", params), store.ctx("train.b", params)
    meta_first, meta_second = train.run(first), train.run(second)
    assert files(first.out) == files(second.out)
    # The second run found every row in the tokenization cache.
    assert meta_second["tokenized_rows"] == 0
    assert meta_second["train_loss"] == meta_first["train_loss"]
    art = store.commit(first)
    # ...and the reloaded adapter computes exactly what the unmerged reload computes twice,
    # and the merged form agrees to float precision.
    tok = modelio.load_tokenizer(art)
    ids = tok(["Reverse: cat dog sun\n"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a = modelio.load_model(art)(input_ids=ids).logits
        b = modelio.load_model(art)(input_ids=ids).logits
        merged = modelio.load_model(art, merged=True)(input_ids=ids).logits
    assert torch.equal(a, b)
    assert torch.allclose(a, merged, atol=1e-5)
    base_logits = modelio.load_model(warm)(input_ids=ids).logits
    assert not torch.allclose(a, base_logits)  # the adapter does something


def test_lora_stacks_on_a_lora_result(store: Store, lora: tuple[Artifact, dict[str, Any]],
                                      data: dict[str, Artifact]) -> None:
    import torch

    lower, _ = lora
    upper, meta = store.run(train.run, "train.more", {
        **TRAIN, "from": lower, "data": data["train"], "method": LORA, "lr": 1e-2, "max_steps": 3})
    assert modelio.read_meta(upper)["base"] == lower.digest
    lm = modelio.load_model(upper, merged=True)
    tok = modelio.load_tokenizer(upper)
    with torch.no_grad():
        assert torch.isfinite(lm(**tok(["Reverse: a b"], return_tensors="pt")).logits).all()


def test_chatml_template_is_recorded_and_reused(store: Store, warm: Artifact,
                                               data: dict[str, Artifact]) -> None:
    tctx = store.ctx("template.chat", {"style": "chatml", "system": "Be brief.", "separator": "\n"})
    template.run(tctx)
    chat = store.commit(tctx)
    progress: list[tuple[int, Any]] = []
    ctx = store.ctx("train.chat", {**TRAIN, "from": warm, "data": data["count"], "method": LORA,
                                   "template": chat, "max_steps": 3, "logging_steps": 1,
                                   "max_length": 64})
    ctx.progress = lambda done, total, msg="": progress.append((done, total))
    train.run(ctx)
    art = store.commit(ctx)
    assert modelio.template_of(art) == template.load(chat)
    assert progress[-1] == (3, 3)
    # eval without a template renders prompts the way the model was trained.
    _, meta = store.run(evaluate.run, "eval.chat", {
        "models": [art], "data": data["count"], "template": None, "metrics": [Call("loss", {})],
        "prompt_field": "prompt", "completion_field": "completion", "max_new_tokens": 2,
        "limit": 8, "batch_size": 4})
    assert set(meta["models"]["chat"]) == {"loss"}


def test_token_cache_tokenizes_only_new_rows(store: Store, warm: Artifact, tmp_path: Path) -> None:
    rows = _tasks(100, seed=7)
    params = {**TRAIN, "from": warm, "method": LORA, "max_steps": 1}
    seen = []
    for node, part in (("train.c1", rows), ("train.c2", rows + [{"prompt": "Reverse: x y", "completion": "y x"}])):
        ctx = store.ctx(node, {**params, "data": store.dataset(f"dataset.{node}", part)})
        ctx.cache = tmp_path  # a cache of its own: other tests filled the shared one
        seen.append(train.run(ctx)["tokenized_rows"])
    assert seen == [len({r["prompt"] for r in rows}), 1]


def test_clm_objective_chunks_text(store: Store, base: Artifact, data: dict[str, Artifact]) -> None:
    art, meta = store.run(train.run, "train.pre", {
        **TRAIN, "from": base, "data": data["text"], "objective": "clm", "max_steps": 4,
        "lr": 1e-3, "max_length": 16})
    assert meta["steps"] == 4 and meta["examples"] == meta["tokens"] // 16
    assert modelio.read_meta(art) == {"type": "full", "template": None}


def test_missing_column_is_a_step_error(store: Store, base: Artifact, data: dict[str, Artifact]) -> None:
    ctx = store.ctx("train.bad", {**TRAIN, "from": base, "data": data["train"], "prompt_field": "question"})
    with pytest.raises(StepError, match="no column 'question'") as e:
        train.run(ctx)
    assert e.value.hint and "prompt_field" in e.value.hint


def test_eval_computes_metrics(store: Store, base: Artifact, lora: tuple[Artifact, dict[str, Any]],
                               data: dict[str, Artifact]) -> None:
    sft, _ = lora
    params = {"models": [base, sft], "data": data["count"], "template": None,
              "metrics": [Call("loss", {}), Call("perplexity", {}), Call("exact_match", {"normalize": True})],
              "prompt_field": "prompt", "completion_field": "completion", "max_new_tokens": 6,
              "limit": 30, "batch_size": 8}
    art, meta = store.run(evaluate.run, "eval.report", params)
    report = json.loads((art.path / "metrics.json").read_text())
    assert report["rows"] == 30 and set(report["models"]) == {"base", "sft"}
    for scores in report["models"].values():
        assert set(scores) == {"loss", "perplexity", "exact_match"}
        assert 0 <= scores["exact_match"] <= 1
        assert scores["perplexity"] == pytest.approx(2.718281828 ** scores["loss"], rel=1e-4)
    assert report["models"]["base"]["exact_match"] == 0
    assert meta["models"] == report["models"]
    samples = [json.loads(line) for line in (art.path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 20 and set(samples[0]["generations"]) == {"base", "sft"}
    # Same inputs, same bytes (timings live only in the returned metadata).
    again = store.ctx("eval.again", params)
    evaluate.run(again)
    assert files(again.out) == files(art.path)


def test_export_loads_with_transformers(store: Store, lora: tuple[Artifact, dict[str, Any]]) -> None:
    import torch
    from ftlang.runtime.publish import publish
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sft, _ = lora
    to = store.root / "exports" / "release"
    art, meta = store.run(export.run, "export.release", {"model": sft, "merge": True, "to": to})
    assert meta["params"] > 0 and not to.exists()  # the step builds; the runtime publishes
    assert publish(art.path, to, art.digest, "export.release")
    lm = AutoModelForCausalLM.from_pretrained(to)
    tok = AutoTokenizer.from_pretrained(to)
    assert sum(p.numel() for p in lm.parameters()) == meta["params"]
    ids = tok(["Reverse: cat dog"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = modelio.load_model(sft, merged=True)(input_ids=ids).logits
        assert torch.allclose(lm(input_ids=ids).logits, expected, atol=1e-5)
    # A second export replaces the first (ftlang's own, untouched); no temp dirs are left behind.
    art2, _ = store.run(export.run, "export.release", {"model": sft, "merge": False, "to": to})
    assert publish(art2.path, to, art2.digest, "export.release")
    assert sorted(p.name for p in to.parent.iterdir()) == ["release"]
    # Unmerged: the folder is the base model, adapter/ applies the adapter on top.
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(to)
    with torch.no_grad(), modelio.quiet_peft():
        unmerged = PeftModel.from_pretrained(base, to / "adapter")(input_ids=ids).logits
    assert torch.allclose(unmerged, expected, atol=1e-5)


def test_export_refuses_to_replace_a_user_folder(store: Store, lora: tuple[Artifact, dict[str, Any]]) -> None:
    from ftlang.runtime.publish import PublishError, publish

    to = store.root / "precious"
    to.mkdir()
    (to / "notes.txt").write_text("keep me")
    art, _ = store.run(export.run, "export.bad", {"model": lora[0], "merge": True, "to": to})
    with pytest.raises(PublishError, match="non-empty"):
        publish(art.path, to, art.digest, "export.bad")
    assert (to / "notes.txt").read_text() == "keep me"


def test_hub_offline_fails_fast(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(StepError, match="unreachable") as e:
        model.run(store.ctx("model.hub", {"path": None, "hub": "Qwen/Qwen2.5-0.5B", "revision": "abc", "init": None}))
    assert time.perf_counter() - started < 5
    assert e.value.hint and "path =" in e.value.hint
    from importlib import metadata

    shipped = {x.name for x in metadata.distribution("huggingface_hub").entry_points}
    assert model.hub_cli() in shipped  # a command this huggingface_hub really installs
    assert f"({model.hub_cli()} download Qwen/Qwen2.5-0.5B" in e.value.hint, e.value.hint


def test_hub_unreachable_fails_fast(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(StepError, match="unreachable"):
        model.run(store.ctx("model.hub2", {"path": None, "hub": "org/name", "revision": None, "init": None}))
    assert time.perf_counter() - started < 5


def test_local_folder_model(store: Store, base: Artifact, data: dict[str, Artifact]) -> None:
    # A plain Hugging Face folder outside the cache, as a user would have it.
    folder = store.root / "user_models" / "tiny"
    shutil.copytree(base.path, folder)
    (folder / modelio.META).unlink()
    linked, meta = store.run(model.run, "model.local", {"path": folder, "hub": None, "revision": None, "init": None})
    assert meta["model_type"] == "llama"
    assert sorted(p.name for p in linked.path.iterdir()) == [modelio.META]  # nothing copied
    # It trains like any model, and a LoRA over it finds it through the link.
    art, _ = store.run(train.run, "train.local", {
        **TRAIN, "from": linked, "data": data["train"], "method": LORA, "max_steps": 2})
    assert modelio.load_model(art, merged=True) is not None

    with pytest.raises(StepError, match="config.json"):
        model.run(store.ctx("model.nocfg", {"path": store.root / "objects", "hub": None,
                                            "revision": None, "init": None}))


def test_model_needs_exactly_one_source(store: Store) -> None:
    with pytest.raises(StepError, match="exactly one"):
        model.run(store.ctx("model.none", {"path": None, "hub": None, "revision": None, "init": None}))
