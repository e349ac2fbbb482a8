"""Optuna TPE (8 trials) against an 8-point grid over the same learning-rate range, in one
`.ft` file and one run, on a tiny task; then a second `ft run` that must train nothing.

    .venv/bin/python bench/bench_search.py [--trials 8] [--keep DIR]

The file has two train blocks over the same data, model and steps: `grid` sweeps lr over 8
log-spaced values in [1e-4, 0.3] with `select = min loss on parts.heldout`; `tpe` searches
lr = search(loguniform(1e-4, 0.3)) with search { trials = 8, sampler = tpe, startup = 4,
objective = min loss on parts.heldout }. Both measure the winner the same way (select's
completion loss on the held-out rows). Prints the best loss of each, their ratio (tpe / grid:
<= 1 means TPE found a loss no worse than the grid's), every trial's lr and loss, and the
second run's wall time and how many steps it ran.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
GRID = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
WORDS = "red blue green fast slow cold warm tall short bright dark soft loud quiet".split()

FT = """ft 0.1

dataset tasks {{ source = jsonl("tasks.jsonl") }}

curate parts {{
  sql \"\"\"SELECT prompt, completion FROM tasks\"\"\"
  split {{ train = 0.75, heldout = 0.25, by = prompt, seed = 1 }}
}}

model base {{ init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 300, context = 64, data = tasks) }}

train grid {{
  from = base
  data = parts.train
  method = full
  lr = sweep [{grid}]
  max_steps = {steps}
  batch_size = 8
  select = min loss on parts.heldout
}}

train tpe {{
  from = base
  data = parts.train
  method = full
  lr = search(loguniform(1e-4, 3e-1))
  max_steps = {steps}
  batch_size = 8
  search {{ trials = {trials}, sampler = tpe, startup = 4, objective = min loss on parts.heldout }}
}}
"""


def write_project(folder: Path, trials: int, steps: int) -> Path:
    rng = random.Random(3)
    with open(folder / "tasks.jsonl", "w") as f:
        for _ in range(48):
            a, b = rng.sample(WORDS, 2)
            f.write(json.dumps({"prompt": f"{a} {b} ->", "completion": f" {b} {a}"}) + "\n")
    ft = folder / "search.ft"
    ft.write_text(FT.format(grid=", ".join(f"{v:g}" for v in GRID), trials=trials, steps=steps))
    return ft


def ft(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    out = subprocess.run([str(BIN / "ft"), *args], cwd=cwd, capture_output=True, text=True,
                         env={"NO_COLOR": "1", "HF_HUB_OFFLINE": "1", "PATH": str(BIN) + ":/usr/bin:/bin"})
    return out, time.monotonic() - t0


def results(cwd: Path, run: str) -> dict[str, dict[str, Any]]:
    """The ledger's meta of one run's nodes (ft show --json)."""
    out, _ = ft("show", "search.ft", run, "--json", cwd=cwd)
    if out.returncode != 0:
        raise SystemExit(out.stdout + out.stderr)
    data = json.loads(out.stdout)
    return {n["node"]: n.get("meta") or {} for n in data}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it")
    a = ap.parse_args()
    folder = a.keep or Path(tempfile.mkdtemp(prefix="ft-bench-search-"))
    folder.mkdir(parents=True, exist_ok=True)
    write_project(folder, a.trials, a.steps)
    first, t1 = ft("run", "search.ft", cwd=folder)
    if first.returncode != 0:
        raise SystemExit(first.stdout + first.stderr)
    second, t2 = ft("run", "search.ft", cwd=folder)
    # ft prints its status lines on stderr
    ran_again = len(re.findall(r"^\s*run\s", second.stdout + second.stderr, re.M))
    run = re.search(r"\(run ([\w-]+)\)", first.stdout + first.stderr)
    if run is None:
        raise SystemExit("no run id in the first run's output:\n" + first.stderr[-2000:])
    meta = results(folder, run.group(1))
    grid = meta["select.grid"]["scores"]
    tpe = meta["search.tpe"]["scores"]
    best_grid, best_tpe = min(grid.values()), min(tpe.values())
    print(f"grid ({len(grid)} points): best loss {best_grid:.4f} ({meta['select.grid']['selected']})")
    print(f"tpe  ({len(tpe)} trials): best loss {best_tpe:.4f} ({meta['search.tpe']['selected']})")
    print(f"ratio tpe/grid: {best_tpe / best_grid:.3f} (<= 1: TPE no worse)")
    for node, m in sorted(meta.items()):
        rec = m.get("search")
        if isinstance(rec, dict):
            print(f"  {node}: lr {rec['params']['lr']:.3g} -> {rec['value']}")
    done = "nothing to do" in second.stdout + second.stderr
    print(f"first run {t1:.1f} s; second run {t2:.1f} s, steps run again: {ran_again}"
          f"{' (nothing to do)' if done else ''}")


if __name__ == "__main__":
    main()
