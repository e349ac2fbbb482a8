"""A second project with a warm remote cache vs a cold run of the same pipeline, in the same run.

    .venv/bin/python bench/bench_remote.py [--steps 60] [--no-record]

Project A runs the pipeline (a tiny model, 2 trainings) with a folder remote and uploads
everything; project B (another temp folder, the same files) then runs with that remote
(warm) and project C without it (cold). Prints both wall times, their ratio, and the bytes
B downloaded (the remote's object tars) vs the bytes C computed (its objects folder).
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
FT = str(Path(sys.executable).parent / "ft")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import corpus_project  # noqa: E402

PIPE = '''ft 0.1
dataset corpus {{ source = jsonl("data/corpus.jsonl") }}
model base {{
  init = tiny(hidden = 64, layers = 2, heads = 2, vocab = 256, context = 64, data = corpus)
}}
train t {{
  from = base
  data = corpus
  objective = clm
  lr = sweep [1e-3, 3e-3]
  max_steps = {steps}
  max_length = 32
  batch_size = 8
}}
'''


def project(root: Path, steps: int) -> Path:
    return corpus_project(root, PIPE.format(steps=steps))


def run(root: Path, *extra: str) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run([FT, "run", "p.ft", *extra], cwd=root, capture_output=True, text=True,
                       env=dict(os.environ, NO_COLOR="1"))
    if r.returncode != 0:
        sys.exit(f"ft run failed in {root}:\n{r.stderr}")
    return time.monotonic() - t0, r.stderr


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        remote = Path(d) / "team-cache"
        run(project(Path(d) / "a", args.steps), "--remote", str(remote))
        warm, err = run(project(Path(d) / "b", args.steps), "--remote", str(remote))
        cold, _ = run(project(Path(d) / "c", args.steps))
        trained = [ln for ln in err.splitlines() if ln.strip().startswith("done ")]
        down = size(remote / "objects")
        computed = size(Path(d) / "c" / ".ft" / "objects")
    load = os.getloadavg()[0]
    line = (f"warm remote {warm:.1f} s vs cold {cold:.1f} s: {cold / warm:.1f}x faster; downloaded "
            f"{down / 1e6:.2f} MB (objects computed cold: {computed / 1e6:.2f} MB); steps run with the warm "
            f"remote: {len(trained)}")
    print(line)
    if not args.no_record:
        with (ROOT / "bench" / "RESULTS.md").open("a") as f:
            f.write(f"\n## Remote cache, {time.strftime('%Y-%m-%d')}\n\n`.venv/bin/python bench/bench_remote.py "
                    f"--steps {args.steps}` ({platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
                    f"load average {load:.1f} at the end)\n\n{line}\n")


if __name__ == "__main__":
    main()
