"""Compile work grows linearly with the number of nodes: counted (function calls under
cProfile), never timed, so the test is exact on a loaded machine."""

from __future__ import annotations

import cProfile
import pstats
import sys
from pathlib import Path

from conftest import ROOT
from ftlang.compiler import compile_source

sys.path.insert(0, str(ROOT / "bench"))
from bench_check import generate  # noqa: E402  (the benchmark's own file mix: every block kind)

SMALL, LARGE = 50, 200  # nodes; 4x as many


def _calls(folder: Path, nodes: int) -> dict[str, int]:
    """Calls per function (file:line name, C functions included) of one compile."""
    path = generate(folder, nodes)
    text = path.read_text()
    compile_source(text, path.name, folder)  # warm: lazy imports and per-process caches
    prof = cProfile.Profile()
    prof.enable()
    program = compile_source(text, path.name, folder)
    prof.disable()
    assert len(program.nodes) == nodes
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    return {f"{Path(k[0]).name}:{k[1]} {k[2]}": v[1] for k, v in stats.items()}


def test_compile_calls_grow_linearly(tmp_path: Path) -> None:
    small = _calls(tmp_path / "small", SMALL)
    large = _calls(tmp_path / "large", LARGE)
    growth = LARGE / SMALL
    assert sum(large.values()) / sum(small.values()) < growth * 1.1
    # No one function may grow faster than the file: that is where a quadratic step hides
    # (splitting the whole file per block, comparing every export with every input...).
    worst = sorted(((large[f] / max(small.get(f, 0), 1), f) for f in large if large[f] > 2000),
                   reverse=True)[:5]
    assert worst[0][0] < growth * 1.1, worst
    # The source is split into lines once per file, not once per block or query.
    splits = [f for f in large if "splitlines" in f]
    assert all(large[f] == small.get(f) for f in splits), {f: (small.get(f), large[f]) for f in splits}
