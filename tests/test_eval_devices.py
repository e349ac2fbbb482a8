"""One device decision per step: eval and select run every model on the step's `device`,
the plan prints it, and a QLoRA adapter can be measured on the 4-bit base it trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import run_ft
from ftlang.stdlib import evaluate, modelio, train
from ftlang.stdlib import model as model_step
from ftlang.stdlib.spec import Artifact, Call, StepError
from stepkit import Store
from test_stdlib_ml import LORA, TINY, TRAIN, _counts, _tasks


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("devices"))


@pytest.fixture(scope="module")
def arts(store: Store) -> dict[str, Artifact]:
    text = store.dataset("dataset.text", [{"text": f"{r['prompt']}\n{r['completion']}"} for r in _tasks(200)])
    base, _ = store.run(model_step.run, "model.base", {
        "path": None, "hub": None, "revision": None, "gguf": None, "init": Call("tiny", {**TINY, "data": text})})
    tasks = store.dataset("dataset.tasks", _tasks(120, seed=3))
    count = store.dataset("dataset.count", _counts(80))
    warm, _ = store.run(train.run, "train.warm", {**TRAIN, "from": base, "data": tasks, "lr": 5e-3,
                                                  "max_steps": 30})
    out = {"warm": warm, "count": count}
    for name, quant in (("qlora", "nf4"), ("lora", "none")):
        out[name], _ = store.run(train.run, f"train.{name}", {
            **TRAIN, "from": warm, "data": count, "lr": 3e-2, "max_steps": 15,
            "method": Call("lora", {**LORA.args, "quant": quant, "double_quant": False})})
    return out


def _eval(store: Store, models: list[Artifact], data: Artifact, **kw: Any) -> dict[str, Any]:
    params = {"models": models, "data": data, "template": None, "metrics": [Call("loss", {})],
              "prompt_field": "prompt", "completion_field": "completion", "max_new_tokens": 3,
              "limit": 40, "batch_size": 8, **kw}
    _, meta = store.run(evaluate.run, "eval.e", params)
    return meta["models"]


def test_eval_decides_the_device_once_and_every_model_uses_it(store: Store, arts: dict[str, Artifact],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Any] = []
    loaded: list[tuple[str, str]] = []
    real_resolve, real_load = evaluate.devices.resolve, evaluate.load_measured

    def resolve(choice: Any) -> str:
        asked.append(choice)
        return real_resolve(choice)

    def load(model: Artifact, device: str, cache: Path, **kw: Any) -> Any:
        lm = real_load(model, device, cache, **kw)
        loaded.append((device, next(lm.parameters()).device.type))
        return lm

    monkeypatch.setattr(evaluate.devices, "resolve", resolve)
    monkeypatch.setattr(evaluate, "load_measured", load)
    scores = _eval(store, [arts["warm"], arts["lora"]], arts["count"], device="cpu")
    assert asked == ["cpu"]  # one decision for the step...
    assert loaded == [("cpu", "cpu"), ("cpu", "cpu")]  # ...that every model is loaded on
    assert scores["lora"]["loss"] < scores["warm"]["loss"]


def test_an_explicit_missing_device_is_an_error_not_a_fallback(store: Store, arts: dict[str, Artifact]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(StepError, match="no CUDA device"):
        _eval(store, [arts["warm"]], arts["count"], device="cuda")


def test_a_qlora_adapter_measured_on_its_quantised_base(store: Store, arts: dict[str, Artifact]) -> None:
    pytest.importorskip("bitsandbytes")
    assert modelio.read_meta(arts["qlora"])["quant"] == {"quant": "nf4", "double_quant": False}
    assert "quant" not in modelio.read_meta(arts["lora"])  # plain adapters keep their bytes
    merged = _eval(store, [arts["qlora"], arts["lora"]], arts["count"])
    on_4bit = _eval(store, [arts["qlora"], arts["lora"]], arts["count"], adapter_base="quantized")
    # 4-bit weights measure differently from the fp32 base they dequantise to...
    assert on_4bit["qlora"]["loss"] != merged["qlora"]["loss"]
    assert abs(on_4bit["qlora"]["loss"] - merged["qlora"]["loss"]) < 0.5
    # ...and an adapter that was not trained quantised is measured the same either way.
    assert on_4bit["lora"]["loss"] == pytest.approx(merged["lora"]["loss"], abs=1e-5)


def test_the_plan_names_each_steps_device_and_mps_qlora_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b", "text": "a b"}\n')
    (tmp_path / "p.ft").write_text("""\
ft 0.1
dataset d { source = jsonl("d.jsonl") }
model base { init = tiny(hidden = 16, layers = 1, heads = 2, vocab = 64, context = 32, data = d) }
train sft { from = base, data = d, method = lora(r = 4), max_steps = 1, device = cpu }
eval e { models = [base, sft], data = d, metrics = [loss], device = cpu }
""")
    plan = run_ft("plan", "p.ft", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    for node in ("train.sft", "eval.e"):
        at = next(i for i, line in enumerate(lines) if node in line)
        assert lines[at + 1].strip().startswith("on cpu"), plan.stdout
    (tmp_path / "q.ft").write_text("""\
ft 0.1
dataset d { source = jsonl("d.jsonl") }
model base { init = tiny(hidden = 16, layers = 1, heads = 2, vocab = 64, context = 32, data = d) }
train q { from = base, data = d, method = lora(r = 4, quant = "nf4"), device = mps }
""")
    check = run_ft("check", "q.ft", cwd=tmp_path)
    assert check.returncode != 0 and "quantised LoRA does not run on mps" in check.stderr + check.stdout
    assert "q.ft:4:" in check.stderr + check.stdout


@pytest.mark.gpu
def test_eval_on_cpu_beside_a_gpu(store: Store, arts: dict[str, Artifact], monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CUDA machine: device = cpu measures on the CPU, device = cuda on the GPU, and the
    two agree to float noise."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    seen: list[str] = []
    real = evaluate.load_measured

    def spy(model: Artifact, device: str, cache: Path, **kw: Any) -> Any:
        lm = real(model, device, cache, **kw)
        seen.append(next(lm.parameters()).device.type)
        return lm

    monkeypatch.setattr(evaluate, "load_measured", spy)
    cpu = _eval(store, [arts["lora"]], arts["count"], device="cpu")
    gpu = _eval(store, [arts["lora"]], arts["count"], device="cuda")
    assert seen == ["cpu", "cuda"]
    assert gpu["lora"]["loss"] == pytest.approx(cpu["lora"]["loss"], abs=1e-3)
