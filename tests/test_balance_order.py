"""balance = by(label, ...) and order = curriculum(...) / length(...): the rows the trainer
sees, batch by batch, and the compile errors of a curriculum column that does not exist."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import FtError
from ftlang.stdlib import model as model_step
from ftlang.stdlib import modelio, ordering, train
from ftlang.stdlib.spec import Call
from stepkit import Store
from test_stdlib_ml import TINY, TRAIN, WORDS


def _rows(n: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    rows = []
    for i in range(n):
        words = rng.sample(WORDS, 3)
        rows.append({"prompt": f"Reverse {i}: " + " ".join(words), "completion": " ".join(reversed(words)),
                     "difficulty": rng.randint(0, 1000), "label": "rare" if i % 4 == 0 else "common"})
    return rows


ROWS = _rows(24)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("order"))


@pytest.fixture(scope="module")
def base(store: Store) -> Any:
    text = store.dataset("dataset.text", [{"text": r["prompt"] + "\n" + r["completion"]} for r in ROWS])
    art, _ = store.run(model_step.run, "model.base", {
        "path": None, "hub": None, "revision": None, "gguf": None,
        "init": Call("tiny", {**TINY, "context": 64, "data": text})})
    return art


def _seen(store: Store, base: Any, monkeypatch: pytest.MonkeyPatch, node: str, **params: Any) -> list[dict[str, Any]]:
    """The rows of every batch the trainer collates, in order, identified by their prompt."""
    seen: list[list[int]] = []
    make = train.make_collator

    def recording(*args: Any) -> Any:
        collate = make(*args)

        def run(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
            seen.extend(ex["input_ids"] for ex in batch)
            return collate(batch)
        return run

    monkeypatch.setattr(train, "make_collator", recording)
    data = store.dataset("dataset.rows", ROWS)
    store.run(train.run, node, {**TRAIN, "from": base, "data": data, "max_steps": 6, "batch_size": 4,
                                "lr": 1e-3, **params})
    tok = modelio.load_tokenizer(base)
    by_prompt = {r["prompt"]: r for r in ROWS}
    out = []
    for ids in seen:
        text = tok.decode(ids, skip_special_tokens=True)
        out.append(by_prompt[text.split("\n", 1)[0].strip()])
    return out


def test_the_trainer_sees_the_curriculum_in_order(store: Store, base: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _seen(store, base, monkeypatch, "train.sorted",
                 order=Call("curriculum", {"by": "difficulty", "stages": None, "descending": False}))
    first = [r["difficulty"] for r in seen[:24]]  # one epoch: 6 steps x 4 rows
    assert first == sorted(r["difficulty"] for r in ROWS)


def test_curriculum_stages_are_shuffled_within_and_ordered_between(store: Store, base: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _seen(store, base, monkeypatch, "train.staged",
                 order=Call("curriculum", {"by": "difficulty", "stages": 3, "descending": False}))
    d = [r["difficulty"] for r in seen[:24]]
    stages = [d[0:8], d[8:16], d[16:24]]
    assert max(stages[0]) <= min(stages[1]) and max(stages[1]) <= min(stages[2])
    assert d != sorted(d)  # shuffled within the stages
    # without an order the trainer shuffles: the same rows, not sorted
    plain = [r["difficulty"] for r in _seen(store, base, monkeypatch, "train.plain")[:24]]
    assert sorted(plain) == sorted(d) and plain != sorted(plain)


def test_the_trainer_sees_balanced_labels(store: Store, base: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _seen(store, base, monkeypatch, "train.balanced", max_steps=9,
                 balance=Call("by", {"column": "label", "strategy": "oversample"}),
                 order=Call("length", {"of": "prompt", "stages": None, "descending": False}))
    labels = [r["label"] for r in seen[:36]]  # 18 common + 18 rare (6 rare rows, each 3 times)
    assert labels.count("rare") == 18 and labels.count("common") == 18
    lengths = [len(r["prompt"]) for r in seen[:36]]
    assert lengths == sorted(lengths)


def test_balance_strategies() -> None:
    rows = [{"y": "a"}] * 6 + [{"y": "b"}] * 2
    over, after = ordering.balanced(rows, Call("by", {"column": "y", "strategy": "oversample"}), 0)
    assert after == {"a": 6, "b": 6} and sorted(set(over)) == list(range(8))
    _, after = ordering.balanced(rows, Call("by", {"column": "y", "strategy": "undersample"}), 0)
    assert after == {"a": 2, "b": 2}
    weighted, after = ordering.balanced(rows * 50, Call("by", {"column": "y", "strategy": "weights"}), 0)
    assert len(weighted) == 400 and 160 <= after["b"] <= 240  # ~half, against 25% in the data
    assert ordering.balanced(rows, Call("by", {"column": "y", "strategy": "oversample"}), 0)[0] == over


HEAD = """ft 0.1
dataset d { source = jsonl("d.jsonl") }
model base { init = tiny(data = d) }
"""


def _errors(tmp_path: Path, body: str) -> list[tuple[str, int, str]]:
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:4]))
    try:
        compile_source(HEAD + body, "p.ft", tmp_path)
    except FtError as e:
        return [(d.code, d.labels[0].span.line, d.message) for d in e.diagnostics]
    return []


def test_a_curriculum_column_that_does_not_exist_is_an_error_at_its_line(tmp_path: Path) -> None:
    got = _errors(tmp_path, "train t {\n  from = base\n  data = d\n  order = curriculum(by = difficulty_x)\n}\n")
    assert got == [("FT0125", 7, "train `t` needs column `difficulty_x`, which d does not have")]
    got = _errors(tmp_path, "train t {\n  from = base\n  data = d\n  balance = by(labl)\n}\n")
    assert [(c, line) for c, line, _ in got] == [("FT0125", 7)]
    ok = "train t {\n  from = base\n  data = d\n  order = curriculum(by = difficulty, stages = 3)\n" \
         "  balance = by(label, strategy = undersample)\n}\n"
    assert _errors(tmp_path, ok) == []
    got = _errors(tmp_path, "train t {\n  from = base\n  data = d\n  order = length(of = prompt)\n  shuffle = true\n}\n")
    assert [(c, line) for c, line, _ in got] == [("FT0333", 8)]
