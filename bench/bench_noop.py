"""No-op `ft run` / `ft status` of the quickstart against DVC's no-op on the same pipeline,
measured in the same run.

    .venv/bin/python bench/bench_noop.py [--repeat 7] [--project DIR] [--no-record]

It copies examples/ to a temp folder and runs the quickstart once (training; or reuses
`--project`, a folder where it already ran), then builds the equivalent DVC project in
another temp folder: the same two input files and 8 stages (the quickstart's 8 steps
that are not plain inputs: 2 curates, model, template, 2 trains, eval, export), each a
`python` command with the same dependencies, writing outputs of the quickstart's sizes.
`dvc repro` runs it once. Then, interleaved (one of each per round, so machine load hits
both alike), it times whole processes: `ft run`, `dvc repro`, `ft status`, `dvc status`,
and `python -c pass`. Medians of wall time and of CPU time (user+sys of the child).
Needs DVC: `pip install -e .[bench]` (`make bench` does it).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import report

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# name -> (deps, outs, bytes written per out): the quickstart's graph, as DVC stages.
STAGES = {
    "vocab_text": (["data/corpus.jsonl", "data/tasks.jsonl"], ["out/vocab_text.parquet"], 600_000),
    "task_split": (["data/tasks.jsonl"], ["out/task_split"], 200_000),
    "base": (["out/vocab_text.parquet"], ["out/base"], 2_000_000),
    "qa": ([], ["out/qa.json"], 200),
    "pretrained": (["out/base", "data/corpus.jsonl"], ["out/pretrained"], 2_000_000),
    "sft": (["out/pretrained", "out/task_split", "out/qa.json"], ["out/sft"], 2_500_000),
    "report": (["out/base", "out/pretrained", "out/sft", "out/task_split"], ["out/report.json"], 2_000),
    "release": (["out/sft"], ["release"], 2_000_000),
}
STAGE_PY = '''import os, sys
out, size = sys.argv[1], int(sys.argv[2])
if "." in os.path.basename(out):
    open(out, "wb").write(os.urandom(size))
else:
    os.makedirs(out, exist_ok=True)
    for i in range(4):
        open(os.path.join(out, f"part{i}.bin"), "wb").write(os.urandom(size // 4))
'''


def dvc_project(folder: Path, data: Path) -> Path:
    """The quickstart's pipeline as a DVC project (no git: `dvc init --no-scm`)."""
    folder.mkdir(parents=True)
    shutil.copytree(data, folder / "data")
    (folder / "out").mkdir()
    (folder / "stage.py").write_text(STAGE_PY)
    lines = ["stages:"]
    for name, (deps, outs, size) in STAGES.items():
        lines += [f"  {name}:", f"    cmd: {sys.executable} stage.py {outs[0]} {size}",
                  "    deps:", "      - stage.py", *[f"      - {d}" for d in deps],
                  "    outs:", *[f"      - {o}" for o in outs]]
    (folder / "dvc.yaml").write_text("\n".join(lines) + "\n")
    env = _env()
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=folder, check=True, env=env)
    subprocess.run([str(BIN / "dvc"), "config", "core.analytics", "false"], cwd=folder, check=True, env=env)
    subprocess.run([str(BIN / "dvc"), "repro", "-q"], cwd=folder, check=True, env=env, capture_output=True)
    return folder


def _env() -> dict[str, str]:
    return dict(os.environ, NO_COLOR="1", DVC_NO_ANALYTICS="1")


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU (user + sys) seconds of one whole process."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env=_env())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cache_hit(work: Path) -> str:
    """Whether a no-op `ft run` was served by the compiled-program cache (no lark import)."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "ftlang.runtime.cli", "run",
                        "quickstart.ft", "-q"], cwd=work, capture_output=True, text=True, env=_env())
    heavy = sorted({ln.rsplit("|", 1)[1].strip().split(".")[0] for ln in r.stderr.splitlines()
                    if ln.startswith("import time:")} & {"lark", "sqlglot", "networkx", "torch", "duckdb"})
    hit = "lark" not in heavy
    return f"compiled-program cache {'hit' if hit else 'MISS'}; heavy modules imported: {', '.join(heavy) or 'none'}"


def ledger_cost() -> float:
    """One ledger write of a 10-node no-op run (a journal line; the ledger module's import
    included), in a fresh process. Readers fold the journal into DuckDB later."""
    with tempfile.TemporaryDirectory() as tmp:
        code = ("import time; t = time.perf_counter(); from pathlib import Path; "
                "from ftlang.runtime import ledger; "
                "recs = [ledger.NodeRecord(f'n.{i}', 'curate', 'cached', 'k', 'd') for i in range(10)]; "
                f"ledger.record(Path({tmp!r}), 'bench-run', 'quickstart.ft', 'run', 0.0, 1.0, 'ok', recs); "
                "print(time.perf_counter() - t)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--project", type=Path, help="a copy of examples/ where the quickstart already ran")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    if not (BIN / "dvc").exists():
        raise SystemExit("DVC is not installed: pip install -e '.[bench]' (make bench does it)")
    ft = str(BIN / "ft")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.project.resolve() if args.project else Path(tmp) / "examples"
        full = None
        if not args.project:
            shutil.copytree(ROOT / "examples", work, ignore=shutil.ignore_patterns(".ft", "out", "ft.lock"))
            t0 = time.perf_counter()
            subprocess.run([ft, "run", "quickstart.ft"], cwd=work, check=True, capture_output=True)
            full = time.perf_counter() - t0
        dvc_dir = dvc_project(Path(tmp) / "dvc", work / "data")
        subprocess.run([ft, "run", "quickstart.ft"], cwd=work, check=True, capture_output=True)  # warm
        cmds = {
            "ft run": ([ft, "run", "quickstart.ft"], work),
            "dvc repro": ([str(BIN / "dvc"), "repro"], dvc_dir),
            "ft status": ([ft, "status", "quickstart.ft"], work),
            "dvc status": ([str(BIN / "dvc"), "status"], dvc_dir),
            "python -c pass": ([sys.executable, "-c", "pass"], work),
        }
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
        for _ in range(args.repeat):  # interleaved: each round runs every command once
            for name, (cmd, cwd) in cmds.items():
                samples[name].append(timed(cmd, cwd))
        hit = cache_hit(work)
        ledger_s = ledger_cost()
    wall = {k: statistics.median(w for w, _ in v) for k, v in samples.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in samples.items()}
    lines = [f"{k}: wall {wall[k]:.3f} s, CPU {cpu[k]:.3f} s" for k in cmds]
    lines += [
        f"no-op `ft run` / `dvc repro`: **{wall['ft run'] / wall['dvc repro']:.2f}x** wall, "
        f"{cpu['ft run'] / cpu['dvc repro']:.2f}x CPU (goal <= 0.5x)",
        f"`ft status` / `dvc status`: **{wall['ft status'] / wall['dvc status']:.2f}x** wall, "
        f"{cpu['ft status'] / cpu['dvc status']:.2f}x CPU",
        f"no-op `ft run` is {wall['ft run'] / wall['python -c pass']:.1f}x interpreter start",
        f"ledger write (one journal line, fresh process): {ledger_s:.3f} s "
        f"= {ledger_s / wall['ft run']:.0%} of the no-op",
        hit,
    ]
    if full is not None:
        lines.insert(0, f"first full run of the quickstart: {full:.1f} s")
    cmd = f".venv/bin/python bench/bench_noop.py --repeat {args.repeat}"
    env_note = (f"{os.cpu_count()} cores, {platform.machine()}, Python {sys.version.split()[0]}, "
                f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', 'unset')}")
    text = "\n".join([f"## no-op `ft run` / `ft status` vs DVC 8-stage pipeline ({time.strftime('%Y-%m-%d')})",
                      "", f"Command: `{cmd}` ({env_note}; medians of {args.repeat} interleaved rounds, "
                      "whole processes)", "", *[f"- {ln}" for ln in lines], ""])
    report(text, record=not args.no_record)


if __name__ == "__main__":
    main()
