"""Supervised training details on a tiny model, on CPU: chat messages with assistant-only loss,
packing with isolated sequences, truncation, curriculum order, validation with early
stopping, and checkpoints that resume only under the same node key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ftlang.stdlib import model as model_step
from ftlang.stdlib import modelio, train
from ftlang.stdlib.spec import Artifact, Call, StepError
from stepkit import Store, files
from test_stdlib_ml import TINY, TRAIN, _counts, _tasks

CHATML = {"style": "chatml", "system": "", "separator": "\n"}


def _chats(n: int) -> list[dict[str, Any]]:
    rows = []
    for r in _tasks(n, seed=5):
        rows.append({"messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": r["prompt"]},
            {"role": "assistant", "content": r["completion"]},
        ]})
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("sft"))


@pytest.fixture(scope="module")
def data(store: Store) -> dict[str, Artifact]:
    rows = _tasks(240, seed=3)
    text = [{"text": f"{r['prompt']}\n{r['completion']}"} for r in rows]
    text += [{"text": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>"}]
    return {"train": store.dataset("dataset.train", rows[:200]),
            "heldout": store.dataset("dataset.heldout", rows[200:]),
            "count": store.dataset("dataset.count", _counts(200)),
            "chat": store.dataset("dataset.chat", _chats(120)),
            "text": store.dataset("dataset.text", text)}


@pytest.fixture(scope="module")
def base(store: Store, data: dict[str, Artifact]) -> Artifact:
    art, _ = store.run(model_step.run, "model.base", {
        "path": None, "hub": None, "revision": None, "gguf": None,
        "init": Call("tiny", {**TINY, "context": 128, "data": data["text"]})})
    return art


def test_chat_messages_train_on_assistant_turns_only(store: Store, base: Artifact,
                                                     data: dict[str, Artifact]) -> None:
    tok = modelio.load_tokenizer(base)
    examples, dropped = train.chat_examples(tok, {**CHATML, "system": "Be brief."}, [_chats(1)[0]["messages"]], 128)
    assert dropped == 0
    ids, labels = examples[0]["input_ids"], examples[0]["labels"]
    learned = tok.decode([t for t, lab in zip(ids, labels) if lab != train.IGNORE])
    words = _chats(1)[0]["messages"][3]["content"]
    # Both assistant turns (with their end markers and the final EOS), nothing else.
    assert learned.replace(" ", "") == f"Hello<|im_end|>{words}<|im_end|><|endoftext|>".replace(" ", "")
    assert "Be brief." in tok.decode(ids) and "Hi" in tok.decode(ids)

    art, meta = store.run(train.run, "train.chat", {
        **TRAIN, "from": base, "data": data["chat"], "objective": "chat", "messages_field": "messages",
        "lr": 5e-3, "max_steps": 40, "max_length": 128})
    assert meta["train_loss"][-1] < meta["train_loss"][0] * 0.7, meta["train_loss"]
    assert modelio.template_of(art)["style"] == "chatml"
    with pytest.raises(StepError, match="chatml"):
        train.chat_examples(tok, {"style": "plain", "system": "", "separator": "\n"}, [], 64)


def test_packed_sequences_do_not_see_each_other(base: Artifact) -> None:
    """The loss of a packed row is the token-weighted loss of its sequences run alone."""
    import torch

    lm = modelio.load_model(base)
    tok = modelio.load_tokenizer(base)
    texts = ["Reverse: cat dog sun\nsun dog cat", "Count: fish star\n2", "Reverse: moon tree bird\nbird tree moon"]
    examples = [{"input_ids": (ids := list(tok(t)["input_ids"])), "labels": list(ids)} for t in texts]
    rows = train.pack(examples, 64, in_order=True)
    assert len(rows) == 1 and rows[0]["seq_lens"] == [len(e["input_ids"]) for e in examples]
    batch = train.make_collator(tok.pad_token_id)(rows)
    assert batch["input_ids"].shape == (1, sum(rows[0]["seq_lens"])) and "attention_mask" not in batch
    with torch.no_grad():
        packed = lm(**batch)
        total, count = 0.0, 0
        for e in examples:
            n = len(e["input_ids"]) - 1
            total += lm(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]])).loss.item() * n
            count += n
        # Logits of the last sequence equal those it gets alone: no attention across the boundary.
        alone = lm(input_ids=torch.tensor([examples[2]["input_ids"]])).logits[0]
    assert packed.loss.item() == pytest.approx(total / count, rel=1e-5)
    assert torch.allclose(packed.logits[0, -alone.shape[0]:], alone, atol=1e-5)


def test_packing_trains_in_fewer_rows(store: Store, base: Artifact, data: dict[str, Artifact]) -> None:
    _, meta = store.run(train.run, "train.packed", {
        **TRAIN, "from": base, "data": data["train"], "packing": True, "lr": 5e-3, "max_steps": 20,
        "max_length": 64, "batch_size": 2})
    assert meta["packed_rows"] < meta["examples"] / 3
    assert meta["train_loss"][-1] < meta["train_loss"][0] * 0.8, meta["train_loss"]


def test_truncation_policies(base: Artifact) -> None:
    tok = modelio.load_tokenizer(base)
    tpl = {"style": "plain", "system": "", "separator": "\n"}
    prompts, completions = ["Reverse: " + " ".join(["cat"] * 20)], ["sun dog cat"]
    start, _ = train.sft_examples(tok, tpl, prompts, completions, 16, truncation="keep_start")
    end, _ = train.sft_examples(tok, tpl, prompts, completions, 16, truncation="keep_end")
    drop, dropped = train.sft_examples(tok, tpl, prompts, completions, 16, truncation="drop")
    assert drop == [] and dropped == 1
    assert start == [] or all(lab == train.IGNORE for lab in start[0]["labels"])  # the prompt fills it
    assert len(end[0]["input_ids"]) == 16
    assert tok.decode([t for t, lab in zip(end[0]["input_ids"], end[0]["labels"]) if lab != train.IGNORE]) \
        .replace("<|endoftext|>", "").strip() == "sun dog cat"


def test_curriculum_keeps_dataset_order(store: Store, base: Artifact, data: dict[str, Artifact],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[int]] = []
    make = train.make_collator

    def recording(pad_id: int, pad_to: int | None = None) -> Any:
        collate = make(pad_id, pad_to)

        def run(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
            seen.append([ex["input_ids"][0:6] for ex in batch])
            return collate(batch)
        return run

    monkeypatch.setattr(train, "make_collator", recording)
    params = {**TRAIN, "from": base, "data": data["train"], "max_steps": 3, "batch_size": 4, "lr": 1e-3}
    store.run(train.run, "train.ordered", {**params, "shuffle": False})
    tok = modelio.load_tokenizer(base)
    rows = _tasks(240, seed=3)[:12]
    expected = [list(tok(r["prompt"] + "\n")["input_ids"][:6]) for r in rows]
    # (the data loader may fetch a batch ahead: compare the first 12 rows)
    assert [x for batch in seen for x in batch][:12] == expected
    seen.clear()
    store.run(train.run, "train.shuffled", {**params, "shuffle": True})
    assert [x for batch in seen for x in batch][:12] != expected


def test_validation_loss_and_early_stopping(store: Store, base: Artifact, data: dict[str, Artifact]) -> None:
    warm, _ = store.run(train.run, "train.warm", {**TRAIN, "from": base, "data": data["train"],
                                                  "lr": 5e-3, "max_steps": 40})
    # Training on another task makes the loss on the first one rise: patience stops it.
    _, meta = store.run(train.run, "train.stop", {
        **TRAIN, "from": warm, "data": data["count"], "lr": 2e-2, "max_steps": 300,
        "eval_data": data["heldout"], "eval_steps": 5, "patience": 2, "logging_steps": 5})
    assert meta["steps"] < 300 and len(meta["eval_loss"]) >= 3, meta
    assert meta["best_eval_loss"] == min(meta["eval_loss"])
    assert meta["eval_loss"][-1] > meta["best_eval_loss"]


def test_checkpoints_resume_only_under_the_same_key(store: Store, base: Artifact, data: dict[str, Artifact],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import TrainerCallback

    params = {**TRAIN, "from": base, "data": data["train"], "lr": 5e-3, "max_steps": 20,
              "save_steps": 5, "save_limit": 2, "logging_steps": 5}
    clean = store.ctx("train.clean", params)
    clean.key = "k-clean"
    train.run(clean)

    class Crash(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 12:
                raise RuntimeError("simulated crash")

    real = train.callbacks
    monkeypatch.setattr(train, "callbacks", lambda *a: [*real(*a), Crash()])
    first = store.ctx("train.crash", params)
    first.key = "k-crash"
    with pytest.raises(RuntimeError, match="simulated"):
        train.run(first)
    folder = store.root / "cache" / "checkpoints" / "k-crash"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-10", "checkpoint-5"]
    monkeypatch.setattr(train, "callbacks", real)
    logs: list[str] = []
    again = store.ctx("train.crash", params)
    again.key, again.log = "k-crash", logs.append
    meta = train.run(again)
    assert any("resuming from checkpoint-10" in line for line in logs)
    assert not folder.exists()  # removed after success
    assert meta["steps"] == 20 and meta["loss_steps"][0] > 10
    # The resumed run ends where the uninterrupted one did.
    assert files(again.out) == files(clean.out)
    # Another key never sees these checkpoints.
    other = store.ctx("train.other", {**params, "lr": 4e-3})
    other.key, other.log = "k-other", logs.append
    logs.clear()
    train.run(other)
    assert not any("resuming" in line for line in logs)


def test_tensorboard_logs_under_the_cache(store: Store, base: Artifact, data: dict[str, Artifact]) -> None:
    pytest.importorskip("tensorboard")
    ctx = store.ctx("train.tb", {**TRAIN, "from": base, "data": data["train"], "max_steps": 2,
                                 "report_to": ["tensorboard"], "logging_steps": 1})
    train.run(ctx)
    assert list(Path(ctx.cache / "runs" / "train.tb").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_file_trackers_log_under_the_cache_or_say_what_to_install(
        tracker: str, store: Store, base: Artifact, data: dict[str, Artifact]) -> None:
    import importlib.util

    from ftlang.stdlib.spec import StepError

    ctx = store.ctx(f"train.{tracker}", {**TRAIN, "from": base, "data": data["train"], "max_steps": 2,
                                         "report_to": [tracker], "logging_steps": 1})
    if importlib.util.find_spec(tracker) is None:
        with pytest.raises(StepError, match=f"needs the {tracker} package"):
            train.run(ctx)
        return
    import os

    saved = dict(os.environ)  # the step points the tracker at .ft/ through the environment
    try:
        train.run(ctx)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert any((ctx.cache / "runs" / f"train.{tracker}").iterdir())
