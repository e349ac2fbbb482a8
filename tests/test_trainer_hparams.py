"""What the Trainer actually did with each hyperparameter, read off the Trainer itself.

A spy around `train.fit` keeps the built Trainer and records, at every optimiser step
(after clipping, before the update: transformers' `on_pre_optimizer_step`), the learning
rate in the optimiser, the gradient norm after clipping and the micro-batches since the
last step. The tests compare those with what the `.ft` attributes say, computed by hand.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from ftlang.stdlib import model as model_step
from ftlang.stdlib import modelio, train
from ftlang.stdlib.spec import Artifact, Call
from stepkit import Store
from test_stdlib_ml import LORA, TINY, TRAIN, _tasks


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("hparams"))


@pytest.fixture(scope="module")
def base(store: Store) -> Artifact:
    text = store.dataset("dataset.text", [{"text": f"{r['prompt']}\n{r['completion']}"} for r in _tasks(200)])
    art, _ = store.run(model_step.run, "model.base", {
        "path": None, "hub": None, "revision": None, "gguf": None, "init": Call("tiny", {**TINY, "data": text})})
    return art


@pytest.fixture(scope="module")
def data(store: Store) -> Artifact:
    return store.dataset("dataset.train", _tasks(120, seed=5))


class Spy:
    """Records what the Trainer did; installed by monkeypatching train.fit."""

    def __init__(self) -> None:
        self.trainer: Any = None
        self.lrs: list[float] = []
        self.clipped_norms: list[float] = []
        self.micro: list[int] = []  # micro-batches per optimiser step
        self.rows: list[int] = []  # rows in each micro-batch
        self.probe: Any = None  # logits of the trained model, in memory, before it is saved
        self.tok: Any = None
        self.tokens = 0  # non-padding tokens in the micro-batches trained on

    def fit(self, real: Any) -> Any:
        import torch
        from transformers import TrainerCallback

        spy = self

        def fit(ctx: Any, trainer: Any, folder: Any) -> Any:
            spy.trainer = trainer
            inner = trainer.training_step
            pending = [0]

            def training_step(model: Any, inputs: dict[str, Any], *a: Any, **k: Any) -> Any:
                pending[0] += 1
                spy.rows.append(int(inputs["input_ids"].shape[0]))
                mask = inputs.get("attention_mask")
                spy.tokens += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
                return inner(model, inputs, *a, **k)

            class Watch(TrainerCallback):  # type: ignore[misc]
                def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                    opt = trainer.optimizer
                    spy.lrs.append(float(opt.param_groups[0]["lr"]))
                    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
                    spy.clipped_norms.append(float(torch.linalg.vector_norm(
                        torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
                    spy.micro.append(pending[0])
                    pending[0] = 0

            trainer.training_step = training_step
            trainer.add_callback(Watch())
            out = real(ctx, trainer, folder)
            ids = spy.tok(["Reverse: cat dog sun\n", "Reverse: moon star fish\n"], return_tensors="pt")["input_ids"]
            with torch.no_grad():
                spy.probe = trainer.model.eval()(input_ids=ids).logits.clone()
            return out

        return fit


def _train(store: Store, base: Artifact, data: Artifact, monkeypatch: pytest.MonkeyPatch, name: str,
           **kw: Any) -> tuple[Spy, Artifact, dict[str, Any]]:
    spy = Spy()
    spy.tok = modelio.load_tokenizer(base)
    monkeypatch.setattr(train, "fit", spy.fit(train.fit))
    params = {**TRAIN, "from": base, "data": data, "lr": 1e-2, "logging_steps": 1, **kw}
    art, meta = store.run(train.run, f"train.{name}", params)
    return spy, art, meta


def test_gradient_accumulation_runs_the_declared_micro_batches(store: Store, base: Artifact, data: Artifact,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    spy, _, meta = _train(store, base, data, monkeypatch, "accum", batch_size=4, grad_accum=3, max_steps=5)
    assert spy.micro == [3, 3, 3, 3, 3]  # 3 micro-batches per optimiser step, 5 steps
    assert spy.rows == [4] * 15  # each of batch_size rows
    assert spy.trainer.state.global_step == 5
    # The ledger's token count is the tokens of exactly those micro-batches, padding excluded.
    assert meta["trained_tokens"] == spy.tokens and spy.tokens < 15 * 4 * TRAIN["max_length"]
    assert meta["tokens_per_second"] == pytest.approx(spy.tokens / meta["seconds"], rel=0.01)


def _linear(lr: float, warmup: int, total: int) -> list[float]:
    return [lr * s / warmup if s < warmup else lr * max(0.0, (total - s) / (total - warmup))
            for s in range(total)]


def _cosine(lr: float, warmup: int, total: int) -> list[float]:
    return [lr * s / warmup if s < warmup else
            lr * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))) for s in range(total)]


@pytest.mark.parametrize(("scheduler", "warmup", "expected"), [
    ("linear", 3, _linear(1e-2, 3, 10)),
    ("linear", 0.2, _linear(1e-2, 2, 10)),  # a ratio: ceil(0.2 * 10) = 2 warmup steps
    ("cosine", 2, _cosine(1e-2, 2, 10)),
    ("constant", 4, [1e-2 * min(1.0, s / 4) for s in range(10)]),  # constant keeps its warmup
    ("constant", 0.0, [1e-2] * 10),
])
def test_learning_rate_trace_follows_the_schedule(store: Store, base: Artifact, data: Artifact,
                                                  monkeypatch: pytest.MonkeyPatch, scheduler: str,
                                                  warmup: float, expected: list[float]) -> None:
    spy, _, _ = _train(store, base, data, monkeypatch, f"lr_{scheduler}_{warmup}", scheduler=scheduler,
                       warmup=warmup, max_steps=10, batch_size=4)
    assert spy.lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_gradients_are_clipped_to_max_grad_norm(store: Store, base: Artifact, data: Artifact,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    spy, _, _ = _train(store, base, data, monkeypatch, "clip", max_grad_norm=0.05, max_steps=6, batch_size=4)
    raw = [h["grad_norm"] for h in spy.trainer.state.log_history if "grad_norm" in h]
    assert len(raw) == 6 and min(raw) > 0.05  # the unclipped norm is above the limit every step...
    assert max(spy.clipped_norms) == pytest.approx(0.05, rel=1e-3)  # ...and what is applied is at it
    loose, _, _ = _train(store, base, data, monkeypatch, "noclip", max_grad_norm=1e6, max_steps=6, batch_size=4)
    raw_loose = [h["grad_norm"] for h in loose.trainer.state.log_history if "grad_norm" in h]
    assert loose.clipped_norms == pytest.approx(raw_loose, rel=1e-4)  # no clipping: applied = raw


def test_weight_decay_spares_norms_and_biases(store: Store, base: Artifact, data: Artifact,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    spy, _, _ = _train(store, base, data, monkeypatch, "wd", weight_decay=0.1, max_steps=2, batch_size=4)
    model = spy.trainer.model
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in spy.trainer.optimizer.param_groups}
    assert set(groups) == {0.1, 0.0}
    assert groups[0.0] and all("norm" in n or n.endswith("bias") for n in groups[0.0])
    assert all("norm" not in n and not n.endswith("bias") for n in groups[0.1])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == groups[0.0] | groups[0.1]


@pytest.mark.parametrize(("optimizer", "cls"), [("adamw", "AdamW"), ("sgd", "SGD")])
def test_the_declared_optimizer_is_the_one_that_steps(store: Store, base: Artifact, data: Artifact,
                                                      monkeypatch: pytest.MonkeyPatch, optimizer: str,
                                                      cls: str) -> None:
    spy, _, _ = _train(store, base, data, monkeypatch, f"opt_{optimizer}", optimizer=optimizer, max_steps=2,
                       batch_size=4)
    opt = spy.trainer.optimizer
    inner = getattr(opt, "optimizer", opt)  # accelerate wraps it
    assert type(inner).__name__ == cls
    assert inner.param_groups[0]["initial_lr"] == pytest.approx(1e-2)


@pytest.mark.parametrize("method", [
    Call("full", {}), LORA,
    Call("lora", {**LORA.args, "dora": True, "target_modules": ["q_proj", "v_proj"]}),
    Call("ia3", {"target_modules": None, "feedforward_modules": None}),
], ids=["full", "lora", "dora", "ia3"])
def test_the_saved_model_reloads_to_the_trained_one(store: Store, base: Artifact, data: Artifact,
                                                    monkeypatch: pytest.MonkeyPatch, method: Call) -> None:
    import torch

    spy, art, _ = _train(store, base, data, monkeypatch, f"reload_{method.name}_{method.args.get('dora')}",
                         method=method, max_steps=8, batch_size=4, lr=3e-2)
    tok = modelio.load_tokenizer(art)
    ids = tok(["Reverse: cat dog sun\n", "Reverse: moon star fish\n"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reloaded = modelio.load_model(art)(input_ids=ids).logits
        untrained = modelio.load_model(base)(input_ids=ids).logits
    assert not torch.allclose(spy.probe, untrained, atol=1e-3)  # training moved it...
    torch.testing.assert_close(reloaded, spy.probe, atol=1e-5, rtol=1e-5)  # ...and the artifact is it
