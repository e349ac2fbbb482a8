"""`make bench`: runs every benchmark in bench/, each against its own baseline in the same
run; each appends its section (command, figures, ratios) to bench/RESULTS.md, under a
heading this script writes first with the machine and the date.

    .venv/bin/python bench/run_all.py [--full]

Sizes are chosen to finish in about 20 minutes on 2 cores; `--full` runs the issue's
full sizes (10M curate rows, 20,000-node compile), which take longer. Timings on a shared
machine are noisy: read the ratios, which are measured side by side.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Invocations per script: (the 20-minute run, the full run), each a list of argument
# lists. Scripts not named run once, bare.
ARGS = {
    "bench_compile.py": ([["--sizes", "100,1000,5000", "--repeat", "3"]],
                         [["--sizes", "100,1000,5000,20000", "--repeat", "3"]]),
    # 1M rows with every baseline; 10M (the size) without `datasets` (minutes there),
    # and once more under a memory cap.
    "bench_curate.py": ([["--rows", "1000000"], ["--rows", "10000000", "--memory", "1GB", "--no-datasets"]],
                        [["--rows", "10000000", "--memory", "1GB"]]),
    "bench_noop.py": ([["--repeat", "7"]], [["--repeat", "9"]]),
    # The tiny model shows the per-step overhead at its largest; the larger one a step
    # where the model's compute, not the loop around it, takes the time.
    "bench_train.py": ([["--steps", "200", "--rounds", "4"], ["--shape", "256x4", "--steps", "50", "--rounds", "4"]],
                       [["--steps", "200", "--rounds", "6"], ["--shape", "256x4", "--steps", "100", "--rounds", "6"]]),
}

# Scripts `make bench` does not run, and why.
SKIP = {"bench_against.py": "it compares with a revision named on its command line"}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {sys.version.split()[0]}, load average at start {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="the issue's full sizes (longer than 20 minutes)")
    args = ap.parse_args()
    with (HERE / "RESULTS.md").open("a") as f:
        f.write(f"\n# `make bench` run of {time.strftime('%Y-%m-%d %H:%M')}\n\nMachine: {machine()}\n")
    started = time.perf_counter()
    failed = []
    for script in sorted(p for p in HERE.glob("bench_*.py") if p.name not in SKIP):
        for extra in ARGS.get(script.name, ([[]], [[]]))[1 if args.full else 0]:
            print(f"== {script.name} {' '.join(extra)}", flush=True)
            if subprocess.run([sys.executable, str(script), *extra]).returncode != 0:
                failed.append(script.name)  # one broken benchmark must not hide the others
    total = (f"all benchmarks in {time.perf_counter() - started:.0f} s"
             + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    print(f"== {total}")
    with (HERE / "RESULTS.md").open("a") as f:  # the run's own length, beside its figures
        f.write(f"\n`make bench`{' --full' if args.full else ''}: {total}\n")
    sys.exit(1 if failed else 0)
