"""docs/methods.md shows the table bench/methods.py last wrote, every method has a row, and
the thresholds of the method tests sit well inside what the script measured."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from test_methods_preference import THRESHOLDS

ROOT = Path(__file__).resolve().parent.parent
FIGURES = json.loads((ROOT / "bench" / "methods.json").read_text())


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_methods", ROOT / "bench" / "methods.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_docs_table_is_the_one_the_script_last_wrote() -> None:
    bench = _bench()
    assert bench.render_table(FIGURES) in (ROOT / "docs" / "methods.md").read_text()


def test_every_method_is_measured() -> None:
    from ftlang.stdlib.registry import METHOD_INDEX

    measured = {r["method"] for r in FIGURES["rows"]}
    assert set(METHOD_INDEX) - measured == set(), "run bench/methods.py after adding a method to " \
        "examples/methods/methods.ft"


def _row(node: str) -> dict[str, Any]:
    return next(r for r in FIGURES["rows"] if r["node"] == f"train.{node}")


@pytest.mark.parametrize("node", list(THRESHOLDS))
def test_test_thresholds_sit_well_inside_the_measured_figures(node: str) -> None:
    kind, limit = THRESHOLDS[node]
    r = _row(node)
    if kind == "loss_ratio":
        assert r["end"] / r["start"] <= limit - 0.05, (node, r)  # 5 points of ratio to spare
    else:
        assert r["end"] - r["start"] >= 2 * limit, (node, r)  # at least twice the required gain
