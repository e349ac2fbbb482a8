"""`ft check` and `ft plan` on generated files of growing size: is compile time linear?

    .venv/bin/python bench/bench_compile.py [--sizes 100,1000,5000,20000] [--repeat 3] [--no-record]

Files come from bench_check.generate (every block kind, in groups of 10 nodes). For each
size it times whole `ft check` and `ft plan` processes (best of --repeat: the least
disturbed by other load) and `python -c pass` as the fixed cost, and prints, per step up
in size, the growth of (time - interpreter start) over the growth in nodes: 1.0 is
linear. Goal: linear, and 1,000 nodes within 0.3 s.

Three states of the project: cold (a file never run: no .ft/, everything compiled), after
an edit of one block (.ft/ holds the last compile's parse memo: only that block is parsed
again, runtime/parsememo.py), and unchanged (the compiled-program cache answers).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report  # noqa: E402
from bench_check import generate  # noqa: E402


def best(cmd: list[str], cwd: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def edit(text: str, k: int) -> str:
    """`text` with the k-th train block's `max_steps = 10` made 11: one block's value changes."""
    parts = text.split("max_steps = 10")
    k = k % (len(parts) - 1)
    return "max_steps = 10".join(parts[:k + 1]) + "max_steps = 11" + "max_steps = 10".join(parts[k + 1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,5000,20000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ft = str(Path(sys.executable).parent / "ft")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        start = best([sys.executable, "-c", "pass"], Path(tmp), args.repeat)
        for n in sizes:
            folder = Path(tmp) / f"n{n}"
            path = generate(folder, n)
            # A file never run has no .ft/: every `ft check` here compiles from scratch.
            check = best([ft, "check", path.name], folder, args.repeat)
            plan = best([ft, "plan", path.name], folder, args.repeat)
            (folder / ".ft").mkdir()
            subprocess.run([ft, "check", path.name], cwd=folder, check=True, capture_output=True)
            edited = []
            for k in range(args.repeat):  # each time another block's value changes
                path.write_text(edit(path.read_text(), k))
                t0 = time.perf_counter()
                subprocess.run([ft, "check", path.name], cwd=folder, check=True, capture_output=True)
                edited.append(time.perf_counter() - t0)
            same = best([ft, "check", path.name], folder, args.repeat)
            rows.append((n, check, plan, min(edited), same))
            print(f"{n} nodes: check {check:.2f} s, plan {plan:.2f} s, check after a one-block edit "
                  f"{min(edited):.2f} s, unchanged {same:.2f} s", flush=True)
    lines = [f"baseline `python -c pass`: {start:.3f} s"]
    for i, (n, check, plan, edited, same) in enumerate(rows):
        line = (f"{n:,} nodes: `ft check` {check:.3f} s, `ft plan` {plan:.3f} s cold; `ft check` after "
                f"a one-block edit **{edited:.3f} s**, unchanged {same:.3f} s")
        if i:
            pn, pc, pp, _, _ = rows[i - 1]
            grow = n / pn
            line += (f"; growth over {pn:,} nodes / node growth: check "
                     f"**{((check - start) / (pc - start)) / grow:.2f}**, plan "
                     f"**{((plan - start) / (pp - start)) / grow:.2f}** (1.00 = linear)")
        lines.append(line)
    cmd = f".venv/bin/python bench/bench_compile.py --sizes {args.sizes} --repeat {args.repeat}"
    env_note = f"{os.cpu_count()} cores, {platform.machine()}, Python {sys.version.split()[0]}"
    text = "\n".join([f"## compile time by size: `ft check` / `ft plan` ({time.strftime('%Y-%m-%d')})", "",
                      f"Command: `{cmd}` ({env_note}; best of {args.repeat} whole-process runs)", "",
                      *[f"- {ln}" for ln in lines], ""])
    report(text, record=not args.no_record)


if __name__ == "__main__":
    main()
