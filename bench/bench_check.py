"""`ft check` on a generated 1,000-node file, as a whole process, against baselines
measured in the same script.

    .venv/bin/python bench/bench_check.py [--nodes 1000] [--repeat 7] [--no-record]

The file mixes every block kind the way a large project would (datasets, curates with
SQL and splits, templates, models, trains with presets and a sweep, evals with
assertions, exports). Baselines: `python -c pass` (interpreter start) and parsing the
same file in-process (`ftlang.lang.parser.parse`, no checks). Target: under 1 s.
Prints the figures and appends them, with this command, to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# One "group" is 10 nodes; the file is `nodes / 10` groups.
GROUP = '''\
dataset raw{i} {{
  source = jsonl("data/tasks.jsonl")
  schema {{ prompt: str, completion: str }}
}}

dataset text{i} {{
  source = jsonl("data/corpus.jsonl")
}}

curate clean{i} {{
  from = raw{i}
  sql """
    SELECT prompt, completion
    FROM raw{i}
    WHERE length(completion) BETWEEN 1 AND 4000
  """
  split {{ train = 0.9, heldout = 0.1, by = prompt, seed = {i} }}
}}

template chat{i} = chatml(system = "You are assistant {i}.")

model base{i} {{
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 128, data = text{i})
}}

train pre{i} {{
  from      = base{i}
  data      = text{i}
  objective = clm
  max_steps = 10
}}

train sft{i} {{
  from     = pre{i}
  data     = clean{i}.train
  method   = dora(r = 8)
  template = chat{i}
  lr       = 2e-4
  epochs   = 2
}}

train polish{i} {{
  from   = sft{i}
  data   = clean{i}.train
  method = lora(r = 4, alpha = 8)
  lr     = 5e-5
}}

eval report{i} {{
  models  = [base{i}, sft{i}, polish{i}]
  data    = clean{i}.heldout
  metrics = [loss, perplexity]
  assert polish{i}.loss <= base{i}.loss * 1.5
}}

export release{i} {{
  model = polish{i}
  to    = "out/release{i}"
}}
'''


def generate(folder: Path, nodes: int) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    with (folder / "data" / "tasks.jsonl").open("w") as f:
        for k in range(50):
            f.write(json.dumps({"prompt": f"What is {k} + {k}?", "completion": str(2 * k)}) + "\n")
    with (folder / "data" / "corpus.jsonl").open("w") as f:
        for k in range(50):
            f.write(json.dumps({"text": f"The number {k} is {'even' if k % 2 == 0 else 'odd'}."}) + "\n")
    parts = ["ft 0.1", "use stdlib.methods { dora }", ""]
    parts += [GROUP.format(i=i) for i in range(max(1, nodes // 10))]
    path = folder / "big.ft"
    path.write_text("\n".join(parts))
    return path


def timed(cmd: list[str], cwd: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    ft = str(Path(sys.executable).parent / "ft")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = generate(work, args.nodes)
        out = subprocess.run([ft, "check", path.name], cwd=work, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"ft check failed on the generated file:\n{out.stderr[-3000:]}")
        steps = out.stdout.strip()
        lines_of_ft = len(path.read_text().splitlines())
        check = timed([ft, "check", path.name], work, args.repeat)
        start = timed([sys.executable, "-c", "pass"], work, args.repeat)
        parse_code = ("from ftlang.lang.parser import parse; "
                      f"parse(open({path.name!r}).read(), {path.name!r})")
        parse = timed([sys.executable, "-c", parse_code], work, args.repeat)
    cmd = f".venv/bin/python bench/bench_check.py --nodes {args.nodes} --repeat {args.repeat}"
    env_note = f"{os.cpu_count()} cores, {platform.machine()}, Python {sys.version.split()[0]}"
    verdict = "under" if check < 1.0 else "OVER"
    report = [
        f"## bench_check: `ft check` on a generated {args.nodes}-node file "
        f"({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `{cmd}` ({env_note}; median of {args.repeat} whole-process runs)",
        "",
        f"- file: {lines_of_ft} lines; `ft check` says: {steps}",
        f"- `ft check`: **{check:.3f} s** ({verdict} the 1 s target)",
        f"- baseline `python -c pass`: {start:.3f} s -> ft check is {check / start:.1f}x interpreter start",
        f"- baseline parse only (`python -c` + lark parse of the same file): {parse:.3f} s "
        f"-> ft check is {check / parse:.2f}x parsing",
        f"- checking beyond parsing: {check - parse:.3f} s "
        f"({(check - parse) / max(args.nodes, 1) * 1e3:.2f} ms per node)",
        "",
    ]
    text = "\n".join(report)
    print(text)
    if not args.no_record:
        results = ROOT / "bench" / "RESULTS.md"
        prefix = "" if results.exists() else "# Benchmark results\n\n"
        with results.open("a") as f:
            f.write(prefix + text + "\n")


if __name__ == "__main__":
    main()
