"""`make bench` rewrites the summary at the top of bench/RESULTS.md from its newest run
(bench/run_all.py): headline figures of that run only, the history below kept as it was."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import run_all  # noqa: E402

RESULTS = """# Benchmark results

# `make bench` run of 2026-11-30 10:00

Machine: old machine
## no-op `ft run` vs DVC (2026-11-30)

Command: `.venv/bin/python bench/bench_noop.py --repeat 5`

- no-op `ft run` / `dvc repro`: **0.53x** wall

# `make bench` run of 2026-12-02 09:21

Machine: 2 cores (test)
## no-op `ft run` vs DVC (2026-12-02)

Command: `.venv/bin/python bench/bench_noop.py --repeat 7`

- ft run: wall 0.212 s
- no-op `ft run` / `dvc repro`: **0.28x** wall

## Remote cache, 2026-12-02

`.venv/bin/python bench/bench_remote.py --steps 60` (x86_64)

warm remote 0.3 s vs cold 9.2 s: 26.8x faster

## bench_rl (2026-12-02)

| method | reward |
|---|---|

`make bench`: all benchmarks in 435 s
"""


def test_the_summary_holds_the_newest_run_s_headlines_with_their_commands() -> None:
    block = run_all.summary(RESULTS)
    assert "(2026-12-02 09:21)" in block and "Machine: 2 cores (test)" in block
    assert "**0.28x**" in block and "0.53x" not in block  # the newest run only
    assert "ft run: wall 0.212 s" not in block  # a figure that is not a headline stays below
    assert "**no-op `ft run` vs DVC** (`.venv/bin/python bench/bench_noop.py --repeat 7`)" in block
    assert "- warm remote 0.3 s vs cold 9.2 s: 26.8x faster" in block  # no bold figure: its first line
    assert "bench_rl" not in block  # a table stays below
    assert "`make bench`: all benchmarks in 435 s" in block


def test_rewriting_replaces_the_old_summary_and_keeps_the_history() -> None:
    once = run_all.with_summary(RESULTS)
    assert once.startswith("# Benchmark results\n\n" + run_all.SUMMARY_START)
    assert once.count(run_all.SUMMARY_START) == 1
    assert once.split(run_all.SUMMARY_END, 1)[1].strip() == RESULTS.split("\n", 1)[1].strip()
    newer = once + "\n# `make bench` run of 2026-12-03 08:00\n\nMachine: m\n## x (2026-12-03)\n\n- a: **1.5x**\n"
    twice = run_all.with_summary(newer)
    assert twice.count(run_all.SUMMARY_START) == 1 and "(2026-12-03 08:00)" in twice
    top = twice.split(run_all.SUMMARY_END, 1)[0]
    assert "**1.5x**" in top and "**0.28x**" not in top
    assert run_all.with_summary(twice) == twice
