"""`make bench`: runs every benchmark in bench/, each against its own baseline in the same
run; each appends its section (command, figures, ratios) to bench/RESULTS.md, under a
heading this script writes first with the machine and the date. At the end it rewrites the
summary at the top of RESULTS.md: the headline figures (the bold ones) of this run's
sections, each under its section's title, so the current state is read without scrolling
through the history below it.

    .venv/bin/python bench/run_all.py [--full]

Sizes are chosen to finish in about 20 minutes on 2 cores; `--full` adds what takes
longer (`datasets` over the 10M curate rows, more rounds of the training and compile runs). Timings on a shared
machine are noisy: read the ratios, which are measured side by side.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Invocations per script: (the 20-minute run, the full run), each a list of argument
# lists. Scripts not named run once, bare.
ARGS = {
    # The four sizes in both runs.
    "bench_compile.py": ([["--sizes", "100,1000,5000,20000", "--repeat", "3"]],
                         [["--sizes", "100,1000,5000,20000", "--repeat", "5"]]),
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


RUN_HEADING = "# `make bench` run of "
SUMMARY_START = "<!-- latest: written by bench/run_all.py -->"
SUMMARY_END = "<!-- /latest -->"


def summary(text: str) -> str:
    """The summary block for RESULTS.md `text`: the newest `make bench` run's machine line
    and, per section, its title, its command and its headline lines (those with a bold
    figure; without one, its first line of prose). Tables stay below."""
    at = text.rfind(RUN_HEADING)
    if at < 0:
        return ""
    run = text[at:].splitlines()
    out = [SUMMARY_START, "", f"## Latest `make bench` run ({run[0][len(RUN_HEADING):].strip()}): headline figures", ""]
    out += [line for line in run[1:] if line.startswith("Machine:")][:1]
    sections: list[list[str]] = []
    for line in run[1:]:
        if line.startswith("## "):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
    for title, *body in sections:
        name = re.sub(r"\s*\(\d{4}-\d\d-\d\d[^)]*\)\s*$", "", title[3:])
        name = re.sub(r",\s*\d{4}-\d\d-\d\d\s*$", "", name)
        command = next((m.group(1) for m in (re.match(r"(?:Command: )?`([^`]*bench/[^`]*)`", ln) for ln in body) if m), "")
        prose = [ln for ln in body if ln.strip() and not ln.startswith(("Command:", "`", "|", "<!--", "Measured by"))]
        lines = [ln for ln in prose if "**" in ln] or prose[:1]
        if not lines:
            continue
        out += ["", f"**{name}**" + (f" (`{command}`)" if command else "")]
        out += [ln if ln.startswith("- ") else f"- {ln}" for ln in lines]
    out += [""] + [ln for ln in run if ln.startswith("`make bench`")][-1:]
    out += ["", "Each section of the run, with its command, is below, newest last.", SUMMARY_END]
    return "\n".join(out) + "\n"


def with_summary(text: str) -> str:
    """`text` with its summary block (at the top, after the title) replaced by a new one."""
    start, end = text.find(SUMMARY_START), text.find(SUMMARY_END)
    if start >= 0 and end > start:
        text = text[:start] + text[end + len(SUMMARY_END):].lstrip("\n")
    block = summary(text)
    if not block:
        return text
    head, sep, rest = text.partition("\n")  # the file's "# Benchmark results" line stays first
    return f"{head}\n\n{block}\n{rest.lstrip(chr(10))}" if sep else f"{block}\n{text}"


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
    results = HERE / "RESULTS.md"
    with results.open("a") as f:  # the run's own length, beside its figures
        f.write(f"\n`make bench`{' --full' if args.full else ''}: {total}\n")
    results.write_text(with_summary(results.read_text()))
    sys.exit(1 if failed else 0)
