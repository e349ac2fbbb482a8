"""Which device and precision a training step uses.

`device = auto` picks CUDA, then Apple MPS, then the CPU; an explicit device that is not
there is a StepError (never a silent fallback: the numbers would differ). `precision =
auto` is bf16 on a GPU that supports it and fp32 everywhere else (bf16 autocast on CPU is
slower than fp32 here, see STACK.md).
"""

from __future__ import annotations

from typing import Any

from ftlang.stdlib.spec import StepError


def available() -> dict[str, bool]:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return {"cuda": torch.cuda.is_available(), "mps": bool(mps and mps.is_available()), "cpu": True}


def resolve(choice: str | None) -> str:
    """The device a step runs on: "cuda", "mps" or "cpu"."""
    have = available()
    choice = choice or "auto"
    if choice == "auto":
        return "cuda" if have["cuda"] else ("mps" if have["mps"] else "cpu")
    if not have.get(choice, False):
        raise StepError(f"device = {choice}, but this machine has no {choice.upper()} device",
                        hint="use device = auto (or cpu)")
    return choice


def planned(choice: str | None) -> str:
    """What `resolve` will choose, said without importing torch (for `ft plan`): auto is
    cuda where an NVIDIA driver answers, mps on Apple silicon, else cpu."""
    import platform
    import shutil

    choice = choice or "auto"
    if choice != "auto":
        return choice
    if shutil.which("nvidia-smi"):
        return "cuda"
    return "mps" if platform.system() == "Darwin" and platform.machine() == "arm64" else "cpu"


def precision_flags(precision: str | None, device: str) -> dict[str, bool]:
    """TrainingArguments flags for the chosen precision on `device`."""
    import torch

    precision = precision or "auto"
    if precision == "auto":
        bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": False}
    if precision == "fp16" and device == "cpu":
        raise StepError("precision = fp16 needs a GPU", hint="use precision = auto (fp32 on CPU)")
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise StepError("this GPU does not support bf16", hint="use precision = fp16 or auto")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def placement(device: str) -> dict[str, Any]:
    """TrainingArguments flags that pin the Trainer to `device`."""
    return {"use_cpu": device == "cpu"}


OPTIMIZERS = {"adamw": "adamw_torch", "sgd": "sgd", "adamw_8bit": "adamw_bnb_8bit",
              "paged_adamw_8bit": "paged_adamw_8bit"}


def optimizer(name: str | None, device: str) -> str:
    name = name or "adamw"
    if name in ("adamw_8bit", "paged_adamw_8bit") and device != "cuda":
        raise StepError(f"optimizer = {name} runs on CUDA only", hint="use optimizer = adamw here")
    if name == "adamw" and device in ("cuda", "cpu"):
        # One fused kernel per step (what transformers picks by default for torch >= 2.8);
        # the same maths, rounded differently from the per-tensor loop (~1e-7 on a loss).
        return "adamw_torch_fused"
    return OPTIMIZERS[name]
