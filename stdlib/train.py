"""train: fine-tune a model artifact on a dataset (full or LoRA; sft or clm objective)."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlang.stdlib import modelio
from ftlang.stdlib import template as templates
from ftlang.stdlib.spec import Artifact, Call, StepContext, StepError

IGNORE = -100  # label of a token that carries no loss (prompt, padding)
DEFAULT_LR = {"lora": 2e-4, "full": 5e-5}


# ---- data -----------------------------------------------------------------------

def read_columns(data: Artifact, names: list[str], *, limit: int | None = None,
                 hints: dict[str, str] | None = None) -> dict[str, list[Any]]:
    """The named columns of a dataset artifact as Python lists (first `limit` rows)."""
    import pyarrow.parquet as pq

    file = data.dataset_file()
    if not file.is_file():
        raise StepError("the dataset file is missing", path=file)
    table = pq.read_table(file)
    if limit is not None:
        table = table.slice(0, limit)
    out: dict[str, list[Any]] = {}
    for name in names:
        if name not in table.column_names:
            hint = (hints or {}).get(name)
            raise StepError(f"the dataset {data.node} has no column {name!r} "
                            f"(it has {', '.join(table.column_names)})", hint=hint)
        out[name] = table.column(name).to_pylist()
    return out


def prompt_ids(tokenizer: Any, tpl: dict[str, Any], prompt: str) -> list[int]:
    """Token ids of the rendered prompt (with the tokenizer's BOS, if it adds one)."""
    return list(tokenizer(templates.render_prompt(tpl, prompt), add_special_tokens=True)["input_ids"])


def sft_pair(tokenizer: Any, tpl: dict[str, Any], prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """Token ids of the rendered prompt and of the completion (+ EOS), tokenized apart.

    Apart, not joined: generation starts from exactly these prompt tokens, so training
    must see the same split even where BPE would merge across the boundary.
    """
    c = tokenizer(templates.render_completion(tpl, completion), add_special_tokens=False)["input_ids"]
    return prompt_ids(tokenizer, tpl, prompt), list(c) + [tokenizer.eos_token_id]


@dataclass
class TokenCache:
    """Where encoded rows are kept between runs, and which tokenizer made them."""

    root: Path  # ctx.cache
    tokenizer: str  # digest of the tokenizer files
    tokenized: int = 0  # rows that missed the cache (for the ledger)


def _encode(rows: list[dict[str, str]], fields: list[str], encode: Any, kind: str,
            cache: TokenCache | None, **key: Any) -> tuple[list[dict[str, list[int]]], int]:
    """Encoded rows (in order) and how many went through the tokenizer this time.

    With a cache, a row is tokenized once per (content, tokenizer, template): appending
    1% of rows to a dataset tokenizes 1% of them on the next run.
    """
    if cache is None:
        return encode(rows), len(rows)
    from ftlang.stdlib import tokencache

    ns = tokencache.namespace(kind=kind, tokenizer=cache.tokenizer, **key)
    encoded, stats = tokencache.encode_rows(rows, fields, encode, ns, cache.root)
    cache.tokenized += stats.tokenized
    return encoded, stats.tokenized


def sft_examples(tokenizer: Any, tpl: dict[str, Any], prompts: list[Any], completions: list[Any],
                 max_length: int, cache: TokenCache | None = None) -> tuple[list[dict[str, list[int]]], int]:
    """Examples with labels only on the completion; returns (examples, rows dropped)."""
    rows = [{"p": str(p), "c": str(c)} for p, c in zip(prompts, completions, strict=True)
            if p is not None and c is not None]
    dropped = len(prompts) - len(rows)

    def encode(batch: list[dict[str, str]]) -> list[dict[str, list[int]]]:
        # Same ids as sft_pair, a batch at a time (the fast tokenizer's batch path).
        ps = tokenizer([templates.render_prompt(tpl, r["p"]) for r in batch], add_special_tokens=True)
        cs = tokenizer([templates.render_completion(tpl, r["c"]) for r in batch], add_special_tokens=False)
        return [{"prompt": list(a), "completion": list(b)}
                for a, b in zip(ps["input_ids"], cs["input_ids"], strict=True)]

    encoded, _ = _encode(rows, ["p", "c"], encode, "sft", cache, template=tpl)
    examples: list[dict[str, list[int]]] = []
    for enc in encoded:
        p, c = list(enc["prompt"]), list(enc["completion"]) + [tokenizer.eos_token_id]
        ids = (p + c)[:max_length]
        labels = ([IGNORE] * len(p) + c)[:max_length]
        if all(x == IGNORE for x in labels):
            dropped += 1  # the prompt alone fills max_length: nothing to learn from
            continue
        examples.append({"input_ids": ids, "labels": labels})
    return examples, dropped


def clm_examples(tokenizer: Any, texts: list[Any], max_length: int,
                 cache: TokenCache | None = None) -> list[dict[str, list[int]]]:
    """Texts joined with EOS into one stream, cut into max_length blocks."""
    rows = [{"t": str(t)} for t in texts if t]

    def encode(batch: list[dict[str, str]]) -> list[dict[str, list[int]]]:
        ids = tokenizer([r["t"] for r in batch], add_special_tokens=False)["input_ids"]
        return [{"ids": list(x)} for x in ids]

    encoded, _ = _encode(rows, ["t"], encode, "clm", cache)
    stream: list[int] = []
    for enc in encoded:
        stream.extend(enc["ids"])
        stream.append(tokenizer.eos_token_id)
    if not stream:
        raise StepError("the clm dataset has no text")
    # Drop the short tail (as HF's run_clm does) unless it is all there is.
    n = max(1, len(stream) // max_length)
    blocks = [stream[i * max_length:(i + 1) * max_length] for i in range(n)]
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


def make_collator(pad_id: int) -> Any:
    """Right-pads a batch; padding gets attention 0 and label IGNORE."""
    import torch

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(ex["input_ids"]) for ex in batch)
        ids, mask, labels = [], [], []
        for ex in batch:
            pad = width - len(ex["input_ids"])
            ids.append(ex["input_ids"] + [pad_id] * pad)
            mask.append([1] * len(ex["input_ids"]) + [0] * pad)
            labels.append(ex["labels"] + [IGNORE] * pad)
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
                "labels": torch.tensor(labels)}

    return collate


# ---- method -----------------------------------------------------------------------

def _call(value: Any) -> Call:
    # A bare `full` may arrive as a string when a caller skips the compiler.
    return value if isinstance(value, Call) else Call(str(value), {})


def apply_lora(lm: Any, args: dict[str, Any]) -> Any:
    from peft import LoraConfig, get_peft_model

    r = int(args.get("r") or 16)
    config = LoraConfig(
        r=r, lora_alpha=int(args.get("alpha") or 2 * r),
        lora_dropout=float(args.get("dropout") or 0.0),
        target_modules=args.get("target_modules") or "all-linear",
        bias=args.get("bias") or "none",
        use_rslora=bool(args.get("rslora")), use_dora=bool(args.get("dora")),
        task_type="CAUSAL_LM")
    try:
        with modelio.quiet_peft():
            return get_peft_model(lm, config)
    except ValueError as e:  # e.g. target modules that the model does not have
        raise StepError(f"lora: {e}", hint='target_modules = "all-linear" works for any model') from e


# ---- the step -----------------------------------------------------------------------

def _loss_callback(ctx: StepContext, history: list[dict[str, float]]) -> Any:
    from transformers import TrainerCallback

    class Report(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **kw: Any) -> None:
            if logs and "loss" in logs:
                history.append({"step": state.global_step, "loss": round(float(logs["loss"]), 6)})

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            last = f"loss {history[-1]['loss']:.4f}" if history else ""
            ctx.progress(state.global_step, state.max_steps, last)

    return Report()


def _training_args(p: dict[str, Any], lr: float, output_dir: Path, cuda: bool) -> Any:
    import torch
    from transformers import TrainingArguments

    warmup = float(p.get("warmup") or 0.0)
    scheduler = p.get("scheduler") or "linear"
    if scheduler == "constant" and warmup > 0:
        scheduler = "constant_with_warmup"  # plain "constant" ignores warmup
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=lr,
        num_train_epochs=float(p.get("epochs") or 1.0),
        max_steps=int(p.get("max_steps") if p.get("max_steps") is not None else -1),
        per_device_train_batch_size=int(p.get("batch_size") or 8),
        gradient_accumulation_steps=int(p.get("grad_accum") or 1),
        # transformers 5: a float < 1 is a warmup ratio, an int a step count.
        warmup_steps=warmup if warmup < 1 else int(warmup),
        lr_scheduler_type=scheduler,
        weight_decay=float(p.get("weight_decay") or 0.0),
        max_grad_norm=float(p.get("max_grad_norm") or 1.0),
        seed=int(p.get("seed") or 0), data_seed=int(p.get("seed") or 0),
        logging_steps=int(p.get("logging_steps") or 10), logging_first_step=True,
        save_strategy="no", eval_strategy="no", report_to="none",
        use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
        disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0,  # workers would outlive a killed driver
    )


def run(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    src: Artifact = p["from"]
    data: Artifact = p["data"]
    method = _call(p.get("method") or "full")
    objective = p.get("objective") or "sft"
    if method.name not in DEFAULT_LR:
        raise StepError(f"unknown training method {method.name!r}", hint="use full or lora(...)")

    import torch
    from transformers import PrinterCallback, Trainer, set_seed

    seed = int(p.get("seed") or 0)
    set_seed(seed)
    cuda = torch.cuda.is_available()
    tokenizer = modelio.load_tokenizer(src)
    lm = modelio.load_model(src, merged=True)  # a lower adapter is folded in first
    max_length = int(p.get("max_length") or 512)
    limit = getattr(lm.config, "max_position_embeddings", None)
    if limit and max_length > limit:
        ctx.log(f"max_length {max_length} > the model's {limit} positions: using {limit}")
        max_length = int(limit)

    from ftlang.stdlib import tokencache

    cache = TokenCache(ctx.cache, tokencache.tokenizer_digest(modelio.tokenizer_folder(src)))
    own_template = modelio.template_of(src)
    if objective == "sft":
        # An explicit template wins; else keep the one the model was trained with.
        tpl = templates.load(p["template"]) if p.get("template") is not None \
            else (own_template or templates.load(None))
        pf, cf = p.get("prompt_field") or "prompt", p.get("completion_field") or "completion"
        cols = read_columns(data, [pf, cf], hints={
            pf: "set prompt_field = \"COLUMN\"", cf: "set completion_field = \"COLUMN\""})
        examples, dropped = sft_examples(tokenizer, tpl, cols[pf], cols[cf], max_length, cache)
        if dropped:
            ctx.log(f"skipped {dropped} rows (empty, or no completion left within max_length)")
        saved_template: dict[str, Any] | None = tpl
    elif objective == "clm":
        dropped = 0
        tf = p.get("text_field") or "text"
        cols = read_columns(data, [tf], hints={tf: "set text_field = \"COLUMN\""})
        examples = clm_examples(tokenizer, cols[tf], max_length, cache)
        saved_template = templates.load(p["template"]) if p.get("template") is not None else own_template
    else:
        raise StepError(f"unknown objective {objective!r}", hint="use sft or clm")
    if not examples and objective == "sft" and dropped:
        raise StepError(f"no training examples: in all {dropped} rows the prompt alone fills "
                        f"max_length = {max_length} tokens (or a field is empty)",
                        hint="raise max_length, or shorten the template's system message")
    if not examples:
        raise StepError("no training examples: the dataset is empty", path=data.dataset_file())
    tokens = sum(len(ex["input_ids"]) for ex in examples)
    ctx.log(f"{objective}: {len(examples)} examples, {tokens} tokens, max_length {max_length}")

    if method.name == "lora":
        lm = apply_lora(lm, method.args)
    else:
        for param in lm.parameters():
            param.requires_grad_(True)
    lm.train()
    lr = float(p["lr"]) if p.get("lr") is not None else DEFAULT_LR[method.name]
    trainable = modelio.count_params(lm, trainable=True)
    ctx.log(f"method {method.name}: {trainable:,} trainable parameters, lr {lr:g}, "
            f"device {'cuda' if cuda else 'cpu'}")

    history: list[dict[str, float]] = []
    # Trainer scratch space lives in the cache, never in ctx.out, and is removed after.
    scratch_root = ctx.cache / "trainer"
    scratch_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=re.sub(r"[^\w.=-]+", "_", ctx.node) + "-",
                                    dir=scratch_root))
    started = time.perf_counter()
    try:
        trainer = Trainer(
            model=lm, args=_training_args(p, lr, scratch, cuda),
            train_dataset=examples,  # a list is a map-style dataset
            data_collator=make_collator(tokenizer.pad_token_id),
            callbacks=[_loss_callback(ctx, history)])
        # Trainer prints every log dict to stdout when tqdm is off; ctx.log reports instead.
        trainer.remove_callback(PrinterCallback)
        result = trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started

    lm = trainer.model
    lm.eval()
    lm.to("cpu")
    if method.name == "lora":
        modelio.save_adapter(lm, tokenizer, ctx.out, base_digest=src.digest,
                             template=saved_template)
    else:
        modelio.save_full(lm, tokenizer, ctx.out, template=saved_template)
    steps = int(result.global_step)
    final = history[-1]["loss"] if history else float(result.training_loss)
    ctx.log(f"trained {steps} steps in {seconds:.1f} s; final loss {final:.4f}")
    return {
        "train_loss": [h["loss"] for h in history],
        "loss_steps": [h["step"] for h in history],
        "final_loss": final,
        "mean_loss": round(float(result.training_loss), 6),
        "steps": steps,
        "examples": len(examples),
        "tokens": tokens,
        "tokenized_rows": cache.tokenized,  # the rest came from the row cache
        "trainable_params": trainable,
        "lr": lr,
        "seconds": round(seconds, 3),
    }
