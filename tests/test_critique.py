"""critique: constitutional self-critique. With the real `ft` command: the two parts exist
with their columns, sft trains on x.sft, each revision is what the model
generated given the documented critique and revision prompts, a second run with more
prompts generates only the new ones; bad principles and prompts are compile errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import run_ft
from ftlang.stdlib import critique

PROMPTS = [f"Tell {n} about the {w}" for n, w in (("ann", "sea"), ("bob", "sun"), ("cy", "moon"), ("dee", "tree"))]

FT = """ft 0.1
dataset prompts { source = jsonl("prompts.jsonl") }
model base { init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 300, context = 256, data = prompts) }
critique revised {
  model           = base
  from            = prompts
  principles_file = "constitution.txt"
  max_new_tokens  = 5
  seed            = 2
}
train tuned {
  from      = base
  data      = revised.sft
  max_steps = 2
}
"""


def _state(root: Path, node: str) -> Path:
    digest = json.loads((root / ".ft" / "state" / "p.ft" / f"{node}.json").read_text())["digest"]
    return root / ".ft" / "objects" / digest


def test_ft_run_revises_reproducibly_and_sft_trains_on_the_sft_part(tmp_path: Path) -> None:
    import hashlib

    from ftlang.stdlib import modelio
    from ftlang.stdlib import template as templates
    from ftlang.stdlib.rlaif import row_seed, writer
    from ftlang.stdlib.spec import Artifact
    from stepkit import complete

    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": q}) + "\n" for q in PROMPTS[:3]))
    (tmp_path / "constitution.txt").write_text("Be kind.\n\nBe brief.\n")
    (tmp_path / "p.ft").write_text(FT)
    r = run_ft("run", "p.ft", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "done    train.tuned" in out  # dpo on the prefs part: tests/test_rlaif.py trains one
    folder = _state(tmp_path, "critique.revised")
    sft = pq.read_table(folder / "sft.parquet").to_pylist()
    prefs = pq.read_table(folder / "prefs.parquet").to_pylist()
    assert sft and len(sft) == len(prefs) and [s["prompt"] for s in sft] == [p["prompt"] for p in prefs]
    assert all(s["completion"] == p["chosen"] != p["rejected"] for s, p in zip(sft, prefs))
    # Redo one row's chain by hand: response, then the documented critique prompt with it, then
    # the revision prompt with both, each seeded from the step's seed and the prompt.
    base = _state(tmp_path, "model.base")
    model = Artifact("model.base", base.name, base)
    p = complete("critique", {"model": model, "from": None, "principles_file": "x", "max_new_tokens": 5, "seed": 2})
    w = writer(model, modelio.template_of(model) or templates.load(None), p, 1)
    q = prefs[0]["prompt"]
    seed = row_seed(2, hashlib.sha256(q.encode()).hexdigest())
    response = w.samples(q, seed)[0]
    assert response == prefs[0]["rejected"]
    shown = "- Be kind.\n- Be brief."
    crit = w.samples(f"Request: {q}\nResponse: {response}\nPrinciples:\n{shown}\n"
                     "Critique the response against the principles.", seed + 1)[0]
    assert crit == prefs[0]["critique"]
    revision = w.samples(f"Request: {q}\nResponse: {response}\nPrinciples:\n{shown}\nCritique: {crit}\n"
                         "Rewrite the response so that it follows the principles.", seed + 2)[0]
    assert revision == prefs[0]["chosen"] == sft[0]["completion"]
    # One more prompt from a second dataset (the tokenizer, trained on `prompts`, stays).
    (tmp_path / "more.jsonl").write_text("".join(json.dumps({"prompt": q}) + "\n" for q in PROMPTS))
    (tmp_path / "p.ft").write_text(FT.replace("from            = prompts", "from            = more")
                                   + 'dataset more { source = jsonl("more.jsonl") }\n')
    r = run_ft("run", "p.ft", "--select", "critique.revised", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "1 generated" in out, out


def _errors(tmp_path: Path, body: str) -> list[tuple[str, int, str]]:
    from ftlang.compiler import compile_source
    from ftlang.lang.diagnostics import FtError

    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n")
    text = ('ft 0.1\ndataset prompts { source = jsonl("prompts.jsonl") }\n'
            "model base { init = tiny(data = prompts) }\n" + body)
    with pytest.raises(FtError) as e:
        compile_source(text, "p.ft", tmp_path)
    return [(d.code, d.labels[0].span.line, d.message) for d in e.value.diagnostics]


@pytest.mark.parametrize(("attrs", "code", "line", "says"), [
    ("", "FT0424", 4, "either as a list or as a file"),
    ('principles = ["a"]\n  principles_file = "prompts.jsonl"', "FT0424", 7, "either as a list or as a file"),
    ("principles = []", "FT0424", 7, "empty"),
    ('principles = ["a"]\n  critique_prompt = "Critique {response}"', "FT0425", 8, "no {prompt}, {principles}"),
    ('principles = ["a"]\n  revision_prompt = "Fix {prompt} {response}"', "FT0425", 8, "no {critique}"),
    ('principles_file = "missing.txt"', "FT0111", 7, "file not found"),
])
def test_bad_input_is_a_compile_error_at_the_line(tmp_path: Path, attrs: str, code: str, line: int,
                                                  says: str) -> None:
    got = _errors(tmp_path, f"critique c {{\n  model = base\n  from = prompts\n  {attrs}\n}}\n")
    assert any(c == code and at == line and says in m for c, at, m in got), got


def test_the_parts_have_their_own_columns(tmp_path: Path) -> None:
    got = _errors(tmp_path, 'critique c {\n  model = base\n  from = prompts\n  principles = ["a"]\n}\n'
                            "train d {\n  from = base\n  method = dpo\n  data = c.sft\n}\n"
                            "train s {\n  from = base\n  data = c.prefs\n}\n"
                            "train ok {\n  from = base\n  data = c\n}\n")
    assert ("FT0125", 12, "train `d` needs columns `chosen`, `rejected`, which c.sft does not have") in got, got
    assert any(c == "FT0125" and at == 16 and "`completion`" in m and "c.prefs" in m for c, at, m in got), got
    assert any(c == "FT0102" and at == 20 and "say which part" in m for c, at, m in got), got


def test_principles_are_listed_one_a_line() -> None:
    assert critique.listed(["Be kind.", "Be brief."]) == "- Be kind.\n- Be brief."
    assert critique.fill(critique.REVISION_PROMPT, prompt="q", response="r", principles="- p", critique="c") == \
        "Request: q\nResponse: r\nPrinciples:\n- p\nCritique: c\nRewrite the response so that it follows the principles."


def test_the_prompts_built_are_the_documented_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every generation's prompt, recorded from a stand-in writer: the response, then the
    documented critique prompt with it, then the revision prompt with both; rows cached."""
    from ftlang.stdlib import synth
    from stepkit import Store

    seen: list[tuple[str, int]] = []

    def fake(self: object, prompt: str, seed: int) -> list[str]:
        seen.append((prompt, seed))
        return [f"out{len(seen)}"]

    monkeypatch.setattr(synth.Writer, "samples", fake)
    monkeypatch.setattr("ftlang.stdlib.modelio.template_of", lambda m: None)
    store = Store(tmp_path)
    ctx = store.ctx("model.m", {})
    (ctx.out / "weights.txt").write_text("stand-in")
    model = store.commit(ctx)
    prompts = store.dataset("dataset.p", [{"prompt": "Tell ann"}])
    art, meta = store.run(critique.run, "critique.c", {"model": model, "from": prompts, "seed": 9,
                                                       "principles": ["Be kind.", "Be brief."]})
    shown = "- Be kind.\n- Be brief."
    assert [q for q, _ in seen] == [
        "Tell ann",
        f"Request: Tell ann\nResponse: out1\nPrinciples:\n{shown}\nCritique the response against the principles.",
        f"Request: Tell ann\nResponse: out1\nPrinciples:\n{shown}\nCritique: out2\n"
        "Rewrite the response so that it follows the principles."]
    base = seen[0][1]
    assert [s for _, s in seen] == [base, base + 1, base + 2]
    assert pq.read_table(art.path / "prefs.parquet").to_pylist() == [
        {"prompt": "Tell ann", "chosen": "out3", "rejected": "out1", "critique": "out2"}]
    assert pq.read_table(art.path / "sft.parquet").to_pylist() == [{"prompt": "Tell ann", "completion": "out3"}]
    assert meta["generated_rows"] == 1
    store.run(critique.run, "critique.c", {"model": model, "from": prompts, "seed": 9,
                                           "principles": ["Be kind.", "Be brief."]})
    assert len(seen) == 3  # the second run read the row cache
