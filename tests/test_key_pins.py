"""The cache keys of the shipped examples do not change by accident.

A refactor must leave every key as it was (users' caches stay valid); a change that has to
alter a key bumps that step's `version` and regenerates this fixture on purpose:
    FT_UPDATE_KEYS=1 pytest tests/test_key_pins.py
Upstream digests and the training environment are fixed stand-ins, so the pins hold on any
machine and library version; the data files enter by their committed content.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT
from ftlang.compiler import compile_file
from ftlang.runtime import keys
from ftlang.runtime.hashing import StatCache
from ftlang.runtime.store import Entry

PINS = FIXTURES / "keys" / "examples.json"
PORTS = ("train", "heldout", "test", "data")


def example_keys(path: Path, tmp: Path) -> dict[str, str]:
    program = compile_file(path)
    stat = StatCache(tmp / "stat.json")
    out = {}
    for nid in program.order():
        node = program.nodes[nid]
        ups = {r.node: Entry("k", r.node, f"d-{r.node}", {f"{p}.parquet": f"d-{r.node}-{p}" for p in PORTS}, {})
               for r in node.refs()}
        out[nid] = keys.node_key(keys.components(node, ups, stat))
    return out


def test_example_keys_are_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "environment", lambda: {"torch": "x", "device": "cpu"})
    monkeypatch.chdir(ROOT / "examples")
    got = {name: example_keys(ROOT / "examples" / name, tmp_path) for name in ("quickstart.ft", "smollm2_lora.ft")}
    if os.environ.get("FT_UPDATE_KEYS"):
        PINS.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(PINS.read_text())
