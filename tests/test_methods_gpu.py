"""GPU code paths: bf16 autocast, 4-bit QLoRA on CUDA, the fused and 8-bit optimisers.
Marked `gpu`; skipped where no CUDA device is present (`make test` deselects them)."""

from __future__ import annotations

from typing import Any

import pytest
from ftlang.stdlib import devices, modelio, train
from ftlang.stdlib import model as model_step
from ftlang.stdlib.spec import Artifact, Call
from stepkit import Store
from test_stdlib_ml import LORA, TINY, TRAIN, _counts, _tasks

pytestmark = pytest.mark.gpu


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if not _cuda():
    pytest.skip("needs a CUDA device", allow_module_level=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("gpu"))


@pytest.fixture(scope="module")
def warm(store: Store) -> tuple[Artifact, Artifact]:
    rows = _tasks(200, seed=3)
    text = store.dataset("dataset.text", [{"text": f"{r['prompt']}\n{r['completion']}"} for r in rows])
    data = store.dataset("dataset.train", rows)
    base, _ = store.run(model_step.run, "model.base", {
        "path": None, "hub": None, "revision": None, "gguf": None,
        "init": Call("tiny", {**TINY, "hidden": 64, "heads": 4, "data": text})})
    art, _ = store.run(train.run, "train.warm", {**TRAIN, "from": base, "data": data, "lr": 5e-3,
                                                 "max_steps": 40})
    return art, store.dataset("dataset.count", _counts(200))


def test_auto_device_and_precision() -> None:
    import torch

    assert devices.resolve("auto") == "cuda"
    flags = devices.precision_flags("auto", "cuda")
    assert flags["bf16"] == torch.cuda.is_bf16_supported() and not flags["fp16"]
    assert devices.optimizer("adamw", "cuda") == "adamw_torch_fused"


@pytest.mark.parametrize("kw", [
    {"method": Call("lora", {**LORA.args, "quant": "nf4", "double_quant": True})},
    {"method": LORA, "optimizer": "adamw_8bit"},
    {"method": Call("full", {}), "precision": "bf16", "gradient_checkpointing": True},
])
def test_trains_on_cuda(store: Store, warm: tuple[Artifact, Artifact], kw: dict[str, Any]) -> None:
    base, count = warm
    art, meta = store.run(train.run, "train.gpu", {**TRAIN, "from": base, "data": count, "lr": 3e-2,
                                                   "max_steps": 60, "logging_steps": 5, **kw})
    assert meta["device"] == "cuda"
    assert meta["train_loss"][-1] < meta["train_loss"][0] * 0.95, meta["train_loss"]
    assert modelio.load_model(art, merged=True) is not None
