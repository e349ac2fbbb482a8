"""Every training method on its small task (examples/methods/methods.ft, fixed seeds):
start and end loss or reward, accuracy where it applies, wall time and tokens/s.

    .venv/bin/python bench/methods.py

runs `ft run` on a fresh copy of examples/methods, writes the figures to
bench/methods.json, the table between the markers in docs/methods.md (a test checks the
docs show what this script last wrote) and a dated section in bench/RESULTS.md.
The figures are this machine's: wall time and tokens/s move with the CPU and its load;
losses, rewards and accuracies are seeded and move only with the library versions.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "methods"
FIGURES = ROOT / "bench" / "methods.json"
DOCS = ROOT / "docs" / "methods.md"
BEGIN, END = "<!-- methods-table: written by bench/methods.py -->", "<!-- /methods-table -->"
COMMAND = ".venv/bin/python bench/methods.py"
EVAL = "eval.adapters"  # exact match of the adapter methods on held-out rows
EVAL_4BIT = "eval.qlora_4bit"  # the QLoRA adapter on its 4-bit base instead of merged into fp32


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def render_table(figures: dict[str, Any]) -> str:
    """The markdown table for docs/methods.md, from bench/methods.json's figures."""
    lines = [BEGIN,
             f"Measured by `{figures['command']}` on {figures['date']} ({figures['machine']}); "
             "losses, rewards and accuracies are seeded, times are this machine's.",
             "",
             "| node | method | measures | start | end | accuracy | wall s | tokens/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in figures["rows"]:
        acc = f"{_fmt(r['accuracy'])} ({r['accuracy_of']})" if r.get("accuracy") is not None else "–"
        lines.append(f"| `{r['node']}` | `{r['method']}` | {r['measures']} | {_fmt(r['start'])} | "
                     f"{_fmt(r['end'])} | {acc} | {_fmt(r['seconds'], 1)} | {_fmt(r['tokens_per_second'], 0)} |")
    q = figures.get("qlora_4bit")
    if q:
        lines += ["", f"QLoRA (`train.qlora`, nf4) measured on the 4-bit base it trained against "
                      f"(`adapter_base = \"quantized\"`): held-out loss {_fmt(q['quantized_loss'])}, "
                      f"exact match {_fmt(q['quantized_exact_match'])}; merged into the fp32 base: loss "
                      f"{_fmt(q['merged_loss'])}, exact match {_fmt(q['merged_exact_match'])} "
                      f"(difference {_fmt(q['quantized_loss'] - q['merged_loss'], 4)} in loss)."]
    lines.append(END)
    return "\n".join(lines)


def replace_table(doc: str, table: str) -> str:
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        return head + table + rest.split(END, 1)[1]
    return doc.rstrip("\n") + "\n\n## Measured: every method on its small task\n\n" + table + "\n"


def _row(node: str, method: str, meta: dict[str, Any], metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    name = node.split(".", 1)[1]
    if meta.get("reward"):  # online RL: the mean reward at each logging step
        measures, start, end = "mean reward", meta["reward"][0], meta["reward"][-1]
    else:
        losses = meta.get("train_loss") or []
        measures, start, end = "train loss", (losses[0] if losses else None), meta.get("final_loss")
    accuracy, of = None, None
    if name in metrics:
        accuracy, of = metrics[name].get("exact_match"), "exact match, held out"
    elif "rewards_accuracies" in meta:
        accuracy, of = meta["rewards_accuracies"], "reward accuracy"
    elif "accuracy" in meta:
        accuracy, of = meta["accuracy"], "pair accuracy"
    return {"node": node, "method": method, "measures": measures, "start": start, "end": end,
            "accuracy": accuracy, "accuracy_of": of, "seconds": meta.get("seconds"),
            "tokens_per_second": meta.get("tokens_per_second")}


def measure(work: Path) -> dict[str, Any]:
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(".ft", "__pycache__"))
    ft = Path(sys.executable).parent / "ft"
    started = time.perf_counter()
    out = subprocess.run([str(ft), "run", "methods.ft", "--color", "never"], cwd=work,
                         capture_output=True, text=True)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"ft run failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    import ftlang

    p = ftlang.load(work / "methods.ft")
    program = p.program
    evaluated = p.artifact(EVAL)
    metrics = json.loads((evaluated.path / "metrics.json").read_text())["models"]
    rows = []
    for nid, node in program.nodes.items():
        if node.kind != "train":
            continue
        method = node.params.get("method")
        rows.append(_row(nid, getattr(method, "name", "full"), dict(p.artifact(nid).meta), metrics))
    four = json.loads((p.artifact(EVAL_4BIT).path / "metrics.json").read_text())["models"]["qlora"]
    qlora_4bit = {"quantized_loss": four["loss"], "quantized_exact_match": four["exact_match"],
                  "merged_loss": metrics["qlora"]["loss"], "merged_exact_match": metrics["qlora"]["exact_match"]}
    return {"command": COMMAND, "date": time.strftime("%Y-%m-%d"), "qlora_4bit": qlora_4bit,
            "machine": f"{platform.machine()}, {_cores()} cores, Python {platform.python_version()}",
            "pipeline_seconds": round(wall, 1), "rows": rows}


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(Path(tmp) / "methods")
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    table = render_table(figures)
    DOCS.write_text(replace_table(DOCS.read_text(), table))
    with open(ROOT / "bench" / "RESULTS.md", "a") as f:
        f.write(f"\n## Methods on their small tasks, {figures['date']}\n\n`{COMMAND}` "
                f"(whole pipeline {figures['pipeline_seconds']} s)\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
