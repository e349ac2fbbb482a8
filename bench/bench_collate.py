"""Batch assembly: ftlang's collator (stdlib/examples.make_collator) against the same
collator written with torch.tensor on nested lists, the usual way, in the same run.

    .venv/bin/python bench/bench_collate.py [--batch 8] [--length 64] [--repeat 2000] [--no-record]

Two batches: rows of one length (nothing to pad) and rows of mixed lengths (padded to the
longest). Prints microseconds per batch for each and the ratio (ftlang / torch.tensor;
below 1: ftlang is faster), with the two outputs checked equal first.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # noqa: E402


def plain_collator(pad_id: int) -> Any:
    """The baseline: pad with lists, then torch.tensor on each nested list."""
    import torch

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(ex["input_ids"]) for ex in batch)
        ids, mask, labels = [], [], []
        for ex in batch:
            pad = width - len(ex["input_ids"])
            ids.append(ex["input_ids"] + [pad_id] * pad)
            mask.append([1] * len(ex["input_ids"]) + [0] * pad)
            labels.append(ex["labels"] + [-100] * pad)
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
                "labels": torch.tensor(labels)}

    return collate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2000)
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    import torch
    from ftlang.stdlib.examples import make_collator

    rng = random.Random(0)

    def row(n: int) -> dict[str, list[int]]:
        ids = [rng.randrange(32000) for _ in range(n)]
        return {"input_ids": ids, "labels": [-100] * (n // 4) + ids[n // 4:]}

    batches = {"rows of one length": [row(args.length) for _ in range(args.batch)],
               "mixed lengths, padded": [row(rng.randint(args.length // 2, args.length)) for _ in range(args.batch)]}
    ours, plain = make_collator(0), plain_collator(0)
    lines = []
    for name, batch in batches.items():
        a, b = ours(batch), plain(batch)
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a), name
        times: dict[str, list[float]] = {"ftlang": [], "torch.tensor": []}
        for _ in range(5):  # interleaved rounds; the best of each
            for label, fn in (("ftlang", ours), ("torch.tensor", plain)):
                times[label].append(timeit.timeit(lambda fn=fn, batch=batch: fn(batch), number=args.repeat) / args.repeat)
        best = {k: min(v) for k, v in times.items()}
        lines.append(f"{name}: ftlang {1e6 * best['ftlang']:.1f} us, torch.tensor {1e6 * best['torch.tensor']:.1f} us "
                     f"per batch -> **{best['ftlang'] / best['torch.tensor']:.2f}x**")
    cmd = (f".venv/bin/python bench/bench_collate.py --batch {args.batch} --length {args.length} "
           f"--repeat {args.repeat}")
    text = "\n".join([f"## Batch assembly: ftlang's collator vs torch.tensor ({time.strftime('%Y-%m-%d')})", "",
                      f"Command: `{cmd}` ({os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}; "
                      f"batches of {args.batch} rows up to {args.length} tokens; best of 5 interleaved rounds)", "",
                      *[f"- {ln}" for ln in lines], ""])
    report(text, record=not args.no_record)


if __name__ == "__main__":
    main()
