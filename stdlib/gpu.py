"""GPU readiness of a train step: the attention kernel and peak memory per logging step.

In:  a train block's params (`attention`) and, at run time, the built Trainer and the device.
Out: the `attention` attribute (train's signature), its compile-time rule (FT0366), the
     model switched to the chosen kernel (transformers' `set_attn_implementation`), and on
     CUDA one log line per logging step with the peak memory allocated since the last one.

bf16 / tf32 (devices.precision_flags, `precision`), 4-bit QLoRA (`lora(quant = "nf4")`),
paged 8-bit AdamW (`optimizer = paged_adamw_8bit`) and gradient checkpointing with its
kwargs live where they were; this module adds what had no home. No torch import at the top.
"""

from __future__ import annotations

from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib.spec import Attr, BlockView, StepContext, StepError, error

ATTENTION = ("sdpa", "flash_attention_2", "eager")
ATTRS = (
    Attr("attention", "enum", None, "attention kernel: sdpa (PyTorch's fused attention), "
         "flash_attention_2 (the flash-attn package, CUDA, bf16/fp16), eager; default: the "
         "model's own choice", choices=ATTENTION),
)


def rules(b: BlockView) -> list[Diagnostic]:
    if b.params.get("attention") == "flash_attention_2" and b.params.get("device") in ("cpu", "mps"):
        return [error("FT0366", "flash_attention_2 runs on CUDA GPUs only", b.at("attention"),
                      f"device = {b.params.get('device')}", help='use attention = "sdpa" on this device')]
    if b.params.get("attention") == "flash_attention_2" and b.params.get("precision") == "fp32":
        return [error("FT0366", "flash_attention_2 needs bf16 or fp16 weights", b.at("attention"),
                      "precision = fp32", help='use precision = bf16 (or auto), or attention = "sdpa"')]
    return []


def set_attention(model: Any, choice: str | None, device: str) -> None:
    """Switch the (possibly peft-wrapped) model to the chosen attention kernel."""
    if choice is None:
        return
    if choice == "flash_attention_2":
        if device != "cuda":
            raise StepError("attention = flash_attention_2 needs a CUDA GPU", hint='use attention = "sdpa"')
        try:
            import flash_attn  # noqa: F401
        except ImportError as e:
            raise StepError("attention = flash_attention_2 needs the flash-attn package",
                            hint="pip install flash-attn --no-build-isolation, or use attention = \"sdpa\"") from e
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        base.set_attn_implementation(choice)
    except (ValueError, ImportError) as e:
        raise StepError(f"attention = {choice}: {e}", hint='use attention = "sdpa" or "eager"') from e


def prepare(ctx: StepContext, trainer: Any) -> None:
    """Before trainer.train(): the attention kernel, and the peak-memory log on CUDA."""
    device = str(getattr(trainer.args, "device", "cpu"))
    set_attention(trainer.model, ctx.params.get("attention"), device.split(":")[0])
    if not device.startswith("cuda"):
        return
    import torch
    from transformers import TrainerCallback

    class PeakMemory(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            peak = torch.cuda.max_memory_allocated() / 2**30
            ctx.log(f"step {state.global_step}: peak GPU memory {peak:.2f} GiB")
            torch.cuda.reset_peak_memory_stats()

    trainer.add_callback(PeakMemory())
