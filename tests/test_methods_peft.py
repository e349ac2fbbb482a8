"""Parameter-efficient methods on a tiny model, on CPU: each trains (the loss falls), saves and
reloads to identical logits. QLoRA's gradients are checked against a dequantised reference.

Steps run in-process with hand-built contexts (see test_stdlib_ml.Store).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from ftlang.stdlib import model as model_step
from ftlang.stdlib import modelio, train
from ftlang.stdlib.spec import Artifact, Call, StepError
from stepkit import Store
from test_stdlib_ml import LORA, TINY, TRAIN, _counts, _tasks


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("peft"))


@pytest.fixture(scope="module")
def data(store: Store) -> dict[str, Artifact]:
    rows = _tasks(240, seed=3)
    return {"train": store.dataset("dataset.train", rows[:200]),
            "heldout": store.dataset("dataset.heldout", rows[200:]),
            # A second task: adapters learn it on top of the model warmed up on the first.
            "count": store.dataset("dataset.count", _counts(200)),
            "text": store.dataset("dataset.text", [{"text": f"{r['prompt']}\n{r['completion']}"} for r in rows])}


@pytest.fixture(scope="module")
def warm(store: Store, data: dict[str, Artifact]) -> Artifact:
    base, _ = store.run(model_step.run, "model.base", {
        "path": None, "hub": None, "revision": None, "gguf": None,
        "init": Call("tiny", {**TINY, "data": data["text"]})})
    art, _ = store.run(train.run, "train.warm", {**TRAIN, "from": base, "data": data["train"],
                                                 "lr": 5e-3, "max_steps": 40})
    return art


def _logits(art: Artifact) -> Any:
    import torch

    tok = modelio.load_tokenizer(art)
    ids = tok(["Reverse: cat dog sun\n", "Reverse: moon star fish\n"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return modelio.load_model(art, merged=True)(input_ids=ids).logits


def _train(store: Store, warm: Artifact, data: dict[str, Artifact], name: str, method: Call,
           **kw: Any) -> tuple[Artifact, dict[str, Any]]:
    params = {**TRAIN, "from": warm, "data": data["count"], "method": method, "max_steps": 60,
              "logging_steps": 5, **kw}
    return store.run(train.run, f"train.{name}", params)


METHODS = {
    "rslora_bias": (Call("lora", {**LORA.args, "rslora": True, "bias": "all", "r": 16, "alpha": 8}), 3e-2),
    "dora_attn": (Call("lora", {**LORA.args, "dora": True, "target_modules": ["q_proj", "v_proj", "o_proj"]}), 3e-2),
    "ia3": (Call("ia3", {"target_modules": None, "feedforward_modules": None}), 1e-1),
    "prompt_tuning": (Call("prompt_tuning", {"tokens": 8, "init_text": "Count the words"}), 3e-2),
    "prefix_tuning": (Call("prefix_tuning", {"tokens": 8, "projection": False}), 1e-1),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_adapter_trains_saves_and_reloads(store: Store, warm: Artifact, data: dict[str, Artifact],
                                          name: str) -> None:
    import torch

    method, lr = METHODS[name]
    art, meta = _train(store, warm, data, name, method, lr=lr)
    losses = meta["train_loss"]
    assert losses[-1] < losses[0] * 0.93, (name, losses)
    assert modelio.read_meta(art)["type"] == "adapter"
    cfg = json.loads((art.path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] is None and not cfg.get("tokenizer_name_or_path")
    assert meta["trainable_params"] < 0.5 * modelio.count_params(modelio.load_model(warm))
    first, second = _logits(art), _logits(art)
    assert torch.equal(first, second)  # reload: identical logits
    assert first.shape == _logits(warm).shape  # virtual tokens do not show in the logits
    assert not torch.allclose(first, _logits(warm))
    assert modelio.is_prompt_learning(art) == (name in ("prompt_tuning", "prefix_tuning"))


def test_prompt_tuned_model_evaluates_and_exports(store: Store, warm: Artifact,
                                                  data: dict[str, Artifact]) -> None:
    from ftlang.stdlib import evaluate, export

    art, _ = _train(store, warm, data, "pt", METHODS["prompt_tuning"][0], lr=5e-2, max_steps=5)
    _, meta = store.run(evaluate.run, "eval.pt", {
        "models": [warm, art], "data": data["count"], "template": None, "metrics": [Call("loss", {})],
        "prompt_field": "prompt", "completion_field": "completion", "max_new_tokens": 4, "limit": 8,
        "batch_size": 4})
    # Evaluated with its virtual tokens: lower loss than the base on the task it was tuned on.
    assert meta["models"]["pt"]["loss"] < meta["models"]["warm"]["loss"] - 0.05, meta["models"]
    exported, _ = store.run(export.run, "export.pt", {"model": art, "merge": True, "to": store.root / "pt"})
    to = exported.path
    assert (to / "adapter" / "adapter_config.json").is_file() and (to / "config.json").is_file()
    with pytest.raises(StepError, match="prompt- or prefix-tuned"):
        _train(store, art, data, "on_pt", LORA, max_steps=1)


# nf4 with double quantisation in make test; the other two kinds behind `slow` (CI budget).
@pytest.mark.parametrize("quant,double", [("nf4", True), pytest.param("fp4", False, marks=pytest.mark.slow),
                                          pytest.param("int8", False, marks=pytest.mark.slow)])
def test_quantised_lora_trains(store: Store, warm: Artifact, data: dict[str, Artifact], quant: str,
                               double: bool) -> None:
    pytest.importorskip("bitsandbytes")
    method = Call("lora", {**LORA.args, "quant": quant, "double_quant": double})
    art, meta = _train(store, warm, data, f"q{quant}", method, lr=3e-2)
    losses = meta["train_loss"]
    assert losses[-1] < losses[0] * 0.93, losses
    assert modelio.read_meta(art)["base"] == warm.digest  # the adapter applies to the fp32 base
    assert (art.path / "adapter" / "adapter_model.safetensors").is_file()


def test_qlora_gradients_match_a_dequantised_reference(store: Store, warm: Artifact) -> None:
    """4-bit LoRA gradients equal those of the same LoRA over fp32 weights that are the
    dequantised 4-bit ones, also after an eval-mode forward (the CPU repack trap)."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    import torch
    from bitsandbytes.functional import dequantize_4bit

    method = Call("lora", {**LORA.args, "r": 4, "quant": "nf4", "double_quant": True})
    q = train.load_base(warm, method, "cpu", store.root / "cache")
    torch.manual_seed(0)
    q = train.apply_adapter(q, method)
    # A reference: the fp32 model whose Linear weights are the dequantised 4-bit ones.
    ref = modelio.load_model(warm)
    deq = {name.removeprefix("base_model.model.").removesuffix(".base_layer"):
           dequantize_4bit(m.weight.data, m.weight.quant_state).float()
           for name, m in q.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(deq) == 7  # q, k, v, o, gate, up, down of the one layer
    with torch.no_grad():
        for name, m in ref.named_modules():
            if name in deq:
                assert not torch.equal(m.weight, deq[name])  # 4-bit is lossy: a real difference
                m.weight.copy_(deq.pop(name))
    assert not deq
    torch.manual_seed(0)
    ref = train.apply_adapter(ref, Call("lora", {**LORA.args, "r": 4}))
    # Same adapter weights on both, and a non-zero B so that every LoRA matrix gets a gradient.
    with torch.no_grad():
        qp = dict(q.named_parameters())
        for name, p in ref.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.05)
                qp[name].copy_(p)
    ids = torch.tensor([[5, 17, 33, 48, 60, 71, 12, 9]])
    q.eval()
    with torch.no_grad():
        q(input_ids=ids)  # the forward that used to repack the weights and drop gradients
    grads = {}
    for lm in (q, ref):
        lm.train()
        lm.zero_grad()
        lm(input_ids=ids, labels=ids).loss.backward()
        grads[id(lm)] = {n: p.grad.clone() for n, p in lm.named_parameters() if p.requires_grad}
    gq, gr = grads[id(q)], grads[id(ref)]
    assert gq.keys() == gr.keys() and len(gq) > 4
    for name in gq:
        assert gq[name].abs().sum() > 0, f"no gradient reaches {name}"
        assert torch.allclose(gq[name], gr[name], rtol=1e-3, atol=1e-5), name


def test_full_fine_tuning_with_the_other_knobs(store: Store, warm: Artifact, data: dict[str, Artifact]) -> None:
    """sgd, cosine schedule with warmup, gradient accumulation, clipping, weight decay,
    gradient checkpointing: the loss still falls and the step reports what it used."""
    art, meta = _train(store, warm, data, "knobs", Call("full", {}), lr=1e-1, optimizer="sgd",
                       scheduler="cosine", warmup=0.1, grad_accum=2, batch_size=4, max_grad_norm=0.5,
                       weight_decay=0.01, gradient_checkpointing=True)
    assert meta["steps"] == 60 and meta["train_loss"][-1] < meta["train_loss"][0] * 0.9, meta["train_loss"]
    assert modelio.read_meta(art)["type"] == "full"


def test_default_learning_rates() -> None:
    assert train.default_lr(Call("lora", {})) == 2e-4
    assert train.default_lr(Call("full", {})) == 5e-5
    assert train.default_lr(Call("dpo", {"adapter": Call("full", {})})) == 5e-7
    assert train.default_lr(Call("dpo", {"adapter": LORA})) == 5e-6


def test_explicit_missing_device_is_an_error(store: Store, warm: Artifact, data: dict[str, Artifact]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(StepError, match="no CUDA device"):
        _train(store, warm, data, "cuda", LORA, device="cuda", max_steps=1)
    with pytest.raises(StepError, match="CUDA only"):
        _train(store, warm, data, "adam8", LORA, optimizer="adamw_8bit", max_steps=1)
