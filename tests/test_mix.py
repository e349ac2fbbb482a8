"""mix: datasets blended by ratio, reproducible for a seed, realised counts shown; bad ratios
are compile errors at their line."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import run_ft
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import FtError
from ftlang.stdlib import mixing
from stepkit import Store


def _rows(tag: str, n: int) -> list[dict[str, str]]:
    return [{"prompt": f"{tag} {i}", "completion": str(i), "extra": tag} for i in range(n)]


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def _mix(store: Store, a: int, b: int, **params: object) -> tuple[list[dict[str, str]], dict]:
    art, meta = store.run(mixing.run, "mix.blend", {
        "from": [store.dataset("dataset.a", _rows("a", a)), store.dataset("dataset.b", _rows("b", b))],
        "ratios": [0.7, 0.3], **params})
    return pq.read_table(art.dataset_file()).to_pylist(), meta


def test_realised_counts_follow_the_ratios_and_the_seed_fixes_the_rows(store: Store) -> None:
    rows, meta = _mix(store, 100, 100, seed=3)
    # Default size: the most both inputs can give without repeating a row: 100 / 0.7 -> 142.
    assert meta["mix"] == {"a": 99, "b": 43} and meta["rows_out"] == 142
    assert sum(r["extra"] == "a" for r in rows) == 99 and sum(r["extra"] == "b" for r in rows) == 43
    again, _ = _mix(store, 100, 100, seed=3)
    assert again == rows  # same seed: same rows, same order
    other, _ = _mix(store, 100, 100, seed=4)
    assert {r["prompt"] for r in other if r["extra"] == "b"} != {r["prompt"] for r in rows if r["extra"] == "b"}
    assert len({r["prompt"] for r in rows}) == len(rows)  # no row drawn twice
    # interleaved, not a block of a then a block of b
    assert {r["extra"] for r in rows[:20]} == {"a", "b"}


def test_rows_beyond_a_dataset_oversample_it(store: Store) -> None:
    rows, meta = _mix(store, 10, 10, rows=50, seed=0, source_column="src")
    assert meta["mix"] == {"a": 35, "b": 15} and meta["repeated"] == {"a": 25, "b": 5}
    assert {r["src"] for r in rows} == {"a", "b"}
    counts = {p: sum(r["prompt"] == p for r in rows) for p in {r["prompt"] for r in rows if r["src"] == "a"}}
    assert sorted(set(counts.values())) == [3, 4]  # every row of a before any a fourth time
    assert "35" in mixing.summary(meta) and "repeated: a 25, b 5" in mixing.summary(meta)


def test_largest_remainder_counts_sum_exactly() -> None:
    assert mixing.counts([1000, 1000, 1000], [1 / 3, 1 / 3, 1 / 3], 100) == [34, 33, 33]
    assert sum(mixing.counts([5, 5], [0.55, 0.45], 7)) == 7


HEAD = """ft 0.1
dataset a { source = jsonl("a.jsonl") }
dataset b { source = jsonl("b.jsonl") }
"""


def _errors(tmp_path: Path, body: str) -> list[tuple[str, int, str]]:
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(name, 5)))
    try:
        compile_source(HEAD + body, "p.ft", tmp_path)
    except FtError as e:
        return [(d.code, d.labels[0].span.line, d.message) for d in e.diagnostics]
    return []


def test_ratios_that_do_not_sum_to_one_are_an_error_at_their_line(tmp_path: Path) -> None:
    got = _errors(tmp_path, "mix m {\n  from = [a, b]\n  ratios = [0.7, 0.4]\n}\n")
    assert got == [("FT0330", 6, "mixture ratios sum to 1.1, not 1")]
    got = _errors(tmp_path, "mix m {\n  from = [a, b]\n  ratios = [1.0]\n}\n")
    assert [c for c, _, _ in got] == ["FT0331"]
    got = _errors(tmp_path, "mix m {\n  from = [a, b]\n  ratios = [1.5, -0.5]\n}\n")
    assert [(c, line) for c, line, _ in got] == [("FT0332", 6)]
    assert _errors(tmp_path, "mix m {\n  from = [a, b]\n  ratios = [0.75, 0.25]\n}\n") == []


def test_ft_run_prints_the_realised_counts(tmp_path: Path) -> None:
    for name, n in (("a", 30), ("b", 30)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(name, n)))
    (tmp_path / "p.ft").write_text(HEAD + "mix m {\n  from = [a, b]\n  ratios = [0.7, 0.3]\n  rows = 20\n}\n")
    r = run_ft("run", "p.ft", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "20 rows: a 14, b 6" in r.stdout + r.stderr


def test_an_inline_mix_in_train_data_is_a_mix_block(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(name, 5)))
    body = ('model base { init = tiny(data = a) }\n'
            'train t {\n  from = base\n  data = mix(a = 0.7, b = 0.3, seed = 2)\n  max_steps = 1\n}\n')
    nodes = compile_source(HEAD + body, "p.ft", tmp_path).nodes
    mix = nodes["mix.t_data"]
    assert [r.node for r in mix.params["from"]] == ["dataset.a", "dataset.b"]
    assert mix.params["ratios"] == [0.7, 0.3] and mix.params["seed"] == 2
    assert nodes["train.t"].params["data"].node == "mix.t_data"
    got = _errors(tmp_path, body.replace("b = 0.3", "b = 0.4"))
    assert got == [("FT0330", 7, "mixture ratios sum to 1.1, not 1")]  # the train block's data line
    got = _errors(tmp_path, body.replace("b = 0.3", "c = 0.3"))
    assert [(c, line) for c, line, _ in got] == [("FT0102", 7)]  # no dataset `c`
