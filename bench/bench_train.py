"""LoRA training speed on CPU: ftlang's Trainer path vs a hand-written transformers + peft
loop on the same weights, batches, steps and seed, in the same process and run.

    .venv/bin/python bench/bench_train.py [--steps 100] [--batch 8] [--length 64] [--rounds 2] [--no-record]

Both sides (bench/train_loops.py) train a tiny Llama's LoRA with fused AdamW, the same
linear schedule and clipping; the rounds alternate which side goes first, so load on the
machine hits both alike. Both run with the thread count ftlang chooses
(ftlang.stdlib.cputhreads), printed with the results. Prints steps/s, tokens/s, the
ratio (ftlang / hand loop; goal >= 1.0), whether the losses agree to 6 digits, and the
share of ftlang's loop spent assembling batches (its DataLoader runs the collator in the
training process, num_workers = 0: what a worker process could take off the step at most).
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
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    import torch
    import train_loops
    from ftlang.stdlib import cputhreads

    threads = cputhreads.choose()
    torch.set_num_threads(threads)
    data = train_loops.examples(args.steps * args.batch, args.length)
    runs: dict[str, list[tuple[float, int]]] = {"ftlang": [], "hand loop": []}
    losses: dict[str, list[float]] = {}
    loading: list[float] = []  # ftlang: share of the loop's time spent assembling batches
    loops = {"ftlang": train_loops.ftlang_loop, "hand loop": train_loops.hand_loop}
    for r in range(args.rounds):
        order = list(loops) if r % 2 == 0 else list(reversed(loops))
        for name in order:
            torch.set_num_threads(threads)
            if name == "ftlang":  # the step's default logging cadence, as users run it
                collate: list[float] = []
                got, seconds, tokens = train_loops.ftlang_loop(data, args.steps, args.batch, 3e-3,
                                                               logging_steps=LOGGING_STEPS, collate_seconds=collate)
                loading.append(sum(collate) / seconds)
            else:
                got, seconds, tokens = train_loops.hand_loop(data, args.steps, args.batch, 3e-3)
                got = train_loops.windows(got, LOGGING_STEPS)
            runs[name].append((seconds, tokens))
            losses[name] = got
    rate = {k: statistics.median(args.steps / s for s, _ in v) for k, v in runs.items()}
    toks = {k: statistics.median(t / s for s, t in v) for k, v in runs.items()}
    same = len(losses["ftlang"]) == len(losses["hand loop"]) and all(
        abs(a - b) <= 2e-6 for a, b in zip(losses["ftlang"], losses["hand loop"]))
    lines = [f"{k}: {rate[k]:.1f} steps/s, {toks[k]:,.0f} tokens/s" for k in runs]
    lines += [f"ftlang / hand loop: **{rate['ftlang'] / rate['hand loop']:.2f}x** steps/s (goal >= 1.0)",
              f"losses equal to 6 digits: {'yes' if same else 'NO'} (final {losses['ftlang'][-1]:.6f} "
              f"vs {losses['hand loop'][-1]:.6f})",
              f"batch assembly (the DataLoader's collator, in the training process): "
              f"{100 * statistics.median(loading):.1f}% of ftlang's loop time",
              f"torch threads: {threads} of {os.cpu_count()} cores (load {os.getloadavg()[0]:.1f})"]
    cmd = (f".venv/bin/python bench/bench_train.py --steps {args.steps} --batch {args.batch} "
           f"--length {args.length} --rounds {args.rounds}")
    env_note = f"{os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}"
    text = "\n".join([f"## LoRA training loop on CPU: ftlang vs hand-written loop ({time.strftime('%Y-%m-%d')})",
                      "", f"Command: `{cmd}` ({env_note}; medians of {args.rounds} alternating rounds, "
                      "training loop only)", "", *[f"- {ln}" for ln in lines], ""])
    report(text, record=not args.no_record)


if __name__ == "__main__":
    main()
