"""select: pick the best point of a sweep (`select = min loss on clean.heldout`).

In:  params["models"], the candidate model Artifacts (every point of one swept train
     block); params["data"], the rows the metric is measured on; params["metric"]
     (loss | perplexity | exact_match) and params["mode"] (min | max); the train block's
     field names (prompt_field, completion_field, text_field, objective).
Out: the winner's files, copied unchanged, so this node's digest equals the winner's and
     everything downstream is keyed on the same bytes as if it had named the winner;
     {"selected": node id, "scores": {node id: value}, "metric", "mode"} for the ledger.

Ties go to the earlier candidate (the order of the sweep), so the choice is
deterministic. The compiler adds this step; it is not a block kind users write.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from typing import Any

from ftlang.stdlib.evaluate_spec import METRIC_INDEX
from ftlang.stdlib.spec import (
    REQUIRED,
    Artifact,
    Attr,
    Need,
    Signature,
    StepContext,
    StepError,
    StepSpec,
    fields,
)

METRICS = ("loss", "perplexity", "exact_match")  # eval's metrics of these names, measured the same way
ALIASES = {"eval_loss": "loss"}  # `select = min eval_loss on ...` reads as the loss
# Which mode keeps the best point of each metric (the compiler warns about the other one).
BEST = {m: "max" if METRIC_INDEX[m].higher_is_better else "min" for m in METRICS}


def needs(p: Mapping[str, Any]) -> list[Need]:
    """The train block's fields name the columns (the select node copies them)."""
    names = ("text_field",) if p.get("objective") == "clm" else ("prompt_field", "completion_field")
    return [Need("data", fields(p, names))]


def summary(meta: Mapping[str, Any]) -> str:
    kept = meta.get("selected")
    return f"kept {kept.split('.', 1)[-1]}" if isinstance(kept, str) else ""

SPEC = StepSpec(
    kind="select", version=2, output="model", run="ftlang.stdlib.select:run",
    signature=Signature("select", (
        Attr("models", "list[model]", REQUIRED, "the candidates: every point of a swept train block"),
        Attr("data", "dataset", REQUIRED, "rows the metric is measured on"),
        Attr("metric", "enum", "loss", "what decides", choices=METRICS),
        Attr("mode", "enum", "min", "whether the lowest or the highest value wins", choices=("min", "max")),
        Attr("objective", "enum", "sft", "the train block's objective", choices=("sft", "clm")),
        Attr("prompt_field", "str", "prompt", "column holding the prompt (sft)"),
        Attr("completion_field", "str", "completion", "column holding the completion (sft)"),
        Attr("text_field", "str", "text", "column holding the text (clm)"),
        Attr("limit", "int", None, "measure on at most this many rows", ge=1),
        Attr("max_new_tokens", "int", 32, "generation budget for exact_match", ge=1),
        Attr("batch_size", "int", 16, "examples per forward pass", ge=1, semantic=False),
        Attr("device", "enum", None, "where every model of this step runs: auto (the default) picks "
             "cuda, then mps, then cpu, as train does; one choice for generation, losses and judges",
             choices=("auto", "cuda", "mps", "cpu")),
    ), "Measures every point of a sweep on held-out rows and keeps the best model."),
    needs=needs, summary=summary,
)


def score(ctx: StepContext, artifact: Artifact, prompts: list[str], refs: list[str], device: str) -> float:
    """The metric of one candidate (loss over completion tokens, as eval measures it)."""
    from ftlang.stdlib import evaluate, modelio
    from ftlang.stdlib import template as templates
    from ftlang.stdlib.adapters import load_measured

    p = ctx.params
    tokenizer = modelio.load_tokenizer(artifact)
    lm = load_measured(artifact, device, ctx.cache)
    if p["objective"] == "clm":
        tpl: dict[str, Any] = {"style": "plain", "system": "", "separator": ""}
    else:
        tpl = modelio.template_of(artifact) or templates.load(None)
    max_length = int(getattr(lm.config, "max_position_embeddings", None) or 2048)
    batch_size = int(p["batch_size"])
    metric = p["metric"]
    if metric == "exact_match":
        outs = evaluate.generate(lm, tokenizer, tpl, prompts, int(p["max_new_tokens"]),
                                 batch_size, max_length)
        hits = sum(evaluate.normalize(o, True) == evaluate.normalize(r, True) for o, r in zip(outs, refs))
        return hits / len(refs)
    loss = evaluate.completion_loss(lm, tokenizer, tpl, prompts, refs, batch_size, max_length)
    return math.exp(min(loss, 700.0)) if metric == "perplexity" else loss


def run(ctx: StepContext) -> dict[str, Any]:
    from ftlang.stdlib.examples import read_columns

    p = ctx.params
    models: list[Artifact] = list(p["models"])
    if not models:
        raise StepError("select has no candidates")
    mode = p["mode"]
    # .get: the compiler always sets objective and limit (select.SPEC), but
    # tests/test_compiler_select_step.py builds a context without them.
    if p.get("objective") == "clm":
        tf = p["text_field"]
        cols = read_columns(p["data"], [tf], limit=p.get("limit"))
        texts = [str(t) for t in cols[tf] if t is not None]
        prompts, refs = [""] * len(texts), texts
    else:
        pf, cf = p["prompt_field"], p["completion_field"]
        cols = read_columns(p["data"], [pf, cf], limit=p.get("limit"))
        pairs = [(str(a), str(b)) for a, b in zip(cols[pf], cols[cf]) if a is not None and b is not None]
        prompts, refs = [a for a, _ in pairs], [b for _, b in pairs]
    if not refs:
        raise StepError("the selection dataset has no rows", path=p["data"].dataset_file())
    from ftlang.stdlib import devices

    device = devices.resolve(p.get("device"))  # one choice for every candidate
    scores: dict[str, float] = {}
    for i, art in enumerate(models):
        ctx.progress(i, len(models), f"measuring {art.node}")
        scores[art.node] = round(score(ctx, art, prompts, refs, device), 6)
        ctx.log(f"{art.node}: {p['metric']} {scores[art.node]:g}")
    ctx.progress(len(models), len(models), "done")
    best = min(scores.values()) if mode == "min" else max(scores.values())
    winner = next(a for a in models if scores[a.node] == best)  # ties: the first point
    copy_artifact(winner, ctx)
    ctx.log(f"selected {winner.node}")
    return {"selected": winner.node, "scores": scores, "metric": p["metric"], "mode": mode}


def copy_artifact(winner: Artifact, ctx: StepContext) -> None:
    """The winner's files, byte for byte (links kept as links): same digest."""
    shutil.copytree(winner.path, ctx.out, symlinks=True, dirs_exist_ok=True)
