"""Wall time of a 4-point training sweep with `ft run --jobs 1` vs `--jobs 2`, in the same run.

    .venv/bin/python bench/bench_jobs.py [--steps 60] [--no-record]

Builds one project (a tiny model, a 4-point lr sweep), runs it once so the data and the
model are cached, then times `ft run --force t` (the 4 trainings only) three ways: --jobs 1
(in process, torch's default threads: every core), --jobs 1 with OMP_NUM_THREADS=cores/2
(what each job of --jobs 2 gets), and --jobs 2. torch's CPU reductions depend on the thread
count, so the bytes are compared where the threads are the same: --jobs 2 against --jobs 1
at cores/2 threads (they must be equal, else the script fails); whether the default
--jobs 1 gives the same bytes too is printed. Prints the ratios and appends to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FT = str(Path(sys.executable).parent / "ft")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import corpus_project  # noqa: E402

SWEEP = '''ft 0.1
dataset corpus {{ source = jsonl("data/corpus.jsonl") }}
model base {{
  init = tiny(hidden = 64, layers = 2, heads = 2, vocab = 256, context = 64, data = corpus)
}}
train t {{
  from = base
  data = corpus
  objective = clm
  lr = sweep [1e-3, 2e-3, 3e-3, 4e-3]
  max_steps = {steps}
  max_length = 32
  batch_size = 8
}}
'''


def project(root: Path, steps: int) -> Path:
    return corpus_project(root, SWEEP.format(steps=steps))


def digests(root: Path) -> dict[str, str]:
    out = {}
    for k in (root / ".ft" / "keys").rglob("*.json"):
        d = json.loads(k.read_text())
        out[d["node"]] = d["digest"]
    return out


def timed(root: Path, jobs: int, threads: int | None = None) -> float:
    env = dict(os.environ, NO_COLOR="1")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    t0 = time.monotonic()
    r = subprocess.run([FT, "run", "p.ft", "--force", "t", "--jobs", str(jobs)], cwd=root,
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"ft run --jobs {jobs} failed:\n{r.stderr}")
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = project(Path(d) / "sweep", args.steps)
        subprocess.run([FT, "run", "p.ft"], cwd=root, check=True, capture_output=True)
        cores = len(os.sched_getaffinity(0))
        half = max(1, cores // 2)
        one = timed(root, 1)
        default = digests(root)
        one_half = timed(root, 1, half)
        base = digests(root)
        two = timed(root, 2)
        same = digests(root) == base
    if not same:
        sys.exit(f"the artifacts of --jobs 2 and --jobs 1 at {half} threads differ")
    load = os.getloadavg()[0]
    line = (f"4-point sweep ({args.steps} steps each): --jobs 1 {one:.1f} s, --jobs 1 at {half} thread(s) "
            f"{one_half:.1f} s, --jobs 2 {two:.1f} s; ratio --jobs 1 / --jobs 2: {one / two:.2f}x "
            f"(at equal threads: {one_half / two:.2f}x); digests of --jobs 2 = --jobs 1 at {half} thread(s): "
            f"yes; = --jobs 1 at {cores} threads: {'yes' if default == base else 'no'} "
            f"({cores} cores, load {load:.1f})")
    print(line)
    if not args.no_record:
        with (ROOT / "bench" / "RESULTS.md").open("a") as f:
            f.write(f"\n## --jobs, {time.strftime('%Y-%m-%d')}\n\n`.venv/bin/python bench/bench_jobs.py "
                    f"--steps {args.steps}` ({platform.machine()}, {cores} cores, Python "
                    f"{platform.python_version()}, load average {load:.1f} at the end)\n\n{line}\n")


if __name__ == "__main__":
    main()
