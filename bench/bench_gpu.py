"""LoRA SFT of SmolLM2-135M on a CUDA GPU: ftlang's Trainer path vs a hand-written loop.

    .venv/bin/python bench/bench_gpu.py [--steps 60] [--batch 16] [--length 256] [--peak-tflops X]

Both sides train the same LoRA (r 16, all linear layers) on the same token batches in bf16
(tf32 matmuls on), sdpa attention. "ftlang" is transformers.Trainer built with the exact
TrainingArguments a train step uses (ftlang.stdlib.trainer.trainer_settings); the baseline
is a plain transformers + peft loop (AdamW, autocast bf16, no Trainer). Prints tokens/s,
MFU (6 x params x tokens / s over the card's peak bf16 FLOP/s) and peak memory per step for
each, and the ratio; appends them, with the card's name, to bench/RESULTS.md. Without a
CUDA device it says so and measures nothing (exit 0, so `make bench` still runs the rest).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
GGUF = ROOT / "examples" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
# Dense bf16 peak of common cards, TFLOP/s (vendor datasheets); --peak-tflops overrides.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0,
               "RTX 4090": 165.0, "RTX 3090": 71.0}


def peak(name: str, given: float | None) -> float | None:
    if given:
        return given * 1e12
    hit = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return hit * 1e12 if hit else None


def load(device: str):  # noqa: ANN201 - a peft model
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name, dtype=torch.bfloat16,
                                              attn_implementation="sdpa").to(device)
    cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(lm, cfg)


def batches(vocab: int, steps: int, batch: int, length: int) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        ids = torch.randint(0, vocab, (batch, length), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return out


def hand_loop(data: list[dict], device: str) -> tuple[float, int]:
    import torch

    lm = load(device)
    opt = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=2e-4, fused=True)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in data:
        b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
        loss = lm(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, torch.cuda.max_memory_allocated()


def ftlang_trainer(data: list[dict], device: str, batch: int) -> tuple[float, int]:
    import torch
    from ftlang.stdlib.trainer import trainer_settings
    from transformers import Trainer, TrainingArguments

    p = {"warmup": 0.0, "scheduler": "constant", "seed": 0, "eval_steps": 50, "patience": None,
         "save_steps": None, "save_limit": 2, "epochs": 1.0, "max_steps": len(data), "batch_size": batch,
         "grad_accum": 1, "optimizer": "adamw", "weight_decay": 0.0, "max_grad_norm": 1.0, "shuffle": False,
         "logging_steps": 10, "gradient_checkpointing": False, "precision": "bf16", "distributed": None}
    lm = load(device)
    rows = [{k: v[i] for k, v in b.items()} for b in data for i in range(batch)]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(**trainer_settings(p, 2e-4, Path(out), device, has_eval=False))
        trainer = Trainer(model=lm, args=args, train_dataset=rows)
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here: nothing measured (docs/scale.md lists the figures still to be "
              "measured)")
        return 0
    if not GGUF.exists():
        print(f"bench_gpu: {GGUF} is missing: run examples/smollm2/link_model.py first", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = True
    card = torch.cuda.get_device_name(0)
    data = batches(49152, args.steps, args.batch, args.length)
    tokens = args.steps * args.batch * args.length
    params = 134.5e6  # SmolLM2-135M (STACK.md); LoRA adds <2%
    results = {}
    for name, fn in (("hand loop", lambda: hand_loop(data, "cuda")),
                     ("ftlang Trainer", lambda: ftlang_trainer(data, "cuda", args.batch))):
        seconds, mem = fn()
        rate = tokens / seconds
        flops = peak(card, args.peak_tflops)
        mfu = 6 * params * rate / flops if flops else None
        results[name] = rate
        print(f"{name:15s} {rate:10.0f} tokens/s  MFU {mfu:.1%}  peak memory {mem / 2**30:.2f} GiB"
              if mfu is not None else f"{name:15s} {rate:10.0f} tokens/s  peak memory {mem / 2**30:.2f} GiB")
    ratio = results["ftlang Trainer"] / results["hand loop"]
    print(f"ftlang / hand loop: {ratio:.2f}x tokens/s on {card}")
    with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
        f.write(f"\n## bench_gpu.py ({card})\n\n`.venv/bin/python bench/bench_gpu.py --steps {args.steps} "
                f"--batch {args.batch} --length {args.length}`: hand loop {results['hand loop']:.0f} tokens/s, "
                f"ftlang Trainer {results['ftlang Trainer']:.0f} tokens/s, ratio {ratio:.2f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
