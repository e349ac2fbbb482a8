"""The eval step on tiny models, on CPU: every metric, several datasets, sampling,
reward-model scores and win rates, byte-determinism, and silence.

Contexts are built by hand and artifacts committed under <tmp>/objects/<digest>/, as
the runtime does. The reward model is a tiny LlamaForSequenceClassification saved in
the model artifact layout (stdlib/modelio.py) and checked against transformers' own
forward pass, one row at a time.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from pathlib import Path
from typing import Any

import pytest
from ftlang.stdlib import evaluate, model, modelio, train
from ftlang.stdlib.evaluate_spec import EVAL_SPEC, METRICS
from ftlang.stdlib.spec import Artifact, Call, StepError
from stepkit import Store, files

WORDS = ("cat", "dog", "sun", "moon", "tree", "bird", "fish", "star")
TINY = {"arch": "llama", "hidden": 32, "layers": 1, "heads": 2, "intermediate": None,
        "vocab": 300, "context": 64, "seed": 0}


def _reverse(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        w = rng.sample(WORDS, 3)
        rows.append({"prompt": "Reverse: " + " ".join(w), "completion": " ".join(reversed(w))})
    return rows


def _adds(n: int) -> list[dict[str, str]]:
    rng = random.Random(5)
    return [{"question": f"Add {a} and {b}", "answer": str(a + b)}
            for a, b in ((rng.randint(1, 9), rng.randint(1, 9)) for _ in range(n))]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("ft"))


@pytest.fixture(scope="module")
def arts(store: Store) -> dict[str, Artifact]:
    """Datasets, a tiny base, a briefly tuned model and a tiny reward model."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    rows = _reverse(140, 0)
    out = {"train": store.dataset("dataset.train", rows[:120]),
           "heldout": store.dataset("curate.clean", rows[120:]),
           "adds": store.dataset("dataset.adds", _adds(12))}
    out["heldout"] = Artifact("curate.clean", out["heldout"].digest, out["heldout"].path, None)
    text = store.dataset("dataset.text", [{"text": f"{r['prompt']}\n{r['completion']}"} for r in rows]
                         + [{"text": f"{r['question']}\n{r['answer']}"} for r in _adds(12)])
    ctx = store.ctx("model.base", {"path": None, "hub": None, "revision": None,
                                   "init": Call("tiny", {**TINY, "data": text})})
    model.run(ctx)
    out["base"] = store.commit(ctx)
    ctx = store.ctx("train.sft", {
        "from": out["base"], "data": out["train"], "method": Call("full", {}), "objective": "sft",
        "template": None, "prompt_field": "prompt", "completion_field": "completion", "text_field": "text",
        "lr": 5e-3, "epochs": 1.0, "max_steps": 40, "batch_size": 8, "grad_accum": 1, "max_length": 32,
        "warmup": 0.0, "scheduler": "linear", "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 0,
        "logging_steps": 10})
    train.run(ctx)
    out["sft"] = store.commit(ctx)
    tok = modelio.load_tokenizer(out["base"])
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                         num_labels=1, pad_token_id=tok.pad_token_id,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    torch.manual_seed(7)
    rm = LlamaForSequenceClassification(config)
    ctx = store.ctx("model.rm", {})
    modelio.save_full(rm, tok, ctx.out, template=None)
    out["rm"] = store.commit(ctx)
    return out


def _params(**kw: Any) -> dict[str, Any]:
    """Every eval attribute with its declared default, as the compiler passes them."""
    p = {a.name: a.default for a in EVAL_SPEC.signature.attrs}
    p["metrics"] = [Call(n, {}) for n in p["metrics"]]
    p.update(max_new_tokens=6, batch_size=8)
    p.update(kw)
    return p


def _call(name: str, **args: Any) -> Call:
    return Call(name, {a.name: args.get(a.name, a.default) for a in METRICS[name].attrs})


def _samples(art: Artifact) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (art.path / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full(store: Store, arts: dict[str, Artifact], tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Artifact, dict[str, Any], Path, dict[str, Any]]:
    """One eval with every metric on two datasets: (artifact, metadata, metric folder, params)."""
    folder = tmp_path_factory.mktemp("metric")
    (folder / "m.py").write_text("def words(predictions, references, prompts):\n"
                                 "    return sum(len(p.split()) for p in predictions) / len(predictions)\n")
    calls = [_call("loss"), _call("perplexity"), _call("exact_match"), _call("contains"),
             _call("regex", pattern=r"(\w+)"), _call("bleu"), _call("chrf"), _call("rouge_l"),
             _call("reward", model=arts["rm"]), _call("win_rate", judge=arts["rm"], against=arts["base"]),
             _call("py", file=folder / "m.py", function="words")]
    params = _params(models=[arts["base"], arts["sft"]], data=arts["heldout"], extra_data=[arts["adds"]],
                     metrics=calls, samples=20, prompt_field="prompt", completion_field="completion")
    # The second dataset names its columns differently: that is an error with a hint...
    with pytest.raises(StepError, match="no column 'prompt'") as e:
        evaluate.run(store.ctx("eval.bad", params))
    assert e.value.hint and "prompt_field" in e.value.hint
    # ...so it is given the same names through a curate step in real pipelines; here, rows.
    adds = store.dataset("dataset.adds", [{"prompt": r["question"], "completion": r["answer"]} for r in _adds(12)])
    params["extra_data"] = [adds]
    ctx = store.ctx("eval.report", params)
    meta = evaluate.run(ctx)
    json.dumps(meta)
    return store.commit(ctx), meta, folder, params


def test_metrics_json_has_every_metric_per_model_and_dataset(full: tuple[Artifact, dict[str, Any], Path, dict[str, Any]]) -> None:
    art, meta, _, _ = full
    report = json.loads((art.path / "metrics.json").read_text())
    keys = {"loss", "perplexity", "exact_match", "contains", "regex", "bleu", "chrf", "rouge_l", "reward",
            "win_rate", "words"}
    assert set(report["datasets"]) == {"clean", "adds"}
    assert report["datasets"]["clean"]["rows"] == 20 and report["datasets"]["adds"]["rows"] == 12
    # `models` (what assert lines read) is the first dataset's.
    assert report["models"] == report["datasets"]["clean"]["models"] and report["rows"] == 20
    assert report["generation"] == {"decoding": "greedy", "max_new_tokens": 6}
    for block in report["datasets"].values():
        assert set(block["models"]) == {"base", "sft"}
        for scores in block["models"].values():
            assert set(scores) == keys
            assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]), rel=1e-4)
            for k in ("exact_match", "contains", "regex", "rouge_l", "win_rate"):
                assert 0 <= scores[k] <= 1
            for k in ("bleu", "chrf"):
                assert 0 <= scores[k] <= 100
        # against itself a model wins half the time; the two rates are complementary here.
        assert block["models"]["base"]["win_rate"] == 0.5
    clean = report["datasets"]["clean"]["models"]
    assert clean["sft"]["loss"] < clean["base"]["loss"]  # 40 steps of tuning do something
    assert meta["models"] == report["models"] and set(meta["seconds"]) == {"base", "sft"}


def test_text_metrics_agree_with_the_generations(full: tuple[Artifact, dict[str, Any], Path, dict[str, Any]]) -> None:
    from ftlang.stdlib import metrics

    art, _, _, _ = full
    report = json.loads((art.path / "metrics.json").read_text())
    rows = _samples(art)
    assert [r["dataset"] for r in rows] == ["clean"] * 20 + ["adds"] * 12  # samples=20 >= every row
    for data in ("clean", "adds"):
        mine = [r for r in rows if r["dataset"] == data]
        refs = [r["reference"] for r in mine]
        for name in ("base", "sft"):
            gens = [r["generations"][name] for r in mine]
            got = report["datasets"][data]["models"][name]
            assert got["words"] == pytest.approx(sum(len(g.split()) for g in gens) / len(gens), abs=1e-6)
            assert got["rouge_l"] == pytest.approx(metrics.rouge_l(gens, refs), abs=1e-6)
            assert got["exact_match"] == pytest.approx(
                sum(g.strip().casefold() == r.strip().casefold() for g, r in zip(gens, refs)) / len(refs), abs=1e-6)


def test_reward_and_win_rate_match_transformers_row_by_row(
        full: tuple[Artifact, dict[str, Any], Path, dict[str, Any]], arts: dict[str, Artifact]) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    art, _, _, _ = full
    report = json.loads((art.path / "metrics.json").read_text())
    tok = modelio.load_tokenizer(arts["rm"])
    rm = AutoModelForSequenceClassification.from_pretrained(str(arts["rm"].path)).eval()
    rows = [r for r in _samples(art) if r["dataset"] == "clean"]
    scores: dict[str, list[float]] = {}
    for name in ("base", "sft"):
        scores[name] = []
        for r in rows:
            # the plain template, and EOS at the end as reward_model training appends it
            ids = tok(f"{r['prompt']}\n{r['generations'][name]}{tok.eos_token}")["input_ids"]
            with torch.no_grad():
                scores[name].append(float(rm(input_ids=torch.tensor([ids])).logits[0, 0]))
            assert r["scores"][name] == pytest.approx(scores[name][-1], abs=1e-5)
        got = report["datasets"]["clean"]["models"][name]
        assert got["reward"] == pytest.approx(sum(scores[name]) / len(rows), abs=1e-5)
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores["sft"], scores["base"]))
    assert report["datasets"]["clean"]["models"]["sft"]["win_rate"] == pytest.approx(wins / len(rows))


def test_eval_is_byte_deterministic_and_silent(store: Store, full: tuple[Artifact, dict[str, Any], Path, dict[str, Any]],
                                               capfd: pytest.CaptureFixture[str]) -> None:
    art, _, _, params = full
    ctx = store.ctx("eval.report", params)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate.run(ctx)
    out, err = capfd.readouterr()
    assert [str(w.message) for w in caught] == []
    assert out == "" and err == "", (out, err)  # the step reports through ctx.log only
    assert files(ctx.out) == files(art.path)
    assert any(line.startswith("sft on adds: loss ") for line in store.logs)


def test_sampling_is_seeded(store: Store, arts: dict[str, Artifact]) -> None:
    def gens(**kw: Any) -> list[str]:
        ctx = store.ctx("eval.sample", _params(models=[arts["base"]], data=arts["heldout"], limit=8,
                                               metrics=[_call("contains")], max_new_tokens=5, **kw))
        meta = evaluate.run(ctx)
        rows = [json.loads(x) for x in (ctx.out / "samples.jsonl").read_text().splitlines()]
        assert meta["generation"]["decoding"] == ("sample" if kw.get("do_sample") else "greedy")
        return [r["generations"]["base"] for r in rows]

    greedy = gens()
    first = gens(do_sample=True, seed=1, temperature=1.5)
    assert first == gens(do_sample=True, seed=1, temperature=1.5)
    assert first != gens(do_sample=True, seed=2, temperature=1.5)
    assert first != greedy


def test_win_rate_against_a_model_not_in_the_table(store: Store, arts: dict[str, Artifact]) -> None:
    ctx = store.ctx("eval.wr", _params(models=[arts["sft"]], data=arts["heldout"], limit=6,
                                       metrics=[_call("win_rate", judge=arts["rm"], against=arts["base"])]))
    meta = evaluate.run(ctx)
    assert set(meta["models"]) == {"sft"} and 0 <= meta["models"]["sft"]["win_rate"] <= 1
    rows = [json.loads(x) for x in (ctx.out / "samples.jsonl").read_text().splitlines()]
    assert set(rows[0]["generations"]) == {"sft"}


def test_user_errors(store: Store, arts: dict[str, Artifact]) -> None:
    with pytest.raises(StepError, match="not a reward model") as e:
        evaluate.run(store.ctx("eval.e1", _params(models=[arts["base"]], data=arts["heldout"], limit=2,
                                                  metrics=[_call("reward", model=arts["base"])])))
    assert e.value.hint and "SequenceClassification" in e.value.hint
    with pytest.raises(StepError, match="listed twice"):
        evaluate.run(store.ctx("eval.e2", _params(models=[arts["base"]], data=arts["heldout"], limit=2,
                                                  metrics=[_call("contains"), _call("contains", casefold=False)])))
    with pytest.raises(StepError, match="unknown metric 'accuracy'"):
        evaluate.run(store.ctx("eval.e3", _params(models=[arts["base"]], data=arts["heldout"],
                                                  metrics=[Call("accuracy", {})])))
