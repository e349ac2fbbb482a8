"""LoRA's `bias`, `rslora` and `dora`, and DARE's drop, checked on the tensors themselves.

A tiny Qwen2 (its attention projections have biases, unlike tiny() llama) is saved as a
local model folder, loaded by the model step with `path`, and LoRA-tuned each way; the
tests read the saved adapter (config and safetensors) and the reloaded model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from ftlang.stdlib import merge, modelio, train
from ftlang.stdlib import model as model_step
from ftlang.stdlib.spec import Artifact, Call
from stepkit import Store
from test_stdlib_ml import LORA, TINY, TRAIN, _tasks


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("lora_variants"))


@pytest.fixture(scope="module")
def qwen(store: Store, tmp_path_factory: pytest.TempPathFactory) -> tuple[Artifact, dict[str, Any]]:
    """A 1-layer Qwen2 with q/k/v biases, saved with a tokenizer trained by tiny()."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    text = store.dataset("dataset.text", [{"text": f"{r['prompt']}\n{r['completion']}"} for r in _tasks(200)])
    llama, _ = store.run(model_step.run, "model.llama", {
        "path": None, "hub": None, "revision": None, "gguf": None, "init": Call("tiny", {**TINY, "data": text})})
    tok = modelio.load_tokenizer(llama)
    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=64,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    lm = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # non-zero biases, so "trained or not" is visible
        for n, p in lm.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)
    folder = tmp_path_factory.mktemp("qwen2")
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    art, _ = store.run(model_step.run, "model.qwen", {"path": folder, "hub": None, "revision": None,
                                                      "gguf": None, "init": None})
    return art, {n: p.detach().clone() for n, p in lm.named_parameters()}


def _tune(store: Store, base: Artifact, name: str, **lora: Any) -> Artifact:
    data = store.dataset(f"dataset.{name}", _tasks(64, seed=9))
    art, _ = store.run(train.run, f"train.{name}", {
        **TRAIN, "from": base, "data": data, "method": Call("lora", {**LORA.args, **lora}),
        "lr": 5e-2, "max_steps": 6, "batch_size": 8, "logging_steps": 1})
    return art


def _adapter(art: Artifact) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    folder = Path(art.path) / modelio.ADAPTER_DIR
    return json.loads((folder / "adapter_config.json").read_text()), load_file(folder / "adapter_model.safetensors")


def _find(tensors: dict[str, Any], suffix: str) -> Any:
    hits = [v for k, v in tensors.items() if k.endswith(suffix)]
    assert len(hits) == 1, (suffix, sorted(tensors))
    return hits[0]


def test_bias_all_trains_and_saves_the_biases(store: Store, qwen: tuple[Artifact, dict[str, Any]]) -> None:
    base, original = qwen
    cfg, tensors = _adapter(_tune(store, base, "bias_all", bias="all"))
    assert cfg["bias"] == "all"
    q_bias = _find(tensors, "self_attn.q_proj.base_layer.bias")  # peft's name for the wrapped layer's bias
    assert q_bias.shape == original["model.layers.0.self_attn.q_proj.bias"].shape
    assert not q_bias.equal(original["model.layers.0.self_attn.q_proj.bias"])  # trained


def test_bias_none_leaves_the_biases_alone(store: Store, qwen: tuple[Artifact, dict[str, Any]]) -> None:
    import torch

    base, original = qwen
    art = _tune(store, base, "bias_none", bias="none")
    cfg, tensors = _adapter(art)
    assert cfg["bias"] == "none" and not [k for k in tensors if k.endswith(".bias")]
    merged = dict(modelio.load_model(art, merged=True).named_parameters())
    torch.testing.assert_close(merged["model.layers.0.self_attn.q_proj.bias"],
                               original["model.layers.0.self_attn.q_proj.bias"], atol=0, rtol=0)


def test_rslora_scales_by_alpha_over_sqrt_r(store: Store, qwen: tuple[Artifact, dict[str, Any]]) -> None:
    base, _ = qwen
    art = _tune(store, base, "rslora", rslora=True, r=16, alpha=8)
    cfg, _ = _adapter(art)
    assert cfg["use_rslora"] is True and cfg["r"] == 16 and cfg["lora_alpha"] == 8
    lm = modelio.load_model(art)
    q = lm.base_model.model.model.layers[0].self_attn.q_proj
    assert q.scaling["default"] == pytest.approx(8 / math.sqrt(16))  # plain LoRA would be 8 / 16


def test_dora_learns_a_magnitude_vector(store: Store, qwen: tuple[Artifact, dict[str, Any]]) -> None:
    import torch

    base, original = qwen
    cfg, tensors = _adapter(_tune(store, base, "dora", dora=True, target_modules=["q_proj", "v_proj"]))
    assert cfg["use_dora"] is True and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    mag = _find(tensors, "q_proj.lora_magnitude_vector")
    w = original["model.layers.0.self_attn.q_proj.weight"]
    init = torch.linalg.vector_norm(w, dim=1)  # DoRA starts from the weight's row norms
    assert mag.shape == init.shape
    assert not torch.allclose(mag, init, atol=1e-4)  # and training moved it


def test_dare_drops_at_the_rate_and_rescales_the_rest() -> None:
    import torch

    tau = torch.randn(200, 200)
    base = {"w": torch.zeros_like(tau)}
    out = merge.combine([{"w": tau}], base, Call("dare_linear", {"density": 0.3, "seed": 11}), [1.0])["w"]
    kept = out != 0
    share = kept.float().mean().item()
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / tau.numel())  # the drop rate, within 4 sigma
    torch.testing.assert_close(out[kept], tau[kept] / 0.3)  # every kept entry is rescaled by 1/density
    # Hand-computed for a small case: the mask is torch.rand(shape, seed) < density.
    small = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    mask = torch.rand(small.shape, generator=torch.Generator().manual_seed(5)) < 0.5
    expected = torch.where(mask, small / 0.5, torch.zeros_like(small)) * 0.5 + torch.ones(2, 2)
    got = merge.combine([{"w": small + 1}], {"w": torch.ones(2, 2)},
                        Call("dare_linear", {"density": 0.5, "seed": 5}), [0.5])["w"]
    torch.testing.assert_close(got, expected)
