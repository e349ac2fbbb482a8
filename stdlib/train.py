"""train: fine-tune a model artifact on a dataset (the `train` block's step).

In:  complete params: `from` (a model Artifact), `data` (a dataset Artifact), `method`
     (a Call), `objective`, the field names, and the Trainer settings (_TRAIN_COMMON).
Out: a model artifact in ctx.out (full weights, or an adapter over `from`) and the ledger
     metadata: losses per logging step, examples, tokens, trainable parameters.

`run` dispatches to the `run` of the method's declaration (a `Method`, indexed in
registry.METHOD_INDEX). The adapter methods (full weights or an adapter: lora, qlora,
ia3, prompt_tuning, prefix_tuning; declared in ftlang.stdlib.adapters) run here, in
`supervised`, with objective sft (prompt/completion), chat (messages) or clm (raw text).
Preference methods (dpo, orpo, kto, reward_model) are in ftlang.stdlib.preference, online
RL (grpo, rloo, online_dpo) in ftlang.stdlib.rl. The pieces are in ftlang.stdlib.examples
(token ids and labels), ftlang.stdlib.adapters (loading, peft) and ftlang.stdlib.trainer
(Trainer settings, callbacks, fit).

This module also declares the `train` block (SPEC) with its compile-time rules: a method's
`unused` attributes and an objective's foreign fields are errors when written, its
arguments are checked by the method's own `rules`, and the columns it reads (`needs`) are
the method's, or for adapter methods the objective's fields.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ftlang.lang.diagnostics import Diagnostic, Label
from ftlang.stdlib import cadence, devices, distributed, freeze, gpu, modelio, ordering, search
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
from ftlang.stdlib.spec import (
    COUNT_LIMIT,
    REQUIRED,
    SEED_LIMIT,
    STEPS_LIMIT,
    TOKENS_LIMIT,
    Artifact,
    Attr,
    BlockView,
    Call,
    Method,
    Need,
    Signature,
    StepContext,
    StepError,
    StepSpec,
    error,
    fields,
    points,
    warning,
)
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
__all__ = ["IGNORE", "SPEC", "TokenCache", "apply_adapter", "callbacks", "chat_examples", "default_lr",
           "load_base", "make_collator", "pack", "run", "sft_examples", "supervised"]

# ---- the declaration (the compiler reads it) -------------------------------------------------

# The objectives of the adapter methods: the train attributes naming the columns each reads.
OBJECTIVES: dict[str, tuple[str, ...]] = {
    "sft": ("prompt_field", "completion_field"),
    "chat": ("messages_field",),
    "clm": ("text_field",),
}
FIELDS = ("prompt_field", "completion_field", "messages_field", "text_field")
# What else an objective does not read (clm cuts one token stream into max_length blocks).
_OBJECTIVE_UNUSED = {"clm": {"truncation": "clm cuts the text stream into max_length blocks"}}

_TRAIN_COMMON = (
    Attr("lr", "float", None, "peak learning rate; default by method: lora 2e-4, full 5e-5, dpo 5e-7 "
         "(5e-6 with an adapter), ... (docs/methods.md)", gt=0, warn_above=1.0),
    Attr("epochs", "float", 1.0, "passes over the data", gt=0, le=10_000),
    Attr("max_steps", "int", -1, "stop after this many optimiser steps (-1: use epochs)", ge=-1, le=STEPS_LIMIT),
    Attr("batch_size", "int", 8, "examples per device step", ge=1, le=COUNT_LIMIT),
    Attr("grad_accum", "int", 1, "gradient accumulation steps", ge=1, le=COUNT_LIMIT),
    Attr("max_length", "int", 512, "tokens per example (prompt + completion)", ge=8, le=TOKENS_LIMIT),
    Attr("truncation", "enum", "keep_start", "an example over max_length: keep_start cuts its end, "
         "keep_end cuts the prompt's start, drop skips it", choices=("keep_start", "keep_end", "drop")),
    Attr("packing", "bool", False, "pack several examples into each max_length row (sequences stay "
         "isolated: each attends only to itself)"),
    Attr("warmup", "float", 0.0, "warmup: a ratio when < 1, else a step count", ge=0, le=STEPS_LIMIT),
    Attr("scheduler", "enum", "linear", "learning-rate schedule", choices=("linear", "cosine", "constant")),
    Attr("optimizer", "enum", "adamw", "adamw, sgd, adamw_8bit or paged_adamw_8bit (bitsandbytes, "
         "CUDA only; paged: optimiser state pages to CPU memory under pressure)",
         choices=("adamw", "sgd", "adamw_8bit", "paged_adamw_8bit")),
    Attr("weight_decay", "float", 0.0, "weight decay", ge=0),
    Attr("max_grad_norm", "float", 1.0, "gradient clipping norm", gt=0),
    Attr("seed", "int", 0, "seed for data order, dropout and initialisation", ge=0, le=SEED_LIMIT),
    Attr("shuffle", "bool", True, "shuffle the rows each epoch; false trains in dataset order "
         "(curriculum: a curate ORDER BY)"),
    Attr("precision", "enum", "auto", "auto: bf16 on a GPU that supports it, else fp32",
         choices=("auto", "fp32", "bf16", "fp16")),
    Attr("gradient_checkpointing", "bool", False, "recompute activations in the backward pass "
         "(less memory, ~30% slower)"),
    Attr("device", "enum", "auto", "auto picks cuda, then mps, then cpu", choices=("auto", "cuda", "mps", "cpu")),
    Attr("eval_data", "dataset", None, "validation rows: their loss is logged every eval_steps"),
    Attr("eval_steps", "int", 50, "measure the validation loss every N steps", ge=1, le=STEPS_LIMIT),
    Attr("patience", "int", None, "stop after this many validations without a better loss; the "
         "best checkpoint is kept (needs eval_data)", ge=1, le=STEPS_LIMIT),
    Attr("save_steps", "int", None, "write a checkpoint every N steps; a rerun with the same key "
         "resumes from the last one", ge=1, le=STEPS_LIMIT, semantic=False),
    Attr("save_limit", "int", 2, "checkpoints kept", ge=1, le=STEPS_LIMIT, semantic=False),
    Attr("report_to", "list[enum]", [], "trackers: tensorboard (under .ft/cache/runs/<node>), "
         "mlflow (to MLFLOW_TRACKING_URI, else a file store there), wandb (online when WANDB_MODE "
         "or WANDB_PROJECT says so, else offline there)", choices=("tensorboard", "mlflow", "wandb"),
         semantic=False),
    Attr("logging_steps", "int", 10, "log the loss every N steps", ge=1, le=STEPS_LIMIT, semantic=False),
    *cadence.ATTRS,  # eval_every / save_every, keep_checkpoints, the loss watchdog, pad_token
)


def _methods() -> Mapping[str, Method]:
    from ftlang.stdlib import registry  # registry imports this module

    return registry.METHOD_INDEX


def unused(call: Call, objective: Any) -> dict[str, tuple[str, str]]:
    """The train attributes a method call (with this objective) does not read:
    {attribute: (what makes it unused, why)}."""
    methods = _methods()
    out: dict[str, tuple[str, str]] = {}
    decl = methods.get(call.name)
    if decl is None:
        return out
    if decl.family == "adapter" and isinstance(objective, str) and objective in OBJECTIVES:
        reads = OBJECTIVES[objective]
        why = f"objective = {objective} reads {' and '.join(reads)}"
        out.update({f: (f"objective = {objective}", why) for f in FIELDS if f not in reads})
        out.update({a: (f"objective = {objective}", w) for a, w in _OBJECTIVE_UNUSED.get(objective, {}).items()})
    adapter = call.args.get("adapter")
    for c in (adapter, call):  # the method's own reasons win
        if isinstance(c, Call) and c.name in methods:
            out.update({a: (f"method = {call.name}(...)", w) for a, w in methods[c.name].unused.items()})
    return out


def rules(b: BlockView) -> list[Diagnostic]:
    """Rules across the attributes of one train block."""
    p = b.params
    out: list[Diagnostic] = []
    if p.get("objective") == "clm" and p.get("template") is not None:
        out.append(warning("FT0114", "a template has no effect with objective = clm", b.spans["template"],
                           "ignored", help="remove `template`, or use objective = sft"))
    methods = _methods()
    calls = [c for c in points(p.get("method")) if isinstance(c, Call) and c.name in methods]
    refused: dict[str, tuple[str, str]] = {}
    for call in calls:
        adapter = call.args.get("adapter")
        if isinstance(adapter, Call) and getattr(methods.get(adapter.name), "family", None) != "adapter":
            adapters = [n for n, m in methods.items() if m.family == "adapter"]
            out.append(error("FT0114", f"`adapter = {adapter.name}(...)` is not a way to train weights",
                             b.at("method"), "not an adapter", help=f"adapter is one of: {', '.join(adapters)}"))
            return out
        for c in (call, adapter):
            rule = methods[c.name].rules if isinstance(c, Call) else None
            out += rule(c, b) if rule is not None else []
        for objective in points(p.get("objective")):
            for attr, why in unused(call, objective).items():
                if b.given(attr):
                    refused.setdefault(attr, why)
    for attr, (who, why) in sorted(refused.items(), key=lambda kv: (b.spans[kv[0]].line, b.spans[kv[0]].col)):
        out.append(error("FT0114", f"`{attr}` has no effect with {who}", b.spans[attr], "not used",
                         help=f"remove `{attr}`: {why}"))
    if p.get("patience") is not None and p.get("eval_data") is None and "patience" not in refused:
        out.append(error("FT0114", "early stopping needs validation data", b.at("patience"),
                         "`patience` without `eval_data`", help="add `eval_data = <dataset>`, or remove `patience`"))
    if p.get("optimizer") in ("adamw_8bit", "paged_adamw_8bit") and p.get("device") in ("cpu", "mps"):
        out.append(error("FT0114", f"{p.get('optimizer')} runs on CUDA only", b.at("optimizer"), f"device = {p.get('device')}",
                         help="use optimizer = adamw on this device"))
    method = p.get("method")
    if isinstance(method, Call) and method.name in methods and methods[method.name].uses_reference(method):
        lower = _upstream_adapter(p.get("from"), b, methods)
        if lower is not None:
            out.append(Diagnostic(
                "FT0114", f"the reference model of {method.name} is `{p['from'].label}` with its {lower} "
                "adapter merged", [Label(b.at("from"), "policy and reference start here")], level="note"))
    return out + _cadence_rules(b, refused) + cadence.rules(b) + _untrained_base(b, methods) + ordering.rules(b) \
        + distributed.rules(b) + gpu.rules(b) + freeze.rules(b)


def _untrained_base(b: BlockView, methods: Mapping[str, Method]) -> list[Diagnostic]:
    """FT0320: an adapter on a model block with `init = ...` (random weights) learns little;
    the quickstart pretrains such a model (a full clm train) before tuning it."""
    node = getattr(b.params.get("from"), "node", None)
    if not isinstance(node, str) or not node.startswith("model."):
        return []
    written = b.lookup(node.split(".", 1)[1].split("[", 1)[0])
    if written is None or "init" not in written.calls:
        return []
    adapter = None
    for call in points(b.params.get("method")):
        decl = methods.get(call.name) if isinstance(call, Call) else None
        inner = call if decl is not None and decl.family == "adapter" else \
            call.args.get("adapter") if isinstance(call, Call) else None
        if isinstance(inner, Call) and inner.name != "full":
            adapter = inner.name
    if adapter is None:
        return []
    return [warning("FT0320", f"{adapter} on `{b.params['from'].label}`, a randomly initialised model, "
                    "learns little", b.at("from"), "its weights are random",
                    help="pretrain it first (a full train with objective = clm, as examples/quickstart.ft "
                    "does) and tune that, or train all weights with method = full")]


def _upstream_adapter(ref: Any, b: BlockView, methods: Mapping[str, Method]) -> str | None:
    """The method name written in the train block `ref` points at, when that block trains an
    adapter (anything but full weights); None otherwise."""
    node = getattr(ref, "node", None)
    if not isinstance(node, str) or not node.startswith("train."):
        return None
    written = b.lookup(node.split(".", 1)[1].split("[", 1)[0])
    name, args = written.calls.get("method", (None, {})) if written is not None else (None, {})
    if name is None or name == "full":
        return None
    if name in methods and methods[name].family != "adapter":
        inner = args.get("adapter")
        return None if inner in (None, "full") else inner
    return name


def _cadence_rules(b: BlockView, refused: Mapping[str, Any]) -> list[Diagnostic]:
    """Settings that are legal one by one but cannot do what they say together: warnings."""
    out = []
    warmup, steps = b.params.get("warmup"), b.params.get("max_steps")
    if isinstance(warmup, (int, float)) and isinstance(steps, int) and warmup >= 1 and 0 < steps < warmup:
        out.append(warning("FT0114", f"`warmup` ({warmup:g} steps) is longer than `max_steps` ({steps})",
                           b.spans["warmup"], "never finishes",
                           help="the learning rate never reaches `lr`: shorten warmup, or give it as a ratio (< 1)"))
    if b.given("eval_steps") and b.params.get("eval_data") is None and "eval_steps" not in refused:
        out.append(warning("FT0114", "`eval_steps` has no effect without `eval_data`", b.spans["eval_steps"],
                           "ignored", help="add `eval_data = <dataset>` (validation rows), or remove eval_steps"))
    return out


def needs(p: Mapping[str, Any]) -> list[Need]:
    """The columns of `data` (and `eval_data`): the method's own, or for an adapter method
    its objective's fields. With a sweep, only what every point reads."""
    methods = _methods()
    found: list[tuple[tuple[Any, str | None], ...]] = []
    for call in points(p.get("method")):
        decl = methods.get(call.name) if isinstance(call, Call) else None
        if decl is None:
            return []
        if decl.family != "adapter":
            found.append(tuple((c, None) for c in decl.columns))
            continue
        for objective in points(p.get("objective")):
            if not isinstance(objective, str) or objective not in OBJECTIVES:
                return []
            found.append(fields(p, OBJECTIVES[objective]))
    cols = tuple(c for c in found[0] if all(c in f for f in found[1:])) if found else ()
    return ([Need("data", cols), Need("eval_data", cols)] if cols else []) + ordering.needs(p)


def summary(meta: Mapping[str, Any]) -> str:
    bits = []
    if isinstance(meta.get("final_loss"), (int, float)):
        bits.append(f"loss {meta['final_loss']:.3f}")
    if "steps" in meta:
        bits.append(f"{meta['steps']} steps")
    return ", ".join(bits)


SPEC = StepSpec(
    kind="train", version=3, output="model", run="ftlang.stdlib.train:run", trains=True,  # 3: fused AdamW on CPU
    signature=Signature("train", (
        Attr("from", "model", REQUIRED, "the model to start from"),
        Attr("data", "dataset", REQUIRED, "training rows"),
        Attr("method", "call[method]", "full", "full, lora(...), ia3(...), prompt_tuning(...), "
             "prefix_tuning(...); or a preference/RL method: dpo(...), orpo(...), kto(...), "
             "reward_model(...), grpo(...), rloo(...), online_dpo(...), ppo(...)"),
        Attr("objective", "enum", "sft", "for full and adapter methods: sft (prompt/completion, "
             "loss on the completion), chat (a messages column, loss on assistant turns), "
             "clm (raw text)", choices=tuple(OBJECTIVES)),
        Attr("template", "template", None, "how prompt and completion are joined (sft, chat)"),
        Attr("prompt_field", "str", "prompt", "column holding the prompt (sft)"),
        Attr("completion_field", "str", "completion", "column holding the completion (sft)"),
        Attr("messages_field", "str", "messages", "column holding [{role, content}, ...] (chat)"),
        Attr("text_field", "str", "text", "column holding the text (clm)"),
        *_TRAIN_COMMON,
        *ordering.ATTRS,
        *gpu.ATTRS,
        *freeze.ATTRS,
    ), "Fine-tune a model on a dataset."),
    subblocks={distributed.NAME: distributed.SIGNATURE, search.NAME: search.SIGNATURE},
    rules=rules, needs=needs, summary=summary,
)


# ---- the step ------------------------------------------------------------------------------

def run(ctx: StepContext) -> dict[str, Any]:
    """The method's own `run` (its declaration says which)."""
    method: Call = ctx.params["method"]
    decl = _methods().get(method.name)
    if decl is None:
        raise StepError(f"unknown training method {method.name!r}", hint=f"methods: {', '.join(_methods())}")
    module, function = decl.run.split(":")
    step: Any = getattr(importlib.import_module(module), function)
    freeze.refuse(ctx.params)  # trainable: method = full only (FT0410 at compile time; again here)
    arranged = ordering.arrange(ctx)  # balance / order: every method reads the rearranged rows
    return {**step(ctx), **arranged}


def _examples(p: dict[str, Any], data: Artifact, tokenizer: Any, tpl: dict[str, Any] | None,
              max_length: int, cache: TokenCache | None) -> tuple[list[dict[str, list[int]]], int]:
    """The objective's examples from `data`, and how many rows were skipped (built with the
    cyclic GC paused: millions of small lists, none of them in a cycle)."""
    from ftlang.stdlib.gcpause import paused_gc

    with paused_gc():
        return _objective_examples(p, data, tokenizer, tpl, max_length, cache)


def _objective_examples(p: dict[str, Any], data: Artifact, tokenizer: Any, tpl: dict[str, Any] | None,
                        max_length: int, cache: TokenCache | None) -> tuple[list[dict[str, list[int]]], int]:
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


def supervised(ctx: StepContext) -> dict[str, Any]:
    """The adapter methods (full, lora, ia3, prompt/prefix tuning) with objective sft, chat or clm."""
    p = ctx.params
    method: Call = p["method"]
    src: Artifact = p["from"]
    data: Artifact = p["data"]
    objective = p["objective"]

    import torch  # noqa: F401
    from transformers import Trainer, set_seed

    seed = int(p["seed"])
    device = devices.resolve(p["device"])
    set_seed(seed)
    tokenizer = modelio.load_tokenizer(src)
    cadence.set_pad_token(tokenizer, p)
    lm = load_base(src, method, device, ctx.cache, gradient_checkpointing=bool(p["gradient_checkpointing"]),
                   quant_storage=distributed.quant_storage(p))
    max_length = clamp_length(ctx, lm, int(p["max_length"]))

    from ftlang.stdlib import tokencache

    cache = TokenCache(ctx.cache, tokencache.tokenizer_digest(modelio.tokenizer_folder(src)),
                       progress=ctx.progress)
    own_template = modelio.template_of(src)
    if objective in ("sft", "chat"):
        # An explicit template wins; else keep the one the model was trained with; else for
        # chat rows the tokenizer's own chat_template when it has one (an instruct model's).
        default = templates.load(None) if objective == "sft" else \
            {"style": "tokenizer", "system": ""} if getattr(tokenizer, "chat_template", None) else \
            {"style": "chatml", "system": "", "separator": "\n"}
        tpl = templates.load(p["template"]) if p["template"] is not None else (own_template or default)
        tpl = templates.resolve(tpl, tokenizer)  # presets and tokenizer(): their Jinja source
        saved_template: dict[str, Any] | None = tpl
    else:
        tpl = None
        saved_template = templates.load(p["template"]) if p["template"] is not None else own_template
        saved_template = templates.resolve(saved_template, tokenizer) if saved_template else None
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
    schedule = freeze.apply(lm, p, ctx.log)  # trainable = ...: the rest frozen (method = full)
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
        data_collator=make_collator(tokenizer.pad_token_id, p["pad_to_length"]),
        callbacks=callbacks(ctx, history, evals, p) + schedule)
    result, seconds = fit(ctx, trainer, folder)
    save_trained(trainer.model, tokenizer, ctx, src, method, saved_template)
    meta = report(history, evals, result, seconds, examples=rows, tokens=tokens,
                  tokenized_rows=cache.tokenized,  # the rest came from the row cache
                  trainable_params=trainable, lr=lr, device=device)
    if p["packing"]:
        meta["packed_rows"] = len(examples)
    ctx.log(f"trained {meta['steps']} steps in {seconds:.1f} s; final loss {meta['final_loss']:.4f}")
    return meta
