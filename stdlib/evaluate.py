"""eval: measure models side by side on held-out prompt/completion rows."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from ftlang.stdlib import modelio
from ftlang.stdlib import template as templates
from ftlang.stdlib.spec import Artifact, Call, StepContext, StepError
from ftlang.stdlib.train import prompt_ids, read_columns

SAMPLES = 20  # rows written to samples.jsonl
DIGITS = 6  # metrics are rounded: stable, readable JSON


def model_name(artifact: Artifact) -> str:
    """The block name of a model node: "train.sft[lr=2e-4]" -> "sft[lr=2e-4]"."""
    return artifact.node.split(".", 1)[1] if "." in artifact.node else artifact.node


def _metric_calls(metrics: Any) -> list[Call]:
    # The default arrives as plain names when a caller skips the compiler.
    return [m if isinstance(m, Call) else Call(str(m), {}) for m in (metrics or [])]


def normalize(text: str, enabled: bool) -> str:
    return text.strip().casefold() if enabled else text


def completion_loss(lm: Any, tokenizer: Any, tpl: dict[str, Any], prompts: list[str],
                    completions: list[str], batch_size: int, max_length: int) -> float:
    """Mean cross-entropy per completion token (EOS included, as in training)."""
    import torch
    from ftlang.stdlib.train import IGNORE, make_collator, sft_examples

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
    """Greedy completions, batched with left padding, stopped at EOS (and <|im_end|>)."""
    import torch

    stop = [tokenizer.eos_token_id]
    if tpl.get("style") == "chatml":
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
            stop.append(im_end)
    pad = tokenizer.pad_token_id
    device = next(lm.parameters()).device
    outputs: list[str] = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            # Over-long prompts keep their end: that is where the answer starts.
            encoded = [prompt_ids(tokenizer, tpl, p)[-(max_length - 1):]
                       for p in prompts[i:i + batch_size]]
            width = max(len(e) for e in encoded)
            # Left padding: every row's next token is at the last position.
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
            budget = max(1, min(max_new_tokens, max_length - width))
            out = lm.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=budget,
                              do_sample=False, eos_token_id=stop, pad_token_id=pad)
            for row in out[:, width:].cpu().tolist():
                # Cut at the first stop token: rows that stopped early are padded after it.
                cut = next((j for j, t in enumerate(row) if t in stop), len(row))
                outputs.append(tokenizer.decode(row[:cut], skip_special_tokens=True))
    return outputs


def run(ctx: StepContext) -> dict[str, Any]:
    import torch

    p = ctx.params
    models: list[Artifact] = list(p["models"])
    if not models:
        raise StepError("eval needs at least one model in `models`")
    metrics = _metric_calls(p.get("metrics"))
    known = {"loss", "perplexity", "exact_match"}
    unknown = [m.name for m in metrics if m.name not in known]
    if unknown:
        raise StepError(f"unknown metric {unknown[0]!r}", hint=f"known: {', '.join(sorted(known))}")
    names = {m.name for m in metrics}
    em_call = next((m for m in metrics if m.name == "exact_match"), None)
    pf, cf = p.get("prompt_field") or "prompt", p.get("completion_field") or "completion"
    cols = read_columns(p["data"], [pf, cf], limit=p.get("limit"), hints={
        pf: "set prompt_field = \"COLUMN\"", cf: "set completion_field = \"COLUMN\""})
    keep = [i for i, (a, b) in enumerate(zip(cols[pf], cols[cf], strict=True))
            if a is not None and b is not None]
    prompts = [str(cols[pf][i]) for i in keep]
    refs = [str(cols[cf][i]) for i in keep]
    if not prompts:
        raise StepError("the eval dataset has no rows", path=p["data"].dataset_file())
    batch_size = int(p.get("batch_size") or 16)
    max_new = int(p.get("max_new_tokens") or 32)
    torch.manual_seed(0)

    results: dict[str, dict[str, float]] = {}
    generations: dict[str, list[str]] = {}
    timings: dict[str, float] = {}
    for i, artifact in enumerate(models):
        name = model_name(artifact)
        started = time.perf_counter()
        ctx.progress(i, len(models), f"evaluating {name}")
        tokenizer = modelio.load_tokenizer(artifact)
        lm = modelio.load_model(artifact, merged=True)  # merged: faster, same function
        if torch.cuda.is_available():
            lm.to("cuda")
        if p.get("template") is not None:
            tpl = templates.load(p["template"])
        else:
            tpl = modelio.template_of(artifact) or templates.load(None)
        max_length = int(getattr(lm.config, "max_position_embeddings", None) or 2048)
        scores: dict[str, float] = {}
        if names & {"loss", "perplexity"}:
            loss = completion_loss(lm, tokenizer, tpl, prompts, refs, batch_size, max_length)
            if "loss" in names:
                scores["loss"] = round(loss, DIGITS)
            if "perplexity" in names:
                scores["perplexity"] = round(math.exp(min(loss, 700.0)), DIGITS)
        # Generation for exact match; without it, only the rows shown in samples.jsonl.
        todo = prompts if em_call is not None else prompts[:SAMPLES]
        outs = generate(lm, tokenizer, tpl, todo, max_new, batch_size, max_length)
        generations[name] = outs
        if em_call is not None:
            norm = bool(em_call.get("normalize", True))
            hits = sum(normalize(o, norm) == normalize(r, norm) for o, r in zip(outs, refs, strict=True))
            scores["exact_match"] = round(hits / len(refs), DIGITS)
        results[name] = scores
        timings[name] = round(time.perf_counter() - started, 3)
        ctx.log(f"{name}: " + ", ".join(f"{k} {v:g}" for k, v in scores.items()))
        del lm
    ctx.progress(len(models), len(models), "done")

    report = {"models": results, "rows": len(prompts)}
    (ctx.out / "metrics.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n",
                                          encoding="utf-8")
    with (ctx.out / "samples.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        for j in range(min(SAMPLES, len(prompts))):
            row = {"prompt": prompts[j], "reference": refs[j],
                   "generations": {n: g[j] for n, g in generations.items()}}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    # Timings go to the ledger only: the artifact files must not change between reruns.
    return {**report, "seconds": timings}
