"""eval: measure models side by side on held-out prompt/completion rows.

In:  params["models"] (model Artifacts), params["data"] and params["extra_data"]
     (dataset Artifacts), params["metrics"] (Calls, see evaluate_spec.METRICS), the
     generation settings (max_new_tokens, do_sample, temperature, top_p, seed).
Out: metrics.json  {"models": {model: {metric: value}},   values on `data` (asserts read these)
                    "rows": n,                             rows of `data`
                    "datasets": {dataset: {"models": ..., "rows": n}},  every dataset
                    "generation": {...}}                   how generations were made
     samples.jsonl one row per shown example: dataset, prompt, reference, each model's
                   generation (and its reward score when a reward model judged it).
     The returned metadata (for the ledger) is metrics.json plus per-model seconds.

Every file is byte-deterministic for the same inputs: timings live in the ledger only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from ftlang.stdlib import devices, modelio, safety
from ftlang.stdlib import generate as gen
from ftlang.stdlib import metrics as text_metrics
from ftlang.stdlib import template as templates
from ftlang.stdlib.adapters import load_measured
from ftlang.stdlib.evaluate_spec import GENERATIVE, METRICS, metric_key
from ftlang.stdlib.examples import read_columns
from ftlang.stdlib.spec import Artifact, Call, StepContext, StepError

DIGITS = 6  # metrics are rounded: stable, readable JSON
JUDGED = ("reward", "win_rate")  # metrics scored by a reward model


def model_name(artifact: Artifact) -> str:
    """The block name of a model node: "train.sft[lr=2e-4]" -> "sft[lr=2e-4]"."""
    return artifact.node.split(".", 1)[1] if "." in artifact.node else artifact.node


def dataset_name(artifact: Artifact) -> str:
    """How a dataset is named in tables: "curate.clean" port "heldout" -> "clean.heldout"."""
    name = model_name(artifact)
    return f"{name}.{artifact.port}" if artifact.port else name


def normalize(text: str, enabled: bool) -> str:
    """exact_match's default normalisation (strip + casefold), or none."""
    return text_metrics.normalize_text(text) if enabled else text


def completion_loss(lm: Any, tokenizer: Any, tpl: dict[str, Any], prompts: list[str],
                    completions: list[str], batch_size: int, max_length: int) -> float:
    """Mean cross-entropy per completion token (EOS included, as in training)."""
    import torch
    from ftlang.stdlib.examples import IGNORE, make_collator, sft_examples

    examples, _ = sft_examples(tokenizer, tpl, prompts, completions, max_length)
    collate = make_collator(tokenizer.pad_token_id)
    device = next(lm.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[i:i + batch_size]).items()}
            logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            # Token t predicts token t+1; sum, not mean, so batches weigh by token count.
            logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                ignore_index=IGNORE, reduction="sum").item()
            count += int((labels != IGNORE).sum())
    return total / max(count, 1)


def generate(lm: Any, tokenizer: Any, tpl: dict[str, Any], prompts: list[str],
             max_new_tokens: int, batch_size: int, max_length: int) -> list[str]:
    """Greedy completions (kept for `select`); see generate.generate for sampling."""
    return gen.generate(lm, tokenizer, tpl, prompts, gen.Sampling(max_new_tokens=max_new_tokens),
                        batch_size, max_length)


# ---- inputs -------------------------------------------------------------------------------

@dataclass
class Rows:
    name: str
    prompts: list[str]
    refs: list[str]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> metric -> value
    generations: dict[str, list[str]] = field(default_factory=dict)  # model -> texts


def _read_chat(data: Artifact, p: dict[str, Any]) -> Rows:
    """Chat rows: the turns before the last assistant message are the prompt (kept as a
    conversation for the template), that message's content the reference."""
    mf = p["messages_field"]
    cols = read_columns(data, [mf], limit=p["limit"], hints={mf: "set messages_field = \"COLUMN\""})
    prompts: list[Any] = []
    refs: list[str] = []
    for cell in cols[mf]:
        msgs = json.loads(cell) if isinstance(cell, str) else cell
        if not isinstance(msgs, list):
            continue
        last = max((i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "assistant"),
                   default=None)
        if not last:  # no assistant turn, or nothing before it
            continue
        prompts.append(json.dumps([{"role": str(m.get("role")), "content": str(m.get("content") or "")}
                                   for m in msgs[:last]], ensure_ascii=False))
        refs.append(str(msgs[last].get("content") or ""))
    rows = Rows(dataset_name(data), prompts, refs)
    if not rows.prompts:
        raise StepError(f"the eval dataset {rows.name} has no chat rows with an assistant turn",
                        path=data.dataset_file())
    return rows


def _read(data: Artifact, p: dict[str, Any]) -> Rows:
    if p["messages_field"] is not None:
        return _read_chat(data, p)
    pf, cf = p["prompt_field"], p["completion_field"]
    cols = read_columns(data, [pf, cf], limit=p["limit"], hints={
        pf: "set prompt_field = \"COLUMN\"", cf: "set completion_field = \"COLUMN\""})
    keep = [i for i, (a, b) in enumerate(zip(cols[pf], cols[cf], strict=True))
            if a is not None and b is not None]
    rows = Rows(dataset_name(data), [str(cols[pf][i]) for i in keep], [str(cols[cf][i]) for i in keep])
    if not rows.prompts:
        raise StepError(f"the eval dataset {rows.name} has no rows", path=data.dataset_file())
    return rows


def _check_calls(calls: list[Call]) -> None:
    unknown = [c.name for c in calls if c.name not in METRICS]
    if unknown:
        raise StepError(f"unknown metric {unknown[0]!r}", hint=f"known: {', '.join(sorted(METRICS))}")
    seen: dict[str, Call] = {}
    for c in calls:
        key = metric_key(c)
        if key in seen:
            raise StepError(f"the metric {key!r} is listed twice in this eval",
                            hint="each metric gives one column: keep one, or measure the other "
                                 "variant in a second eval block")
        seen[key] = c


def _template(artifact: Artifact, override: Artifact | None, tokenizer: Any) -> dict[str, Any]:
    if override is not None:
        return templates.resolve(templates.load(override), tokenizer)
    return modelio.template_of(artifact) or templates.load(None)


# ---- the step -------------------------------------------------------------------------------

def run(ctx: StepContext) -> dict[str, Any]:
    import torch

    p = ctx.params
    models: list[Artifact] = list(p["models"])
    if not models:
        raise StepError("eval needs at least one model in `models`")
    calls: list[Call] = list(p["metrics"])
    _check_calls(calls)
    names = {c.name for c in calls}

    datasets: list[Rows] = []
    for data in [p["data"], *(p["extra_data"] or [])]:
        if any(d.name == dataset_name(data) for d in datasets):
            continue  # the same dataset twice measures nothing new
        datasets.append(_read(data, p))
    batch_size = int(p["batch_size"])
    sampling = gen.Sampling.from_params(p)
    shown = int(p["samples"])
    generative = bool(names & GENERATIVE)
    # win_rate compares against a model that need not be in `models`: it generates too.
    against = [c.args["against"] for c in calls if c.name == "win_rate"]
    reported = {m.node for m in models}
    generators = models + [a for i, a in enumerate(against)
                           if a.node not in reported and a.node not in {b.node for b in against[:i]}]
    torch.manual_seed(0)
    device = devices.resolve(p["device"])  # one choice for every model, judge and metric here
    ctx.log(f"models run on {device}")

    timings: dict[str, float] = {}
    total = len(generators) * len(datasets)
    for i, artifact in enumerate(generators):
        name = model_name(artifact)
        started = time.perf_counter()
        tokenizer = modelio.load_tokenizer(artifact)
        lm = load_measured(artifact, device, ctx.cache, adapter_base=p["adapter_base"])
        tpl = _template(artifact, p["template"], tokenizer)
        max_length = int(getattr(lm.config, "max_position_embeddings", None) or 2048)
        for j, rows in enumerate(datasets):
            ctx.progress(i * len(datasets) + j, total, f"{name} on {rows.name}")
            scores: dict[str, float] = {}
            if artifact.node in reported and names & {"loss", "perplexity"}:
                loss = completion_loss(lm, tokenizer, tpl, rows.prompts, rows.refs, batch_size, max_length)
                if "loss" in names:
                    scores["loss"] = round(loss, DIGITS)
                if "perplexity" in names:
                    scores["perplexity"] = round(math.exp(min(loss, 700.0)), DIGITS)
            # Without a generative metric, only the rows shown in samples.jsonl are generated.
            todo = rows.prompts if generative else rows.prompts[:shown]
            rows.generations[name] = gen.generate(lm, tokenizer, tpl, todo, sampling, batch_size, max_length)
            if artifact.node in reported:
                for c in calls:
                    if c.name in text_metrics.TEXT_METRICS:
                        value = text_metrics.compute(c, rows.generations[name], rows.refs, rows.prompts)
                        scores[metric_key(c)] = round(value, DIGITS)
                rows.scores[name] = scores
        timings[name] = round(time.perf_counter() - started, 3)
        del lm

    judged = _judge(ctx, calls, datasets, models, batch_size, device)
    safety.score(calls, datasets, [model_name(m) for m in models], batch_size, ctx.log)
    for rows in datasets:
        for m in models:
            ordered = {metric_key(c): rows.scores[model_name(m)].get(metric_key(c)) for c in calls}
            rows.scores[model_name(m)] = {k: v for k, v in ordered.items() if v is not None}
            line = ", ".join(f"{k} {v:g}" for k, v in rows.scores[model_name(m)].items())
            where = f" on {rows.name}" if len(datasets) > 1 else ""
            ctx.log(f"{model_name(m)}{where}: {line}")
    ctx.progress(total, total, "done")

    first = datasets[0]
    report = {"models": {model_name(m): first.scores[model_name(m)] for m in models},
              "rows": len(first.prompts),
              "datasets": {d.name: {"models": {model_name(m): d.scores[model_name(m)] for m in models},
                                    "rows": len(d.prompts)} for d in datasets},
              "generation": sampling.describe()}
    (ctx.out / "metrics.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n",
                                          encoding="utf-8")
    with (ctx.out / "samples.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        for rows in datasets:
            for k in range(min(shown, len(rows.prompts))):
                row: dict[str, Any] = {"dataset": rows.name, "prompt": rows.prompts[k], "reference": rows.refs[k],
                                       "generations": {model_name(m): rows.generations[model_name(m)][k]
                                                       for m in models}}
                if rows.name in judged:
                    row["scores"] = {n: round(s[k], DIGITS) for n, s in judged[rows.name].items()
                                     if n in row["generations"]}
                f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    # Timings go to the ledger only: the artifact files must not change between reruns.
    return {**report, "seconds": timings}


def _judge(ctx: StepContext, calls: list[Call], datasets: list[Rows], models: list[Artifact],
           batch_size: int, device: str) -> dict[str, dict[str, list[float]]]:
    """reward(...) and win_rate(...): each judge scores every generation once.

    Returns the first judge's per-row scores (dataset -> model -> scores) for samples.jsonl.
    """
    judges: dict[str, Artifact] = {}
    for c in calls:
        if c.name in JUDGED:
            j = c.args["model"] if c.name == "reward" else c.args["judge"]
            judges.setdefault(j.node, j)
    shown: dict[str, dict[str, list[float]]] = {}
    for jnode, judge in judges.items():
        ctx.log(f"scoring generations with the reward model {model_name(judge)}")
        rm = gen.RewardModel(judge, device)
        scored: dict[str, dict[str, list[float]]] = {}
        for rows in datasets:
            scored[rows.name] = {name: rm.score(rows.prompts, texts, batch_size)
                                 for name, texts in rows.generations.items()}
        if not shown:
            shown = scored
        del rm
        for c in calls:
            if c.name == "reward" and c.args["model"].node == jnode:
                for rows in datasets:
                    for m in models:
                        s = scored[rows.name][model_name(m)]
                        rows.scores[model_name(m)]["reward"] = round(sum(s) / len(s), DIGITS)
            elif c.name == "win_rate" and c.args["judge"].node == jnode:
                base = model_name(c.args["against"])
                for rows in datasets:
                    for m in models:
                        rate = text_metrics.win_rate(scored[rows.name][model_name(m)], scored[rows.name][base])
                        rows.scores[model_name(m)]["win_rate"] = round(rate, DIGITS)
    return shown
