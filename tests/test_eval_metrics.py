"""Text metrics (stdlib/metrics.py) and the metric declarations, without torch.

Values are checked against hand computations, a brute-force LCS, and sacrebleu itself
for the arguments ftlang passes through.
"""

from __future__ import annotations

import itertools
import random
import textwrap
from pathlib import Path

import pytest
from ftlang.compiler import compile_source
from ftlang.stdlib import metrics
from ftlang.stdlib.evaluate_spec import EVAL_SPEC, GENERATIVE, METRICS, metric_key
from ftlang.stdlib.spec import Call, StepError


def _call(name: str, **args: object) -> Call:
    """A call with every declared default filled in, as the compiler passes it."""
    sig = METRICS[name]
    return Call(name, {a.name: args.get(a.name, a.default) for a in sig.attrs})


# ---- normalisation and matching ---------------------------------------------------------

def test_normalisation_options() -> None:
    text = "  Hello,   World!\n"
    assert metrics.normalize_text(text) == "hello,   world!"
    assert metrics.normalize_text(text, collapse_whitespace=True) == "hello, world!"
    assert metrics.normalize_text(text, collapse_whitespace=True, strip_punctuation=True) == "hello world"
    assert metrics.normalize_text(text, strip=False, casefold=False) == text
    assert metrics.normalize_text("Straße", casefold=True) == "strasse"  # casefold, not lower
    assert metrics.normalizer({"normalize": False, "strip": True})(" A ") == " A "


def test_exact_match_and_contains() -> None:
    preds = [" Paris ", "the answer is 42.", "New  York", "no"]
    refs = ["paris", "42", "new york", "yes"]
    assert metrics.compute(_call("exact_match"), preds, refs, []) == 0.25
    assert metrics.compute(_call("exact_match", collapse_whitespace=True), preds, refs, []) == 0.5
    assert metrics.compute(_call("exact_match", normalize=False), preds, refs, []) == 0.0
    assert metrics.compute(_call("contains"), preds, refs, []) == 0.5
    assert metrics.compute(_call("contains", collapse_whitespace=True), preds, refs, []) == 0.75
    # punctuation: "42." contains "42" anyway; an exact match needs it stripped
    assert metrics.exact_match(["42."], ["42"], metrics.normalizer({"strip_punctuation": True})) == 1.0


def test_regex_modes() -> None:
    preds = ["The answer: 12", "answer: 7 then 8", "no number", "ANSWER: 5"]
    refs = ["12", "8", "3", "5"]
    # A group: extract, then compare to the reference.
    assert metrics.compute(_call("regex", pattern=r"answer: (\d+)"), preds, refs, []) == 0.25
    assert metrics.compute(_call("regex", pattern=r"answer: (\d+)", ignore_case=True), preds, refs, []) == 0.5
    # No group: any match is a hit.
    assert metrics.compute(_call("regex", pattern=r"\d"), preds, refs, []) == 0.75
    assert metrics.compute(_call("regex", pattern=r"\d+", fullmatch=True), ["12", " 3 ", "4a"], ["", "", ""], []) \
        == pytest.approx(2 / 3)
    # No pattern: each reference is the pattern.
    assert metrics.compute(_call("regex"), ["cat 12", "dog"], [r"cat \d+", r"^c"], []) == 0.5
    with pytest.raises(StepError, match="invalid pattern") as e:
        metrics.compute(_call("regex", pattern="(unclosed"), ["x"], ["x"], [])
    assert e.value.hint


# ---- overlap metrics ---------------------------------------------------------------------

def test_bleu_and_chrf_pass_their_arguments_to_sacrebleu() -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    preds = ["the cat sat on the mat", "Hello World again today"]
    refs = ["the cat is on the mat", "hello world again today"]
    assert metrics.bleu(refs, refs) == pytest.approx(100.0)
    assert metrics.bleu(["zzz qqq"], ["the cat"]) == 0.0
    expected = sacrebleu.corpus_bleu(preds, [refs]).score
    assert metrics.compute(_call("bleu"), preds, refs, []) == pytest.approx(expected)
    assert metrics.compute(_call("bleu", lowercase=True), preds, refs, []) > expected
    assert metrics.compute(_call("chrf"), refs, refs, []) == pytest.approx(100.0)
    chrf = metrics.compute(_call("chrf"), preds, refs, [])
    assert chrf == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    chrf_pp = metrics.compute(_call("chrf", word_order=2), preds, refs, [])
    assert 0 < chrf_pp < 100 and chrf_pp != chrf


def test_rouge_l_by_hand() -> None:
    # LCS "the cat on the mat" = 5 of 6 tokens on both sides.
    assert metrics.rouge_l_pair("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS "a c": P = 2/4, R = 2/3.
    assert metrics.rouge_l_pair("a b c d", "a c e") == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert metrics.rouge_l_pair("The Cat", "the cat") == 1.0
    assert metrics.rouge_l_pair("The Cat", "the cat", lowercase=False) == 0.0
    assert metrics.rouge_l_pair("", "x") == 0.0 and metrics.rouge_l_pair("...", "x") == 0.0
    rows = metrics.compute(_call("rouge_l"), ["the cat sat on the mat", "x"], ["the cat is on the mat", "x"], [])
    assert rows == pytest.approx((5 / 6 + 1) / 2)


def _lcs_brute(a: list[str], b: list[str]) -> int:
    for k in range(min(len(a), len(b)), 0, -1):
        subs = set(itertools.combinations(b, k))
        if any(c in subs for c in itertools.combinations(a, k)):
            return k
    return 0


def test_lcs_matches_brute_force() -> None:
    rng = random.Random(3)
    for _ in range(200):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 7))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 7))]
        assert metrics.lcs_length(a, b) == _lcs_brute(a, b), (a, b)


def test_win_rate_counts_ties_half() -> None:
    assert metrics.win_rate([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0]) == pytest.approx(2.5 / 4)
    assert metrics.win_rate([1.0, 2.0], [1.0, 2.0]) == 0.5
    with pytest.raises(ValueError):
        metrics.win_rate([1.0], [])


# ---- custom Python metrics ------------------------------------------------------------------

def _metric_file(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "my_metrics.py"
    f.write_text(textwrap.dedent(body))
    return f


def test_py_metric_gets_predictions_references_and_prompts(tmp_path: Path) -> None:
    f = _metric_file(tmp_path, """
        def overlap(predictions, references, prompts):
            assert len(predictions) == len(references) == len(prompts)
            return sum(r in p for p, r in zip(predictions, references)) / len(references)

        def two(predictions, references):
            return len(predictions) * 10

        def prompt_len(*args):
            return sum(len(p) for p in args[2])
        """)
    preds, refs, prompts = ["a cat", "dog"], ["cat", "cow"], ["p1", "p22"]
    assert metrics.compute(_call("py", file=f, function="overlap"), preds, refs, prompts) == 0.5
    assert metrics.compute(_call("py", file=f, function="two"), preds, refs, prompts) == 20.0
    assert metrics.compute(_call("py", file=f, function="prompt_len"), preds, refs, prompts) == 5.0
    assert metric_key(_call("py", file=f, function="overlap")) == "overlap"


def test_py_metric_errors_are_step_errors(tmp_path: Path) -> None:
    f = _metric_file(tmp_path, """
        def broken(predictions, references, prompts):
            return 1 / 0

        def not_a_number(predictions, references, prompts):
            return "high"
        """)
    with pytest.raises(StepError, match="raised ZeroDivisionError") as e:
        metrics.custom(f, "broken", ["a"], ["a"], ["p"])
    assert e.value.hint and "my_metrics.py:3" in e.value.hint
    with pytest.raises(StepError, match="not a number"):
        metrics.custom(f, "not_a_number", ["a"], ["a"], ["p"])
    with pytest.raises(StepError, match="no function 'missing'") as e:
        metrics.custom(f, "missing", ["a"], ["a"], ["p"])
    assert e.value.hint and "broken" in e.value.hint
    bad = tmp_path / "bad.py"
    bad.write_text("x = (\n")
    with pytest.raises(StepError, match="importing the metric file failed"):
        metrics.custom(bad, "f", ["a"], ["a"], ["p"])


def test_py_metric_reloads_when_the_file_changes(tmp_path: Path) -> None:
    f = _metric_file(tmp_path, "def m(p, r, q):\n    return 1.0\n")
    assert metrics.custom(f, "m", ["a"], ["a"], ["p"]) == 1.0
    f.write_text("def m(p, r, q):\n    return 2.0\n")
    assert metrics.custom(f, "m", ["a"], ["a"], ["p"]) == 2.0


# ---- declarations and the compiler -------------------------------------------------------------

def test_every_metric_is_declared_and_documented() -> None:
    assert set(metrics.TEXT_METRICS) | {"loss", "perplexity", "reward", "win_rate", "refusal_rate", "judge", "toxicity"} == set(METRICS)
    assert GENERATIVE == set(METRICS) - {"loss", "perplexity"}
    for name, sig in METRICS.items():
        assert sig.doc, name
        assert all(a.doc for a in sig.attrs), name
    names = EVAL_SPEC.signature.names
    for attr in ("extra_data", "do_sample", "temperature", "top_p", "seed", "max_new_tokens", "samples"):
        assert attr in names


PIPELINE = '''ft 0.1
dataset tasks {
  source = jsonl("data/tasks.jsonl")
}
dataset general {
  source = jsonl("data/general.jsonl")
}
model base {
  init = tiny(data = tasks)
}
model rm {
  path = "rm"
}
eval report {
  models     = [base]
  data       = tasks
  extra_data = [general]
  do_sample  = true
  temperature = 0.7
  seed       = 3
  metrics    = [loss, exact_match(collapse_whitespace = true, strip_punctuation = true), contains,
                regex("answer: (\\d+)"), bleu(tokenize = "intl"), chrf(word_order = 2), rouge_l,
                reward(rm), win_rate(judge = rm, against = base), py("m.py", "score")]
  assert base.rouge_l >= 0
}
'''


def test_a_pipeline_with_every_metric_compiles(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    for name in ("tasks", "general"):
        (tmp_path / "data" / f"{name}.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "config.json").write_text("{}")
    (tmp_path / "m.py").write_text("def score(p, r, q):\n    return 0.0\n")
    program = compile_source(PIPELINE, str(tmp_path / "p.ft"), tmp_path)
    node = program.nodes["eval.report"]
    # model-typed call arguments are graph edges: the reward model runs before the eval.
    assert set(program.graph.predecessors("eval.report")) == {"model.base", "model.rm", "dataset.tasks",
                                                              "dataset.general"}
    keys = [metric_key(c) for c in node.params["metrics"]]
    assert keys == ["loss", "exact_match", "contains", "regex", "bleu", "chrf", "rouge_l", "reward",
                    "win_rate", "score"]
    regex = node.params["metrics"][3]
    assert regex.args["pattern"] == r"answer: (\d+)"
    assert node.params["do_sample"] is True and node.params["seed"] == 3


def test_the_py_metric_file_enters_the_eval_key(tmp_path: Path) -> None:
    from ftlang.runtime.hashing import StatCache
    from ftlang.runtime.keys import canon

    f = tmp_path / "m.py"
    f.write_text("def score(p, r, q):\n    return 0.0\n")
    text = ('ft 0.1\ndataset t { source = jsonl("t.jsonl") }\nmodel b { init = tiny(data = t) }\n'
            'eval e {\n  models = [b]\n  data = t\n  metrics = [py("m.py", "score")]\n}\n')
    (tmp_path / "t.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    call = compile_source(text, str(tmp_path / "p.ft"), tmp_path).nodes["eval.e"].params["metrics"][0]
    stat = StatCache(tmp_path / "stat.json")
    before = canon(call, {}, stat)
    f.write_text("def score(p, r, q):\n    return 1.0\n")
    stat = StatCache(tmp_path / "stat2.json")
    after = canon(call, {}, stat)
    assert before != after and "m.py" not in repr(before)
