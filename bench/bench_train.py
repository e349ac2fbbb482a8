"""LoRA training speed on CPU: ftlang's Trainer path vs a hand-written transformers + peft
loop on the same weights, batches, steps and seed, in the same process and run.

    .venv/bin/python bench/bench_train.py [--steps 200] [--batch 8] [--length 64] [--rounds 3] [--shape 64x2] [--no-record]

Both sides (bench/train_loops.py) train a small Llama's LoRA with fused AdamW, the same
linear schedule and clipping. They run in lockstep (train_loops.lockstep): one step of the
hand loop per optimiser step of ftlang's, after it in even rounds and before it in odd
ones, so load on the machine hits both within milliseconds; every step of both is timed.
Both run with the thread count ftlang chooses (ftlang.stdlib.cputhreads), printed with the
results.

Prints, per side, steps/s and tokens/s at the median step (the pace) and the ratio
(ftlang / hand loop; goal >= 1.0); the whole-run ratio (building the Trainer included);
whether the losses agree to 6 digits; and the share of ftlang's loop spent assembling
batches (the collator, run in the training process).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
LOGGING_STEPS = 10  # a train step's default logging_steps
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shape", default="64x2", help="the Llama's hidden size x layers (4 heads)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    import torch
    import train_loops
    from ftlang.stdlib import cputhreads

    hidden, layers = (int(x) for x in args.shape.split("x"))
    train_loops.SHAPE.update(hidden=hidden, layers=layers)
    threads = cputhreads.choose()
    torch.set_num_threads(threads)
    data = train_loops.examples(args.steps * args.batch, args.length)
    ft_steps: list[float] = []
    hand_steps: list[float] = []
    whole: list[float] = []  # per round: hand-loop total / ftlang total
    loading: list[float] = []  # per round: share of ftlang's loop spent assembling batches
    for r in range(args.rounds):
        collate: list[float] = []
        run = train_loops.lockstep(data, args.steps, args.batch, 3e-3, logging_steps=LOGGING_STEPS,
                                   collate_seconds=collate, hand_first=r % 2 == 1)
        ft_steps += run.ft_steps
        hand_steps += run.hand_steps
        whole.append(run.hand_total / run.ft_total)
        loading.append(sum(collate) / run.ft_total)
    per_step = {"ftlang": statistics.median(ft_steps), "hand loop": statistics.median(hand_steps)}
    tokens_per_step = args.batch * args.length
    hand_logged = train_loops.windows(run.hand_losses, LOGGING_STEPS)
    same = len(run.ft_losses) == len(hand_logged) and all(
        abs(a - b) <= 2e-6 for a, b in zip(run.ft_losses, hand_logged))
    lines = [f"{k}: {1 / s:.1f} steps/s, {tokens_per_step / s:,.0f} tokens/s (median step {1e3 * s:.2f} ms)"
             for k, s in per_step.items()]
    lines += [f"ftlang / hand loop, per step: **{per_step['hand loop'] / per_step['ftlang']:.3f}x** steps/s "
              "(goal >= 1.0)",
              f"ftlang / hand loop, whole run (building the Trainer and its set-up included; not the model): "
              f"{statistics.median(whole):.3f}x",
              f"losses equal to 6 digits: {'yes' if same else 'NO'} (final {run.ft_losses[-1]:.6f} "
              f"vs {hand_logged[-1]:.6f})",
              f"batch assembly (the collator, in the training process): "
              f"{100 * statistics.median(loading):.1f}% of ftlang's loop time",
              f"torch threads: {threads} of {os.cpu_count()} cores (load {os.getloadavg()[0]:.1f})"]
    cmd = (f".venv/bin/python bench/bench_train.py --steps {args.steps} --batch {args.batch} "
           f"--length {args.length} --rounds {args.rounds} --shape {args.shape}")
    size = sum(q.numel() for q in train_loops.model().parameters())
    env_note = (f"a Llama of hidden size {hidden}, {layers} layers, {size / 1e6:.1f}M parameters, "
                f"LoRA r=8 on q/v; {os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}")
    text = "\n".join([f"## LoRA training loop on CPU: ftlang vs hand-written loop ({time.strftime('%Y-%m-%d')})",
                      "", f"Command: `{cmd}` ({env_note}; {args.rounds} rounds of {args.steps} steps in "
                      "lockstep, the hand loop's step after ftlang's in even rounds and before it in odd ones; "
                      "medians over all steps)", "", *[f"- {ln}" for ln in lines], ""])
    report(text, record=not args.no_record)


if __name__ == "__main__":
    main()
