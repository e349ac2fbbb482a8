"""train: fine-tune a model artifact on a dataset (the `train` block's step).

In:  complete params: `from` (a model Artifact), `data` (a dataset Artifact), `method`
     (a Call), `objective`, the field names, and the Trainer settings (_TRAIN_COMMON in
     registry.py).
Out: a model artifact in ctx.out (full weights, or an adapter over `from`) and the ledger
     metadata: losses per logging step, examples, tokens, trainable parameters.

Supervised methods (full weights or an adapter: lora, qlora, ia3, prompt_tuning,
prefix_tuning) run here with objective sft (prompt/completion), chat (messages) or clm
(raw text). Preference methods (dpo, orpo, kto, reward_model) are in
ftlang.stdlib.preference, online RL (grpo, rloo, online_dpo) in ftlang.stdlib.rl. The
pieces are in ftlang.stdlib.examples (token ids and labels), ftlang.stdlib.adapters
(loading, peft) and ftlang.stdlib.trainer (Trainer settings, callbacks, fit).
"""

from __future__ import annotations

from typing import Any

from ftlang.stdlib import devices, modelio, registry
from ftlang.stdlib import template as templates
from ftlang.stdlib.adapters import apply_adapter, load_base
from ftlang.stdlib.examples import (
    IGNORE,
    TokenCache,
    chat_examples,
    clm_examples,
    make_collator,
    pack,
    read_columns,
    sft_examples,
)
from ftlang.stdlib.spec import Artifact, Call, StepContext, StepError
from ftlang.stdlib.trainer import (
    callbacks,
    checkpoint_dir,
    clamp_length,
    default_lr,
    fit,
    learning_rate,
    report,
    save_trained,
    trainer_settings,
)

# Read through this module by tests and bench/ (train.IGNORE, train.default_lr; tests
# monkeypatch train.callbacks and train.make_collator, which run() looks up here).
__all__ = ["IGNORE", "TokenCache", "apply_adapter", "callbacks", "chat_examples", "default_lr",
           "load_base", "make_collator", "pack", "run", "sft_examples"]


def _examples(p: dict[str, Any], data: Artifact, tokenizer: Any, tpl: dict[str, Any] | None,
              max_length: int, cache: TokenCache | None) -> tuple[list[dict[str, list[int]]], int]:
    """The objective's examples from `data`, and how many rows were skipped."""
    objective = p["objective"]
    if objective == "sft":
        assert tpl is not None
        pf, cf = p["prompt_field"], p["completion_field"]
        cols = read_columns(data, [pf, cf], hints={
            pf: "set prompt_field = \"COLUMN\"", cf: "set completion_field = \"COLUMN\""})
        return sft_examples(tokenizer, tpl, cols[pf], cols[cf], max_length, cache, p["truncation"])
    if objective == "chat":
        assert tpl is not None
        mf = p["messages_field"]
        cols = read_columns(data, [mf], hints={mf: "set messages_field = \"COLUMN\""})
        return chat_examples(tokenizer, tpl, cols[mf], max_length, cache, p["truncation"])
    if objective == "clm":
        tf = p["text_field"]
        cols = read_columns(data, [tf], hints={tf: "set text_field = \"COLUMN\""})
        return clm_examples(tokenizer, cols[tf], max_length, cache), 0
    raise StepError(f"unknown objective {objective!r}", hint="use sft, chat or clm")


def run(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    method: Call = p["method"]
    if method.name in registry.PREFERENCE:
        from ftlang.stdlib import preference

        return preference.run(ctx)
    if method.name in registry.ONLINE:
        from ftlang.stdlib import rl

        return rl.run(ctx)
    if method.name not in registry.ADAPTERS:
        raise StepError(f"unknown training method {method.name!r}",
                        hint=f"methods: {', '.join(registry.METHODS)}")
    src: Artifact = p["from"]
    data: Artifact = p["data"]
    objective = p["objective"]

    import torch  # noqa: F401
    from transformers import Trainer, set_seed

    seed = int(p["seed"])
    device = devices.resolve(p["device"])
    set_seed(seed)
    tokenizer = modelio.load_tokenizer(src)
    lm = load_base(src, method, device, ctx.cache, gradient_checkpointing=bool(p["gradient_checkpointing"]))
    max_length = clamp_length(ctx, lm, int(p["max_length"]))

    from ftlang.stdlib import tokencache

    cache = TokenCache(ctx.cache, tokencache.tokenizer_digest(modelio.tokenizer_folder(src)),
                       progress=ctx.progress)
    own_template = modelio.template_of(src)
    if objective in ("sft", "chat"):
        # An explicit template wins; else keep the one the model was trained with.
        default = templates.load(None) if objective == "sft" else \
            {"style": "chatml", "system": "", "separator": "\n"}
        tpl = templates.load(p["template"]) if p["template"] is not None else (own_template or default)
        saved_template: dict[str, Any] | None = tpl
    else:
        tpl = None
        saved_template = templates.load(p["template"]) if p["template"] is not None else own_template
    examples, dropped = _examples(p, data, tokenizer, tpl, max_length, cache)
    if dropped:
        ctx.log(f"skipped {dropped} rows (empty, over max_length with truncation = drop, "
                "or no target left within max_length)")
    if not examples and dropped:
        raise StepError(f"no training examples: all {dropped} rows were skipped (the prompt alone fills "
                        f"max_length = {max_length} tokens, a field is empty, or truncation = drop)",
                        hint="raise max_length, or shorten the template's system message")
    if not examples:
        raise StepError("no training examples: the dataset is empty", path=data.dataset_file())
    tokens = sum(len(ex["input_ids"]) for ex in examples)
    eval_examples = None
    if p["eval_data"] is not None:
        eval_examples, _ = _examples(p, p["eval_data"], tokenizer, tpl, max_length, cache)
        if not eval_examples:
            raise StepError("eval_data has no usable rows", path=p["eval_data"].dataset_file())
    rows = len(examples)
    if p["packing"]:
        if method.name in ("prompt_tuning", "prefix_tuning"):
            raise StepError(f"packing does not work with {method.name}: virtual tokens belong to one sequence",
                            hint="set packing = false")
        examples = pack(examples, max_length, in_order=not p["shuffle"])
        if eval_examples is not None:
            eval_examples = pack(eval_examples, max_length, in_order=True)
        ctx.log(f"packed {rows} examples into {len(examples)} rows of <= {max_length} tokens")
    ctx.log(f"{objective}: {rows} examples, {tokens} tokens, max_length {max_length}")

    set_seed(seed)  # adapter initialisation does not depend on how much data was read
    lm = apply_adapter(lm, method, tokenizer_dir=modelio.tokenizer_folder(src))
    lm.train()
    lr = learning_rate(p, method)
    trainable = modelio.count_params(lm, trainable=True)
    ctx.log(f"method {method.name}: {trainable:,} trainable parameters, lr {lr:g}, device {device}")

    from transformers import TrainingArguments

    history: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    folder = checkpoint_dir(ctx)
    args = TrainingArguments(**trainer_settings(p, lr, folder, device, has_eval=eval_examples is not None))
    trainer = Trainer(
        model=lm, args=args,
        train_dataset=examples,  # a list is a map-style dataset
        eval_dataset=eval_examples,
        data_collator=make_collator(tokenizer.pad_token_id),
        callbacks=callbacks(ctx, history, evals, p))
    result, seconds = fit(ctx, trainer, folder)
    save_trained(trainer.model, tokenizer, ctx, src, method, saved_template)
    meta = report(history, evals, result, seconds, examples=rows, tokens=tokens,
                  tokenized_rows=cache.tokenized,  # the rest came from the row cache
                  trainable_params=trainable, lr=lr, device=device)
    if p["packing"]:
        meta["packed_rows"] = len(examples)
    ctx.log(f"trained {meta['steps']} steps in {seconds:.1f} s; final loss {meta['final_loss']:.4f}")
    return meta
