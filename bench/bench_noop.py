"""No-op `ft run` of the quickstart, as a whole process, against baselines measured here.

    .venv/bin/python bench/bench_noop.py [--repeat 7]

It copies examples/ to a temp folder, runs the quickstart once (training), then times
`ft run` with everything cached (median of N) and, in the same script, two baselines:
`python -c pass` (interpreter start) and `python -c "import torch"` (what a no-op
would cost if it imported torch). Prints the ratios and appends them to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], cwd: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    ft = str(Path(sys.executable).parent / "ft")
    env_note = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "examples"
        shutil.copytree(ROOT / "examples", work, ignore=shutil.ignore_patterns(".ft", "out", "ft.lock"))
        t0 = time.perf_counter()
        subprocess.run([ft, "run", "quickstart.ft"], cwd=work, check=True, capture_output=True)
        full = time.perf_counter() - t0
        noop = timed([ft, "run", "quickstart.ft"], work, args.repeat)
        start = timed([sys.executable, "-c", "pass"], work, args.repeat)
        torch = timed([sys.executable, "-c", "import torch"], work, args.repeat)
    lines = [
        f"full run {full:.1f} s; no-op run median {noop:.3f} s over {args.repeat}",
        f"baseline `python -c pass` {start:.3f} s -> no-op is {noop / start:.1f}x interpreter start",
        f"baseline `python -c 'import torch'` {torch:.3f} s -> no-op is {noop / torch:.2f}x of a torch import",
    ]
    print("\n".join(lines))
    with (ROOT / "bench" / "RESULTS.md").open("a") as f:
        f.write(f"\n## no-op `ft run` of the quickstart ({time.strftime('%Y-%m-%d')}, {env_note})\n\n")
        f.write("Command: `.venv/bin/python bench/bench_noop.py`\n\n")
        f.write("".join(f"- {ln}\n" for ln in lines))


if __name__ == "__main__":
    main()
