"""generate: rows written by a model from a prompt template, parsed into columns, cached per
input row (adding 1% of the rows generates 1%), unparsable samples counted and dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pyarrow.parquet as pq
import pytest
from conftest import run_ft
from ftlang.stdlib import synth
from ftlang.stdlib.spec import Artifact, Call, StepError
from stepkit import Store

JSON = Call("json", {"fields": ["instruction", "response"]}, "parse")


def test_parse_rules() -> None:
    text = 'Sure! {"instruction": "Add 2 and 3", "response": 5, "extra": 1} and more {"x": 1}'
    assert synth.parse_text(text, JSON) == {"instruction": "Add 2 and 3", "response": "5"}
    assert synth.parse_text('{"instruction": "only one"}', JSON) is None
    assert synth.parse_text("no json {here", JSON) is None
    rx = Call("regex", {"pattern": r"Q: (?P<q>.+?)\nA: (?P<a>.+)"})
    assert synth.parse_text("Q: why?\nA: because", rx) == {"q": "why?", "a": "because"}
    assert synth.parse_text("nothing", rx) is None
    assert synth.parse_text("  a rewrite  ", Call("text", {"column": "text"})) == {"text": "a rewrite"}
    assert synth.placeholders("Rewrite {prompt} as {style}, {{literal}}") == ["prompt", "style"]


class Fake:
    """Stands in for the model: an output per (prompt, seed, sample), every call counted."""

    calls: ClassVar[list[str]] = []

    def samples(self: Any, prompt: str, seed: int) -> list[str]:
        Fake.calls.append(prompt)
        out = []
        for j in range(int(self.p["n"])):
            if "7" in prompt and j == 0:
                out.append("I cannot answer that")  # unparsable
            else:
                out.append(json.dumps({"instruction": f"{prompt} #{j}", "response": str(seed % 1000)}))
        return out


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setattr(synth.Writer, "samples", Fake.samples)
    Fake.calls = []
    return Store(tmp_path)


def _model(store: Store) -> Artifact:
    ctx = store.ctx("model.m", {})
    (ctx.out / "weights.txt").write_text("stand-in")
    return store.commit(ctx)


def _run(store: Store, model: Artifact, rows: list[dict[str, Any]], **params: Any) -> tuple[list[dict], dict]:
    data = store.dataset("dataset.seeds", rows)
    art, meta = store.run(synth.run, "generate.pairs", {
        "model": model, "from": data, "prompt": "Write a task about {topic}.", "parse": JSON, "n": 2,
        "template": None, "keep": ["topic"], **params})
    return pq.read_table(art.dataset_file()).to_pylist(), meta


def test_adding_one_percent_of_rows_generates_one_percent(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ftlang.stdlib.modelio.template_of", lambda m: None)
    model = _model(store)
    rows = [{"topic": f"topic {i}"} for i in range(100)]
    out, meta = _run(store, model, rows)
    assert len(Fake.calls) == 100 and meta["generated_rows"] == 100
    # 19 topics hold a 7 (7, 17, 27, ..., 70-79, 87, 97): their first sample is unparsable
    assert meta["samples"] == 200 and meta["unparsable"] == 19 and meta["rows_out"] == 181 == len(out)
    assert out[0]["topic"] == "topic 0" and out[0]["instruction"] == "Write a task about topic 0. #0"
    assert "19 unparsable dropped" in synth.summary(meta)
    Fake.calls.clear()
    again, meta2 = _run(store, model, rows + [{"topic": "topic 100"}])
    assert Fake.calls == ["Write a task about topic 100."] and meta2["generated_rows"] == 1
    assert again[:181] == out  # the cached rows are byte-for-byte what they were
    # a new parse rule re-parses the cached texts: nothing is generated
    Fake.calls.clear()
    _run(store, model, rows, parse=Call("regex", {"pattern": r'"response": "(?P<r>\d+)"'}))
    assert Fake.calls == []
    # another seed (or model, or template) is another cache
    _run(store, model, rows, seed=1)
    assert len(Fake.calls) == 100


def test_the_seed_of_a_row_does_not_depend_on_the_others(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ftlang.stdlib.modelio.template_of", lambda m: None)
    model = _model(store)
    alone, _ = _run(store, model, [{"topic": "x"}])
    Fake.calls.clear()
    (store.root / "cache").rename(store.root / "cache-old")  # no cache: generated afresh
    mixed, _ = _run(store, model, [{"topic": "a"}, {"topic": "x"}, {"topic": "b"}])
    assert [r for r in mixed if r["topic"] == "x"] == alone


def test_a_rule_that_never_matches_fails_with_three_outputs(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ftlang.stdlib.modelio.template_of", lambda m: None)
    model = _model(store)
    with pytest.raises(StepError) as e:
        _run(store, model, [{"topic": f"t{i}"} for i in range(5)], parse=Call("regex", {"pattern": r"^ANSWER: (?P<a>.+)"}))
    msg = str(e.value)
    assert "matched none of the 10 outputs" in msg
    assert msg.count('instruction') == 3  # three example outputs, no more
    assert "1. " in msg and "3. " in msg and "4. " not in msg


FT = """ft 0.1
dataset seeds { source = jsonl("seeds.jsonl") }
model base { init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 256, context = 64, data = seeds) }
generate para {
  model  = base
  from   = seeds
  prompt = "Rewrite: {topic}"
  parse  = regex("(?P<word>[A-Za-z]+)")
  n      = 2
  seed   = 5
  max_new_tokens = 8
  keep   = ["topic"]
}
curate long {
  sql "SELECT topic, word FROM para WHERE length(word) >= 1"
}
"""


def test_ft_run_generates_with_a_real_model_and_reruns_only_new_rows(tmp_path: Path) -> None:
    topics = [f"the {w} sat on the mat" for w in ("cat", "dog", "bird", "fish", "cow", "owl")]
    (tmp_path / "seeds.jsonl").write_text("".join(json.dumps({"topic": t}) + "\n" for t in topics))
    (tmp_path / "p.ft").write_text(FT)
    r = run_ft("run", "p.ft", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "6 rows generated" in out
    # The tokenizer is trained on the seeds, so appending to them changes the model (a new
    # cache). Read the same rows plus one new row from a second dataset: the model stays.
    rows = [*topics, "a new row about a hen"]
    (tmp_path / "more.jsonl").write_text("".join(json.dumps({"topic": t}) + "\n" for t in rows))
    (tmp_path / "p.ft").write_text(FT.replace("from   = seeds", "from   = more")
                                   + 'dataset more { source = jsonl("more.jsonl") }\n')
    r = run_ft("run", "p.ft", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "1 row generated" in out  # the six old rows came from the row cache


def test_compile_errors_at_the_line(tmp_path: Path) -> None:
    from ftlang.compiler import compile_source
    from ftlang.lang.diagnostics import FtError

    (tmp_path / "seeds.jsonl").write_text(json.dumps({"topic": "x"}) + "\n")
    def errors(text: str) -> list[tuple[str, int, str]]:
        with pytest.raises(FtError) as e:
            compile_source(text, "p.ft", tmp_path)
        return [(d.code, d.labels[0].span.line, d.message) for d in e.value.diagnostics]

    got = errors(FT.replace('prompt = "Rewrite: {topic}"', 'prompt = "Rewrite: {topik}"'))
    assert got == [("FT0125", 7, "generate `para` needs column `topik`, which seeds does not have")]
    got = errors(FT.replace('"(?P<word>[A-Za-z]+)"', '"([A-Za-z]+)"'))
    assert [(c, line) for c, line, _ in got] == [("FT0335", 8)]
