"""`ft check` of a generated N-node file: this checkout against an earlier revision of
ftlang, in the same run, interleaved (this machine's speed drifts by tens of percent over
minutes, so only a ratio measured side by side says whether a change made it faster).

    .venv/bin/python bench/bench_against.py REV [--nodes 1000] [--rounds 7] [--project nodes|parquet] [--no-record]

REV (a commit, a tag) is checked out with `git worktree` into a temporary folder and
imported from there (a folder of links laid out as pyproject's package-dir maps ftlang's
packages; this checkout is imported the same way), with this checkout's virtual
environment: the same libraries, only ftlang differs. Each round runs, for each side in turn, `ft check` cold (no .ft/), after a
one-block edit (bench_compile.edit; .ft/ holds the last compile's memo) and unchanged.
Prints medians and the ratios this / REV (below 1: this checkout is faster).
`--project parquet`: bench_curate's pipeline instead (a Parquet dataset of 10,000 rows and
a curate over it; the edit changes the split's seed).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_curate  # noqa: E402
from _common import report  # noqa: E402
from bench_check import generate  # noqa: E402
from bench_compile import edit  # noqa: E402

PACKAGES = {"lang": "lang", "compiler": "compiler", "runtime": "runtime", "stdlib": "stdlib"}  # ftlang.X -> X/


def checkout(rev: str, into: Path) -> Path:
    """A folder that imports as ftlang at `rev`: PYTHONPATH for the other side."""
    tree = into / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
    return links(tree, into)


def links(tree: Path, into: Path) -> Path:
    """A folder whose ftlang/ links to `tree`'s packages; both sides import through one
    (the same import machinery: an editable install's finder is slower than a path)."""
    pkg = into / "path" / "ftlang"
    pkg.mkdir(parents=True)
    for f in (tree / "ftlang").glob("*.py"):
        (pkg / f.name).symlink_to(f)
    for sub, folder in PACKAGES.items():
        (pkg / sub).symlink_to(tree / folder)
    folders = [tree / "ftlang", *(tree / f for f in PACKAGES.values())]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *map(str, folders)], check=True)
    return into / "path"


def timed(cwd: Path, pythonpath: str, file: str) -> float:
    env = dict(os.environ, NO_COLOR="1", PYTHONPATH=pythonpath)
    t0 = time.perf_counter()
    # -m from a folder with no ftlang/ in it: the package comes from PYTHONPATH
    subprocess.run([sys.executable, "-m", "ftlang.runtime.cli", "check", file], cwd=cwd, env=env,
                   check=True, capture_output=True)
    return time.perf_counter() - t0


def project(folder: Path, args: argparse.Namespace) -> Path:
    if args.project == "nodes":
        return generate(folder, args.nodes).parent
    folder.mkdir(parents=True)
    bench_curate.generate(folder, 10_000)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("rev")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--project", choices=("nodes", "parquet"), default="nodes")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    here = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", *PACKAGES, "ftlang"],
                           capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp())
    try:
        other = checkout(rev, tmp / "rev")
        sides = {"this": str(links(ROOT, tmp / "this")), rev: str(other)}
        folders = {s: project(tmp / f"p-{i}", args) for i, s in enumerate(sides)}
        file = "big.ft" if args.project == "nodes" else "pipeline.ft"
        times: dict[tuple[str, str], list[float]] = {(s, w): [] for s in sides for w in ("cold", "edit", "same")}
        for s, folder in folders.items():  # a first run of each: files cached by the OS alike
            timed(folder, sides[s], file)
        for k in range(args.rounds):
            for s, folder in folders.items():
                shutil.rmtree(folder / ".ft", ignore_errors=True)
                times[(s, "cold")].append(timed(folder, sides[s], file))
                (folder / ".ft").mkdir()
                timed(folder, sides[s], file)  # the memo of the file as it is
                path = folder / file
                path.write_text(edit(path.read_text(), k) if args.project == "nodes" else
                                re.sub(r"seed = \d+", f"seed = {k + 2}", path.read_text()))
                times[(s, "edit")].append(timed(folder, sides[s], file))
                times[(s, "same")].append(timed(folder, sides[s], file))
            print(f"round {k + 1}: " + ", ".join(f"{s} {w} {times[(s, w)][-1]:.3f} s" for s in sides
                                                for w in ("cold", "edit", "same")), flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "rev" / "tree")],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {key: statistics.median(v) for key, v in times.items()}
    names = {"cold": "cold (no .ft/)", "edit": "after a one-block edit", "same": "unchanged"}
    label = f"{here}{' + uncommitted changes' if dirty else ''}"
    lines = [f"`ft check` {names[w]}: this {med[('this', w)]:.3f} s, {rev} {med[(rev, w)]:.3f} s -> "
             f"**{med[('this', w)] / med[(rev, w)]:.2f}x**" for w in ("cold", "edit", "same")]
    cmd = f".venv/bin/python bench/bench_against.py {args.rev} --nodes {args.nodes} --rounds {args.rounds}"
    what = f"{args.nodes:,} nodes"
    if args.project == "parquet":
        cmd, what = cmd.replace(f" --nodes {args.nodes}", "") + " --project parquet", "a Parquet dataset and a curate"
    env_note = f"{os.cpu_count()} cores, {platform.machine()}, Python {sys.version.split()[0]}"
    text = "\n".join([f"## `ft check` of {what}: {label} against {rev} ({time.strftime('%Y-%m-%d')})",
                      "", f"Command: `{cmd}` ({env_note}; medians of {args.rounds} interleaved rounds, "
                      "whole processes; below 1x: this checkout is faster)", "",
                      *[f"- {ln}" for ln in lines], ""])
    report(text, record=not args.no_record)


if __name__ == "__main__":
    main()
