"""train: fine-tune a model artifact on a dataset.

Supervised methods (full weights or an adapter: lora, qlora, ia3, prompt_tuning,
prefix_tuning) run here with objective sft (prompt/completion), chat (messages) or clm
(raw text). Preference methods (dpo, orpo, kto, reward_model) are in
ftlang.stdlib.preference, online RL (grpo, rloo, online_dpo) in ftlang.stdlib.rl; both
share the model loading, Trainer settings and checkpointing defined here.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlang.stdlib import devices, modelio, registry
from ftlang.stdlib import template as templates
from ftlang.stdlib.spec import Artifact, Call, StepContext, StepError

IGNORE = -100  # label of a token that carries no loss (prompt, padding)
DEFAULT_LR = registry.DEFAULT_LR


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
    progress: Any = None  # ctx.progress: "rows tokenized" for long datasets


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
    encoded, stats = tokencache.encode_rows(rows, fields, encode, ns, cache.root, progress=cache.progress)
    cache.tokenized += stats.tokenized
    return encoded, stats.tokenized


def truncate(ids: list[int], labels: list[int], max_length: int,
             policy: str) -> tuple[list[int], list[int]] | None:
    """One example cut to max_length by `policy`; None when it is dropped."""
    if len(ids) <= max_length:
        return ids, labels
    if policy == "drop":
        return None
    if policy == "keep_end":
        return ids[-max_length:], labels[-max_length:]
    return ids[:max_length], labels[:max_length]


def sft_examples(tokenizer: Any, tpl: dict[str, Any], prompts: list[Any], completions: list[Any],
                 max_length: int, cache: TokenCache | None = None,
                 truncation: str = "keep_start") -> tuple[list[dict[str, list[int]]], int]:
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
        cut = truncate(p + c, [IGNORE] * len(p) + c, max_length, truncation)
        if cut is None:
            dropped += 1
            continue
        ids, labels = cut
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


def chat_examples(tokenizer: Any, tpl: dict[str, Any], conversations: list[Any], max_length: int,
                  cache: TokenCache | None = None,
                  truncation: str = "keep_start") -> tuple[list[dict[str, list[int]]], int]:
    """Chat rows ([{role, content}, ...]) in ChatML, with loss on the assistant turns only.

    Each turn is tokenized on its own, so the label mask follows the turns exactly. An
    assistant turn's loss covers its text and <|im_end|>; the last one also its EOS, as in
    sft (generation stops at either).
    """
    import json

    if tpl.get("style") != "chatml":
        raise StepError("objective = chat needs a chatml template",
                        hint="template chat = chatml(), then template = chat")
    rows, dropped = [], 0
    for conv in conversations:
        msgs = json.loads(conv) if isinstance(conv, str) else conv
        if not msgs or not isinstance(msgs, list) or not any(
                isinstance(m, dict) and m.get("role") == "assistant" for m in msgs):
            dropped += 1
            continue
        rows.append({"m": [{"role": str(m.get("role")), "content": str(m.get("content") or "")}
                           for m in msgs]})

    def encode(batch: list[dict[str, Any]]) -> list[dict[str, list[int]]]:
        out = []
        for r in batch:
            msgs = list(r["m"])
            if tpl.get("system") and msgs[0]["role"] != "system":
                msgs.insert(0, {"role": "system", "content": tpl["system"]})
            last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
            segments: list[tuple[str, bool]] = []  # (text, carries loss)
            for i, m in enumerate(msgs[:last + 1]):
                segments.append((f"<|im_start|>{m['role']}\n", False))
                segments.append((f"{m['content']}<|im_end|>", m["role"] == "assistant"))
                if i < last:
                    segments.append(("\n", False))
            ids: list[int] = []
            labels: list[int] = []
            for k, (text, learn) in enumerate(segments):
                piece = list(tokenizer(text, add_special_tokens=k == 0)["input_ids"])
                ids += piece
                labels += piece if learn else [IGNORE] * len(piece)
            ids.append(tokenizer.eos_token_id)
            labels.append(tokenizer.eos_token_id)
            out.append({"input_ids": ids, "labels": labels})
        return out

    encoded, _ = _encode(rows, ["m"], encode, "chat", cache, template=tpl)
    examples = []
    for enc in encoded:
        cut = truncate(list(enc["input_ids"]), list(enc["labels"]), max_length, truncation)
        if cut is None or all(x == IGNORE for x in cut[1]):
            dropped += 1
            continue
        examples.append({"input_ids": cut[0], "labels": cut[1]})
    return examples, dropped


def pack(examples: list[dict[str, list[int]]], max_length: int, *,
         in_order: bool) -> list[dict[str, list[int]]]:
    """Examples packed into rows of at most max_length tokens.

    `seq_lens` records each row's sequences: the collator turns them into position_ids and
    cu_seq_lens, so that a sequence attends only to itself. Best-fit decreasing by
    default; in dataset order (next-fit) when the data is not shuffled (curriculum).
    """
    bins: list[list[int]] = []  # indices of examples per row
    room: list[int] = []
    if in_order:
        for i, ex in enumerate(examples):
            n = len(ex["input_ids"])
            if bins and room[-1] >= n:
                bins[-1].append(i)
                room[-1] -= n
            else:
                bins.append([i])
                room.append(max_length - n)
    else:
        order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
        for i in order:
            n = len(examples[i]["input_ids"])
            best = min((b for b in range(len(bins)) if room[b] >= n), key=lambda b: (room[b], b), default=None)
            if best is None:
                bins.append([i])
                room.append(max_length - n)
            else:
                bins[best].append(i)
                room[best] -= n
    rows = []
    for b in bins:
        ids: list[int] = []
        labels: list[int] = []
        lens = []
        for i in b:
            ex = examples[i]
            ids += ex["input_ids"]
            # The first token of a sequence is never a target: nothing before it is its context.
            labels += [IGNORE] + list(ex["labels"][1:])
            lens.append(len(ex["input_ids"]))
        rows.append({"input_ids": ids, "labels": labels, "seq_lens": lens})
    return rows


def make_collator(pad_id: int) -> Any:
    """Right-pads a batch; padding gets attention 0 and label IGNORE. Packed rows (with
    `seq_lens`) are flattened into one row with per-sequence position_ids instead."""
    import torch

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        if "seq_lens" in batch[0]:
            return collate_packed(batch)
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


def collate_packed(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Padding-free: every sequence of the batch in one row, isolated by position_ids and
    cu_seq_lens (no attention_mask, no cache: transformers then builds a block-diagonal
    causal mask; flash attention reads cu_seq_lens directly)."""
    import torch

    ids: list[int] = []
    labels: list[int] = []
    pos: list[int] = []
    lens: list[int] = []
    for ex in batch:
        ids += ex["input_ids"]
        labels += ex["labels"]
        for n in ex["seq_lens"]:
            pos += list(range(n))
            lens.append(n)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    longest = max(lens)
    return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([pos]), "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
            "max_length_q": longest, "max_length_k": longest, "use_cache": False}


# ---- method -----------------------------------------------------------------------

def _call(value: Any) -> Call:
    # A bare `full` may arrive as a string when a caller skips the compiler.
    return value if isinstance(value, Call) else Call(str(value), {})


def adapter_of(method: Call) -> Call:
    """What trains: the method itself (full, lora, ...) or a preference method's `adapter`."""
    if method.name in registry.ADAPTERS:
        return method
    return _call(method.args.get("adapter") or "full")


def default_lr(method: Call) -> float:
    if method.name in registry.DEFAULT_LR_ADAPTER and adapter_of(method).name != "full":
        return registry.DEFAULT_LR_ADAPTER[method.name]
    return registry.DEFAULT_LR[method.name]


def peft_config(adapter: Call, task_type: str = "CAUSAL_LM", tokenizer_dir: Path | None = None) -> Any:
    """The peft config of an adapter call; None for full fine-tuning."""
    a = adapter.args
    if adapter.name == "full":
        return None
    if adapter.name == "lora":
        from peft import LoraConfig

        r = int(a.get("r") or 16)
        return LoraConfig(
            r=r, lora_alpha=int(a.get("alpha") or 2 * r), lora_dropout=float(a.get("dropout") or 0.0),
            target_modules=a.get("target_modules") or "all-linear", bias=a.get("bias") or "none",
            use_rslora=bool(a.get("rslora")), use_dora=bool(a.get("dora")), task_type=task_type)
    if adapter.name == "ia3":
        from peft import IA3Config

        return IA3Config(task_type=task_type, target_modules=a.get("target_modules"),
                         feedforward_modules=a.get("feedforward_modules"))
    if adapter.name == "prompt_tuning":
        from peft import PromptTuningConfig, PromptTuningInit

        text = a.get("init_text") or ""
        return PromptTuningConfig(
            task_type=task_type, num_virtual_tokens=int(a.get("tokens") or 16),
            prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
            prompt_tuning_init_text=text or None,
            tokenizer_name_or_path=str(tokenizer_dir) if text and tokenizer_dir else None)
    if adapter.name == "prefix_tuning":
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=int(a.get("tokens") or 16),
                                  prefix_projection=bool(a.get("projection")))
    raise StepError(f"{adapter.name}(...) is not an adapter", hint=f"use one of {', '.join(registry.ADAPTERS)}")


def apply_adapter(lm: Any, adapter: Call, task_type: str = "CAUSAL_LM",
                  tokenizer_dir: Path | None = None) -> Any:
    """The model with the adapter attached (only its weights train), or every weight
    trainable for `full`."""
    config = peft_config(adapter, task_type, tokenizer_dir)
    if config is None:
        for param in lm.parameters():
            param.requires_grad_(True)
        return lm
    from peft import get_peft_model

    try:
        with modelio.quiet_peft():
            return get_peft_model(lm, config)
    except (ValueError, TypeError, KeyError) as e:  # e.g. target modules the model does not have
        raise StepError(f"{adapter.name}: {e}",
                        hint='target_modules = "all-linear" works for any model' if adapter.name == "lora"
                        else "set target_modules to module names the model has") from e


def apply_lora(lm: Any, args: dict[str, Any]) -> Any:
    """LoRA over `lm` (kept for callers of the first version)."""
    return apply_adapter(lm, Call("lora", args))


def full_weights_folder(src: Artifact, cache: Path) -> Path:
    """A folder with the model's plain weights, for loaders that need one (quantisation,
    a classification head): the artifact itself, its link, or for an adapter the merged
    model, written once under cache/merged/<digest>."""
    meta = modelio.read_meta(src)
    if meta["type"] != "adapter":
        return modelio.weights_folder(src)
    folder = cache / "merged" / src.digest
    if not (folder / "config.json").is_file():
        lm = modelio.load_model(src, merged=True)
        if not modelio.is_plain(lm):
            raise StepError("a prompt- or prefix-tuned model cannot be merged into plain weights",
                            hint="train from its base model instead")
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        modelio.save_full(lm, modelio.load_tokenizer(src), tmp, template=None)
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    return folder


def _bnb_config(quant: str, double: bool, device: str) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise StepError("quantised training needs bitsandbytes", hint="pip install bitsandbytes==0.50.2") from e
    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant, bnb_4bit_use_double_quant=double,
                              bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=torch.uint8)


def keep_cpu_4bit_gradients(lm: Any) -> int:
    """bitsandbytes 0.50.2 on CPU repacks Linear4bit weights for inference at the first
    eval-mode forward without grad, and from then on drops input gradients silently
    (STACK.md). Turning the repack off keeps QLoRA training correct. Returns the count."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for m in lm.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_base(src: Artifact, adapter: Call, device: str, cache: Path, *, head: str = "causal",
              gradient_checkpointing: bool = False) -> Any:
    """The model to train from: adapters below merged; quantised for lora(quant = ...);
    with a one-logit classification head for head = "reward"."""
    import torch

    quant = adapter.args.get("quant") if adapter.name == "lora" else None
    quant = None if quant in (None, "none") else quant
    if modelio.is_classifier(src):
        raise StepError(f"{src.node} is a reward model (a sequence classifier), not a language model",
                        hint="train from the model the reward model was trained from")
    if head == "reward" and quant is not None:
        raise StepError("reward_model trains without quantisation (its head is saved as full weights)",
                        hint="use adapter = lora(...) without quant")
    if head == "causal" and quant is None:
        lm = modelio.load_model(src, merged=True)
        if not modelio.is_plain(lm):
            raise StepError("cannot train on top of a prompt- or prefix-tuned model",
                            hint="train from its base model, or export it with merge = false")
        return lm
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    modelio.quiet()
    folder = full_weights_folder(src, cache)
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if quant is not None:
        kwargs["quantization_config"] = _bnb_config(quant, bool(adapter.args.get("double_quant")), device)
        kwargs["device_map"] = {"": 0} if device == "cuda" else {"": "cpu"}
    if head == "reward":
        tok = modelio.load_tokenizer(src)
        kwargs.update(num_labels=1, pad_token_id=tok.pad_token_id)
        cls = AutoModelForSequenceClassification
    else:
        cls = AutoModelForCausalLM
    try:
        lm = cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError) as e:
        raise StepError(f"cannot load the model: {e}", path=folder) from e
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        keep_cpu_4bit_gradients(lm)
        with modelio.quiet_peft():
            lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=gradient_checkpointing)
    return lm


# ---- Trainer settings shared by every training method ------------------------------------

def trainer_settings(p: dict[str, Any], lr: float, output_dir: Path, device: str, *,
                     has_eval: bool) -> dict[str, Any]:
    """Keyword arguments for TrainingArguments and the trl configs (which extend it)."""
    warmup = float(p.get("warmup") or 0.0)
    scheduler = p.get("scheduler") or "linear"
    if scheduler == "constant" and warmup > 0:
        scheduler = "constant_with_warmup"  # plain "constant" ignores warmup
    seed = int(p.get("seed") or 0)
    eval_steps = int(p.get("eval_steps") or 50)
    patience = p.get("patience")
    save_steps = p.get("save_steps")
    kw: dict[str, Any] = dict(
        output_dir=str(output_dir),
        learning_rate=lr,
        num_train_epochs=float(p.get("epochs") or 1.0),
        max_steps=int(p.get("max_steps") if p.get("max_steps") is not None else -1),
        per_device_train_batch_size=int(p.get("batch_size") or 8),
        per_device_eval_batch_size=int(p.get("batch_size") or 8),
        gradient_accumulation_steps=int(p.get("grad_accum") or 1),
        # transformers 5: a float < 1 is a warmup ratio, an int a step count.
        warmup_steps=warmup if warmup < 1 else int(warmup),
        lr_scheduler_type=scheduler,
        optim=devices.optimizer(p.get("optimizer"), device),
        weight_decay=float(p.get("weight_decay") or 0.0),
        max_grad_norm=float(p.get("max_grad_norm") or 1.0),
        seed=seed, data_seed=seed,
        train_sampling_strategy="random" if p.get("shuffle", True) is not False else "sequential",
        logging_steps=int(p.get("logging_steps") or 10), logging_first_step=True,
        save_strategy="no", eval_strategy="no", report_to="none",
        activation_checkpointing=bool(p.get("gradient_checkpointing")),
        disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0,  # workers would outlive a killed driver
        **devices.placement(device), **devices.precision_flags(p.get("precision"), device),
    )
    if kw["activation_checkpointing"]:
        kw["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    if has_eval:
        kw.update(eval_strategy="steps", eval_steps=eval_steps)
    if save_steps:
        kw.update(save_strategy="steps", save_steps=int(save_steps),
                  save_total_limit=int(p.get("save_limit") or 2))
    if has_eval and patience:
        # The best checkpoint is reloaded at the end: saves must line up with evaluations.
        every = int(save_steps) if save_steps and int(save_steps) % eval_steps == 0 else eval_steps
        kw.update(save_strategy="steps", save_steps=every, load_best_model_at_end=True,
                  metric_for_best_model="eval_loss", greater_is_better=False,
                  save_total_limit=max(2, int(p.get("save_limit") or 2)))
    return kw


def checkpoint_dir(ctx: StepContext) -> Path:
    """Where the Trainer writes checkpoints: <cache>/checkpoints/<node key>, so a rerun
    resumes only when nothing semantic changed. Without a key (a step run by hand), a
    scratch folder that is always removed."""
    if ctx.key:
        folder = ctx.cache / "checkpoints" / ctx.key
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    root = ctx.cache / "trainer"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=re.sub(r"[^\w.=-]+", "_", ctx.node) + "-", dir=root))


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (trainer_state.json is written last)."""
    done = [d for d in folder.glob("checkpoint-*")
            if d.is_dir() and (d / "trainer_state.json").is_file() and d.name.split("-")[-1].isdigit()]
    return max(done, key=lambda d: int(d.name.split("-")[-1]), default=None)


def callbacks(ctx: StepContext, history: list[dict[str, float]], evals: list[dict[str, float]],
              p: dict[str, Any]) -> list[Any]:
    from transformers import EarlyStoppingCallback, TrainerCallback

    class Report(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **kw: Any) -> None:
            logs = logs or {}
            if "loss" in logs:
                history.append({"step": state.global_step, "loss": round(float(logs["loss"]), 6)})
            if "eval_loss" in logs:
                evals.append({"step": state.global_step, "loss": round(float(logs["eval_loss"]), 6)})
                ctx.log(f"step {state.global_step}: validation loss {logs['eval_loss']:.4f}")

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            last = f"loss {history[-1]['loss']:.4f}" if history else ""
            ctx.progress(state.global_step, state.max_steps, last)

    out: list[Any] = [Report()]
    if p.get("patience") and p.get("eval_data") is not None:
        out.append(EarlyStoppingCallback(early_stopping_patience=int(p["patience"])))
    if "tensorboard" in (p.get("report_to") or []):
        try:
            from torch.utils.tensorboard import SummaryWriter
            from transformers.integrations import TensorBoardCallback
        except ImportError as e:
            raise StepError("report_to = [\"tensorboard\"] needs the tensorboard package",
                            hint="pip install tensorboard") from e
        logdir = ctx.cache / "runs" / re.sub(r"[^\w.=-]+", "_", ctx.node)
        logdir.mkdir(parents=True, exist_ok=True)
        out.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(logdir))))
        ctx.log(f"tensorboard logs in {logdir}")
    out += _file_trackers(ctx, p.get("report_to") or [])
    return out


def _file_trackers(ctx: StepContext, names: list[str]) -> list[Any]:
    """mlflow and wandb, kept on disk under the run's folder in .ft/ (no server, no network)."""
    import importlib.util
    import os

    callbacks: list[Any] = []
    logdir = ctx.cache / "runs" / re.sub(r"[^\w.=-]+", "_", ctx.node)
    for name in ("mlflow", "wandb"):
        if name not in names:
            continue
        if importlib.util.find_spec(name) is None:
            raise StepError(f"report_to = [\"{name}\"] needs the {name} package", hint=f"pip install {name}")
        logdir.mkdir(parents=True, exist_ok=True)
        if name == "mlflow":
            from transformers.integrations import MLflowCallback

            # A plain file store under .ft/: no server (mlflow 3 wants an explicit opt-in for it).
            os.environ.update(MLFLOW_TRACKING_URI=(logdir / "mlruns").as_uri(), MLFLOW_ALLOW_FILE_STORE="true")
            callbacks.append(MLflowCallback())
        else:
            from transformers.integrations import WandbCallback

            os.environ.update(WANDB_MODE="offline", WANDB_DIR=str(logdir), WANDB_SILENT="true")
            callbacks.append(WandbCallback())
        ctx.log(f"{name} logs in {logdir}")
    return callbacks


def fit(ctx: StepContext, trainer: Any, folder: Path) -> tuple[Any, float]:
    """trainer.train(), resumed from the last checkpoint of this node key if there is one.
    The checkpoint folder is removed after success; after a failure it stays for the rerun."""
    from transformers import PrinterCallback

    # Trainer prints every log dict to stdout when tqdm is off; ctx.log reports instead.
    trainer.remove_callback(PrinterCallback)
    resume = last_checkpoint(folder)
    if resume is not None:
        ctx.log(f"resuming from {resume.name} (same node key)")
    started = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    except BaseException:
        if not ctx.key:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return result, seconds


def report(history: list[dict[str, float]], evals: list[dict[str, float]], result: Any, seconds: float,
           **extra: Any) -> dict[str, Any]:
    """The ledger metadata every training method returns."""
    final = history[-1]["loss"] if history else round(float(result.training_loss), 6)
    out: dict[str, Any] = {
        "train_loss": [h["loss"] for h in history],
        "loss_steps": [h["step"] for h in history],
        "final_loss": final,
        "mean_loss": round(float(result.training_loss), 6),
        "steps": int(result.global_step),
    }
    if evals:
        out["eval_loss"] = [e["loss"] for e in evals]
        out["eval_steps"] = [e["step"] for e in evals]
        out["best_eval_loss"] = min(e["loss"] for e in evals)
    out.update(extra)
    out["seconds"] = round(seconds, 3)
    return out


def save_trained(lm: Any, tokenizer: Any, ctx: StepContext, src: Artifact, adapter: Call,
                 template: dict[str, Any] | None) -> None:
    lm.eval()
    if adapter.name == "full":
        lm.to("cpu")
        modelio.save_full(lm, tokenizer, ctx.out, template=template)
    else:
        modelio.save_adapter(lm, tokenizer, ctx.out, base_digest=src.digest, template=template)


def clamp_length(ctx: StepContext, lm: Any, max_length: int) -> int:
    limit = getattr(lm.config, "max_position_embeddings", None)
    if limit and max_length > limit:
        ctx.log(f"max_length {max_length} > the model's {limit} positions: using {limit}")
        return int(limit)
    return max_length


# ---- the step -----------------------------------------------------------------------

def _examples(p: dict[str, Any], data: Artifact, tokenizer: Any, tpl: dict[str, Any] | None,
              max_length: int, cache: TokenCache | None) -> tuple[list[dict[str, list[int]]], int]:
    objective = p.get("objective") or "sft"
    truncation = p.get("truncation") or "keep_start"
    if objective == "sft":
        assert tpl is not None
        pf, cf = p.get("prompt_field") or "prompt", p.get("completion_field") or "completion"
        cols = read_columns(data, [pf, cf], hints={
            pf: "set prompt_field = \"COLUMN\"", cf: "set completion_field = \"COLUMN\""})
        return sft_examples(tokenizer, tpl, cols[pf], cols[cf], max_length, cache, truncation)
    if objective == "chat":
        assert tpl is not None
        mf = p.get("messages_field") or "messages"
        cols = read_columns(data, [mf], hints={mf: "set messages_field = \"COLUMN\""})
        return chat_examples(tokenizer, tpl, cols[mf], max_length, cache, truncation)
    if objective == "clm":
        tf = p.get("text_field") or "text"
        cols = read_columns(data, [tf], hints={tf: "set text_field = \"COLUMN\""})
        return clm_examples(tokenizer, cols[tf], max_length, cache), 0
    raise StepError(f"unknown objective {objective!r}", hint="use sft, chat or clm")


def run(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    method = _call(p.get("method") or "full")
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
    objective = p.get("objective") or "sft"

    import torch  # noqa: F401
    from transformers import Trainer, set_seed

    seed = int(p.get("seed") or 0)
    device = devices.resolve(p.get("device"))
    set_seed(seed)
    tokenizer = modelio.load_tokenizer(src)
    lm = load_base(src, method, device, ctx.cache,
                   gradient_checkpointing=bool(p.get("gradient_checkpointing")))
    max_length = clamp_length(ctx, lm, int(p.get("max_length") or 512))

    from ftlang.stdlib import tokencache

    cache = TokenCache(ctx.cache, tokencache.tokenizer_digest(modelio.tokenizer_folder(src)),
                       progress=ctx.progress)
    own_template = modelio.template_of(src)
    if objective in ("sft", "chat"):
        # An explicit template wins; else keep the one the model was trained with.
        default = templates.load(None) if objective == "sft" else \
            {"style": "chatml", "system": "", "separator": "\n"}
        tpl = templates.load(p["template"]) if p.get("template") is not None else (own_template or default)
        saved_template: dict[str, Any] | None = tpl
    else:
        tpl = None
        saved_template = templates.load(p["template"]) if p.get("template") is not None else own_template
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
    if p.get("eval_data") is not None:
        eval_examples, _ = _examples(p, p["eval_data"], tokenizer, tpl, max_length, cache)
        if not eval_examples:
            raise StepError("eval_data has no usable rows", path=p["eval_data"].dataset_file())
    rows = len(examples)
    if p.get("packing"):
        if method.name in ("prompt_tuning", "prefix_tuning"):
            raise StepError(f"packing does not work with {method.name}: virtual tokens belong to one sequence",
                            hint="set packing = false")
        in_order = p.get("shuffle", True) is False
        examples = pack(examples, max_length, in_order=in_order)
        if eval_examples is not None:
            eval_examples = pack(eval_examples, max_length, in_order=True)
        ctx.log(f"packed {rows} examples into {len(examples)} rows of <= {max_length} tokens")
    ctx.log(f"{objective}: {rows} examples, {tokens} tokens, max_length {max_length}")

    set_seed(seed)  # adapter initialisation does not depend on how much data was read
    lm = apply_adapter(lm, method, tokenizer_dir=modelio.tokenizer_folder(src))
    lm.train()
    lr = float(p["lr"]) if p.get("lr") is not None else default_lr(method)
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
    if p.get("packing"):
        meta["packed_rows"] = len(examples)
    ctx.log(f"trained {meta['steps']} steps in {seconds:.1f} s; final loss {meta['final_loss']:.4f}")
    return meta
