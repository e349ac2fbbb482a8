"""judge_pairs (RLAIF): candidates from a policy, judged by a model, a preference dataset out;
position-debiased margins, per-row caching, determinism for a fixed seed, judge -> DPO with
the real `ft` command, and the bad inputs (compile errors at the line, a step error naming
an answer the judge's vocabulary cannot say in one token)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import run_ft
from ftlang.stdlib import rlaif, synth
from ftlang.stdlib.spec import Artifact, Call, StepError
from stepkit import Store

NAMES = ("ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal")
# The judge's answers must be single tokens: the tiny tokenizer is trained on text full of them.
VOCAB = "Answer A or B. Response A: Response B: A B A B"


class Biased:
    """A judge that always prefers the first-shown candidate by 0.8, plus 0.1 for the longer."""

    def answer_probabilities(self, questions: list[str], answers: list[str]) -> list[list[float]]:
        out = []
        for q in questions:
            a, b = q.split("Response A: ")[1].split("\nResponse B: ")
            b = b.split("\n")[0]
            first = 0.8 + (0.1 if len(a) > len(b) else -0.1 if len(b) > len(a) else 0.0)
            out.append([first, 1 - first])
        return out


def test_margin_asks_both_orders_so_position_bias_cancels() -> None:
    v = rlaif.Verdicts(Artifact("model.j", "d", Path("/nowhere")), {"answers": ["A", "B"], "rubric": rlaif.RUBRIC})
    v.reward, v.impl = False, Biased()
    # Always-A would say "a wins by 0.6" for every pair; asked both ways, only the length counts.
    got = v.margins(["q", "q", "q"], ["long answer", "x", "same"], ["x", "long answer", "same"])
    assert [round(m, 6) for m in got] == [0.2, -0.2, 0.0]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    pytest.importorskip("transformers")
    from ftlang.stdlib import model as model_step
    from test_stdlib_ml import TINY

    store = Store(tmp_path_factory.mktemp("policy"))
    text = store.dataset("dataset.text", [{"text": f"{VOCAB} Say hi to {n}"} for n in NAMES] * 4)
    lm, _ = store.run(model_step.run, "model.base", {"init": Call("tiny", {**TINY, "context": 128, "data": text})})
    return lm


def _judge(root: Path, lm: Artifact, names: tuple[str, ...], **kw: Any) -> tuple[list[dict], dict, Store]:
    store = Store(root)
    prompts = store.dataset("dataset.prompts", [{"prompt": f"Say hi to {n}"} for n in names])
    art, meta = store.run(rlaif.run, "judge_pairs.prefs", {
        "from": prompts, "policy": lm, "judge": lm, "max_new_tokens": 5, "seed": 3, **kw})
    return pq.read_table(art.dataset_file()).to_pylist(), meta, store


def test_deterministic_for_a_fixed_seed_and_cached_per_row(tiny_lm: Artifact, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = synth.Writer.samples

    def counted(self: Any, prompt: str, seed: int) -> list[str]:
        calls.append(prompt)
        return real(self, prompt, seed)

    monkeypatch.setattr(synth.Writer, "samples", counted)
    first, meta, _ = _judge(tmp_path / "a", tiny_lm, NAMES[:6])
    assert meta["sampled_rows"] == 6 == meta["judged_rows"] and len(calls) == 6
    assert meta["rows_out"] + meta["ties"] == 6 and meta["rows_out"] >= 4
    assert all(set(r) == {"prompt", "chosen", "rejected", "margin"} and r["chosen"] != r["rejected"]
               and r["margin"] > 0 for r in first)
    # A fresh cache, the same seed: the same rows, byte for byte.
    again, _, _ = _judge(tmp_path / "b", tiny_lm, NAMES[:6])
    assert again == first
    # Another seed samples other candidates.
    other, _, _ = _judge(tmp_path / "c", tiny_lm, NAMES[:6], seed=4)
    assert {(r["chosen"], r["rejected"]) for r in other} != {(r["chosen"], r["rejected"]) for r in first}
    # Adding two prompts samples and judges only those two; the old rows are unchanged.
    calls.clear()
    more, meta, _ = _judge(tmp_path / "a", tiny_lm, NAMES)
    assert meta["sampled_rows"] == 2 == meta["judged_rows"] and len(calls) == 2
    assert [r for r in more if r["prompt"] in {f"Say hi to {n}" for n in NAMES[:6]}] == first
    # Another rubric re-judges every pair without sampling again.
    calls.clear()
    _, meta, _ = _judge(tmp_path / "a", tiny_lm, NAMES, rubric=rlaif.RUBRIC.replace("better", "best"))
    assert meta["sampled_rows"] == 0 and meta["judged_rows"] == 8 and not calls


def test_margins_are_the_judges_answer_token_probabilities(tiny_lm: Artifact, tmp_path: Path) -> None:
    from ftlang.stdlib.safety import Judge

    rows, _, _ = _judge(tmp_path, tiny_lm, NAMES[:4])
    j = Judge(tiny_lm)
    for r in rows:
        ab = j.answer_probabilities([rlaif.fill(rlaif.RUBRIC, r["prompt"], r["chosen"], r["rejected"])], ["A", "B"])[0]
        ba = j.answer_probabilities([rlaif.fill(rlaif.RUBRIC, r["prompt"], r["rejected"], r["chosen"])], ["A", "B"])[0]
        assert r["margin"] == pytest.approx((ab[0] + ba[1]) / 2 - (ab[1] + ba[0]) / 2, abs=1e-5)


def test_an_answer_that_is_not_one_token_fails_naming_it(tiny_lm: Artifact, tmp_path: Path) -> None:
    with pytest.raises(StepError, match="cannot answer 'Definitely'"):
        _judge(tmp_path, tiny_lm, NAMES[:2], answers=["Definitely", "B"])


FT = f"""ft 0.1
dataset prompts {{ source = jsonl("prompts.jsonl") }}
curate vocab {{ sql "SELECT prompt || ' {VOCAB}' AS text FROM prompts" }}
model base {{ init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 300, context = 128, data = vocab) }}
judge_pairs prefs {{
  from           = prompts
  policy         = base
  judge          = base
  max_new_tokens = 6
  seed           = 3
}}
train aligned {{
  from       = base
  method     = dpo(beta = 0.1)
  data       = prefs
  max_steps  = 2
  batch_size = 2
}}
"""


def test_ft_run_judges_then_trains_dpo_on_the_pairs(tmp_path: Path) -> None:
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Say hi to {n}"}) + "\n" for n in NAMES))
    (tmp_path / "p.ft").write_text(FT)
    r = run_ft("run", "p.ft", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "done    judge_pairs.prefs" in out and "done    train.aligned" in out
    made = [pq.read_table(f).to_pylist() for f in (tmp_path / ".ft" / "objects").rglob("data.parquet")
            if "margin" in pq.read_schema(f).names]
    assert len(made) == 1 and made[0] and all(r["chosen"] != r["rejected"] for r in made[0])
    assert f"{len(made[0])} pairs" in out
    # The report's data section shows the judged step with its rows and the ties it dropped.
    r = run_ft("report", "p.ft", "-o", "report.html", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    html = (tmp_path / "report.html").read_text()
    data = html[html.index('<table class="data">'):]
    row = data[data.index('<td class="mono">judge_pairs.prefs</td>'):][:400]
    assert f'<td class="num">{len(NAMES)}</td><td class="num">{len(made[0])}</td>' in row
    assert "ties dropped: " in row


def _errors(tmp_path: Path, body: str) -> list[tuple[str, int, str]]:
    from ftlang.compiler import compile_source
    from ftlang.lang.diagnostics import FtError

    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n")
    text = ('ft 0.1\ndataset prompts { source = jsonl("prompts.jsonl") }\n'
            "model base { init = tiny(data = prompts) }\n" + body)
    with pytest.raises(FtError) as e:
        compile_source(text, "p.ft", tmp_path)
    return [(d.code, d.labels[0].span.line, d.message) for d in e.value.diagnostics]


@pytest.mark.parametrize(("attr", "code", "says"), [
    ("judge = prompts", "FT0109", "expected a model"),
    ('rubric = "Which is better? {prompt} {a}"', "FT0420", "no {b}"),
    ('answers = ["A", "B", "C"]', "FT0421", "two distinct answers"),
    ("temperature = 0", "FT0422", "same candidate twice"),
    ('prompt_field = "question"', "FT0125", "needs column `question`"),
])
def test_bad_input_is_a_compile_error_at_the_line(tmp_path: Path, attr: str, code: str, says: str) -> None:
    judge = "" if attr.startswith("judge") else "  judge = base\n"
    got = _errors(tmp_path, f"judge_pairs prefs {{\n  from = prompts\n  policy = base\n{judge}  {attr}\n}}\n")
    at = 5 if code == "FT0125" else 8 - (judge == "")  # a missing column: at `from`, the dataset
    assert any(c == code and line == at and says in m for c, line, m in got), got


def test_a_reward_model_judge_takes_no_rubric_and_the_output_has_no_completion(tmp_path: Path) -> None:
    got = _errors(tmp_path, """train rm { from = base
  method = reward_model
  data = prompts
}
judge_pairs prefs {
  from = prompts
  policy = base
  judge = rm
  answers = ["Yes", "No"]
}
""")
    assert ("FT0423", 12, "a reward-model judge scores each candidate; it reads no rubric") in got, got
    # The compiler knows the output's columns: sft on the pairs lacks a completion.
    got = _errors(tmp_path, "judge_pairs prefs {\n  from = prompts\n  policy = base\n  judge = base\n}\n"
                            "train sft {\n  from = base\n  data = prefs\n}\n")
    assert [(c, line) for c, line, m in got if "`completion`" in m and "prefs has" not in m] == [("FT0125", 11)], got


def test_a_reward_model_judge_margin_is_the_score_difference(tiny_lm: Artifact, tmp_path: Path) -> None:
    """A sequence classifier as the judge: margin = score(chosen) - score(rejected), by
    generate.RewardModel; and a greedy rival equal to the policy gives only ties."""
    import shutil

    import torch
    from ftlang.stdlib import modelio
    from ftlang.stdlib.generate import RewardModel
    from transformers import AutoConfig, AutoModelForSequenceClassification

    folder = tmp_path / "rm"
    config = AutoConfig.from_pretrained(str(modelio.weights_folder(tiny_lm)), num_labels=1)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(str(folder))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(modelio.weights_folder(tiny_lm) / f, folder / f)
    rm = Artifact("model.rm", "rm-digest", folder)
    rows, meta, _ = _judge(tmp_path / "s", tiny_lm, NAMES[:4], judge=rm)
    assert meta["rows_out"] + meta["ties"] == 4 and rows
    scorer = RewardModel(rm, "cpu")
    for r in rows:
        c, x = scorer.score([r["prompt"], r["prompt"]], [r["chosen"], r["rejected"]])
        assert r["margin"] == pytest.approx(c - x, abs=1e-5) and c > x
    _, meta, _ = _judge(tmp_path / "t", tiny_lm, NAMES[:4], judge=rm, rival=tiny_lm, temperature=0.0)
    assert meta["rows_out"] == 0 and meta["ties"] == 4
