"""How torch's idle OpenMP threads wait, quiet and beside a busy process: libgomp's default
spin against the short spin ftlang sets (ftlang.stdlib.cputhreads.prepare_env).

    .venv/bin/python bench/bench_spin.py [--steps 150] [--rounds 3] [--no-record]

Each variant is its own process (libgomp reads GOMP_SPINCOUNT when torch loads) running
the hand-written LoRA loop of bench/train_loops.py with the thread count ftlang chooses;
"busy" adds one process spinning in pure Python for the whole run, as an editor, a
browser or a second job would. Rounds alternate the variants; medians of steps/s. The
spin count changes no number: the losses of all variants are compared to the last digit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import report

HERE = Path(__file__).resolve().parent

CHILD = '''
import json, sys, time
sys.path.insert(0, {here!r})
if {ftlang_spin}:
    from ftlang.stdlib import cputhreads
    cputhreads.prepare_env()  # what `ft run` does before any step imports torch
import train_loops
import torch
from ftlang.stdlib import cputhreads
torch.set_num_threads(cputhreads.choose())
data = train_loops.examples({steps} * 8, 64)
losses, secs, _ = train_loops.hand_loop(data, {steps}, 8, 3e-3)
print(json.dumps({{"steps_s": {steps} / secs, "losses": losses, "threads": torch.get_num_threads()}}))
'''
BUSY = "while True:\n    pass\n"


def one(steps: int, ftlang_spin: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env["PYTHONWARNINGS"] = "ignore"
    code = CHILD.format(here=str(HERE), ftlang_spin=ftlang_spin, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    from ftlang.stdlib import cputhreads

    res: dict[tuple[str, bool], list[dict]] = {}
    for _ in range(args.rounds):
        for setting in ("quiet", "busy"):
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if setting == "busy" else None
            try:
                for spin in (False, True):
                    res.setdefault((setting, spin), []).append(one(args.steps, spin))
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    med = {k: statistics.median(r["steps_s"] for r in v) for k, v in res.items()}
    same = len({json.dumps(r["losses"]) for v in res.values() for r in v}) == 1
    threads = next(iter(res.values()))[0]["threads"]
    lines = []
    for setting in ("quiet", "busy"):
        d, f = med[(setting, False)], med[(setting, True)]
        lines.append(f"{setting}: libgomp default spin {d:.1f} steps/s, ftlang's (GOMP_SPINCOUNT="
                     f"{cputhreads.SPIN_COUNT}) {f:.1f} steps/s -> **{f / d:.2f}x**")
    lines.append(f"losses identical in every run, to the last digit: {'yes' if same else 'NO'}")
    cmd = f".venv/bin/python bench/bench_spin.py --steps {args.steps} --rounds {args.rounds}"
    env_note = (f"{os.cpu_count()} cores, {platform.machine()}, Python {sys.version.split()[0]}, "
                f"{threads} torch threads, busy = one process spinning in Python")
    text = "\n".join([f"## Idle OpenMP threads: default spin vs ftlang's short spin ({time.strftime('%Y-%m-%d')})", "",
                      f"Command: `{cmd}` ({env_note}; medians of {args.rounds} alternating rounds, "
                      "hand-written LoRA loop, 64x2 Llama, batch 8 x 64)", "",
                      *[f"- {ln}" for ln in lines], ""])
    report(text, record=not args.no_record)


if __name__ == "__main__":
    main()
