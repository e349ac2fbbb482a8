"""Training examples: dataset rows -> token ids with loss labels, packed and batched.

In:  a dataset artifact's columns (`read_columns`), a tokenizer and a template.
Out: examples {"input_ids", "labels"} (labels IGNORE where a token carries no loss), rows
     packed into max_length (`pack`), and the collator that turns them into tensors.

Used by the train step (sft, chat, clm objectives), by eval's completion loss and by
generation (`prompt_ids`), so that all of them see exactly the same token ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlang.stdlib import template as templates
from ftlang.stdlib.spec import Artifact, StepError

IGNORE = -100  # label of a token that carries no loss (prompt, padding)


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
        column = table.column(name)
        _plain_column(data, name, column.type)
        out[name] = column.to_pylist()
    return out


def _plain_column(data: Artifact, name: str, dtype: Any) -> None:
    """A struct, map or binary column would reach the tokenizer as a Python repr
    (`{'a': 1}`, `b'...'`): refuse it, naming the dataset and the column."""
    import pyarrow as pa

    if pa.types.is_struct(dtype) or pa.types.is_map(dtype) or pa.types.is_binary(dtype) \
            or pa.types.is_large_binary(dtype):
        raise StepError(f"the dataset {data.node} column {name!r} holds {dtype} values, not text",
                        hint=f"turn it into text in a curate query, e.g. SELECT CAST({name} AS VARCHAR) "
                             f"AS {name} (or pick a field: {name}.field)")


def prompt_ids(tokenizer: Any, tpl: dict[str, Any], prompt: str) -> list[int]:
    """Token ids of the rendered prompt (with the tokenizer's BOS, if it adds one)."""
    return list(tokenizer(templates.render_prompt(tpl, prompt),
                          add_special_tokens=templates.adds_special_tokens(tpl))["input_ids"])


def as_text(value: Any) -> str:
    """A cell as text; a list (a conversation given as the prompt) as JSON, which a Jinja
    template reads back as messages."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list) else str(value)


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
    """Examples with labels only on the completion (+ EOS); returns (examples, rows dropped).

    Prompt and completion are tokenized apart, not joined: generation starts from exactly
    the prompt's tokens, so training must see the same split even where BPE would merge
    across the boundary.
    """
    rows = [{"p": as_text(p), "c": str(c)} for p, c in zip(prompts, completions, strict=True)
            if p is not None and c is not None]
    specials = templates.adds_special_tokens(tpl)
    # A Jinja template's completion ends with the family's end-of-turn marker: no EOS after it.
    eos = [tokenizer.eos_token_id] if specials else []
    dropped = len(prompts) - len(rows)

    def encode(batch: list[dict[str, str]]) -> list[dict[str, list[int]]]:
        # Same ids as prompt_ids, a batch at a time (the fast tokenizer's batch path).
        ps = tokenizer([templates.render_prompt(tpl, r["p"]) for r in batch], add_special_tokens=specials)
        cs = tokenizer([templates.render_completion(tpl, r["c"], r["p"]) for r in batch], add_special_tokens=False)
        return [{"prompt": list(a), "completion": list(b)}
                for a, b in zip(ps["input_ids"], cs["input_ids"], strict=True)]

    encoded, _ = _encode(rows, ["p", "c"], encode, "sft", cache, template=tpl)
    examples: list[dict[str, list[int]]] = []
    for enc in encoded:
        p, c = list(enc["prompt"]), list(enc["completion"]) + eos
        cut = truncate(p + c, [IGNORE] * len(p) + c, max_length, truncation)
        if cut is None:
            dropped += 1
            continue
        ids, labels = cut
        if labels.count(IGNORE) == len(labels):  # C speed: this runs once per row
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
    eos = tokenizer.eos_token_id  # once: the property costs ~15 us per call in transformers 5
    for enc in encoded:
        stream.extend(enc["ids"])
        stream.append(eos)
    if not stream:
        raise StepError("the clm dataset has no text")
    # Drop the short tail (as HF's run_clm does) unless it is all there is.
    n = max(1, len(stream) // max_length)
    blocks = [stream[i * max_length:(i + 1) * max_length] for i in range(n)]
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


def chat_examples(tokenizer: Any, tpl: dict[str, Any], conversations: list[Any], max_length: int,
                  cache: TokenCache | None = None,
                  truncation: str = "keep_start") -> tuple[list[dict[str, list[int]]], int]:
    """Chat rows ([{role, content}, ...]) in ChatML or a family's Jinja template, with loss on
    the assistant turns only.

    Each turn is tokenized on its own, so the label mask follows the turns exactly. An
    assistant turn's loss covers its text and its end-of-turn marker (<|im_end|>,
    <|eot_id|>, ...); with chatml the last one also its EOS, as in sft (generation stops at
    either).
    """
    if tpl.get("style") not in ("chatml", "jinja"):
        raise StepError("objective = chat needs a chat template: chatml, a model family's or tokenizer()",
                        hint="template chat = chatml() (or llama3(), qwen2_5(), tokenizer(), ...), "
                             "then template = chat")
    rows, dropped = [], 0
    for conv in conversations:
        msgs = json.loads(conv) if isinstance(conv, str) else conv
        if not msgs or not isinstance(msgs, list) or not any(
                isinstance(m, dict) and m.get("role") == "assistant" for m in msgs):
            dropped += 1
            continue
        rows.append({"m": [{"role": str(m.get("role")), "content": str(m.get("content") or "")}
                           for m in msgs]})

    def encode_jinja(batch: list[dict[str, Any]]) -> list[dict[str, list[int]]]:
        # The family's own rendering, cut into pieces at the assistant turns (prefix
        # rendering, stdlib/chat_templates.py); each piece is tokenized on its own, so the
        # labels follow the turns exactly and the template writes BOS itself.
        from ftlang.stdlib import chat_templates

        out = []
        for r in batch:
            ids: list[int] = []
            labels: list[int] = []
            for text, learn in chat_templates.segments(tpl, list(r["m"])):
                piece = list(tokenizer(text, add_special_tokens=False)["input_ids"])
                ids += piece
                labels += piece if learn else [IGNORE] * len(piece)
            out.append({"input_ids": ids, "labels": labels})
        return out

    def encode(batch: list[dict[str, Any]]) -> list[dict[str, list[int]]]:
        out = []
        eos = tokenizer.eos_token_id  # once per batch, not per row (a slow property)
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
            ids.append(eos)
            labels.append(eos)
            out.append({"input_ids": ids, "labels": labels})
        return out

    encoded, _ = _encode(rows, ["m"], encode_jinja if tpl.get("style") == "jinja" else encode, "chat", cache,
                         template=tpl)
    examples = []
    for enc in encoded:
        cut = truncate(list(enc["input_ids"]), list(enc["labels"]), max_length, truncation)
        if cut is None or cut[1].count(IGNORE) == len(cut[1]):  # C speed, once per row
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


def int64_tensor(rows: list[list[int]] | list[int]) -> Any:
    """A list (of equal-length lists) of ints as an int64 tensor, through numpy: several
    times faster than torch.tensor on nested lists (bench/bench_collate.py prints the ratio)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.array(rows, dtype=np.int64))


def make_collator(pad_id: int, pad_to: int | None = None) -> Any:
    """Right-pads a batch (to `pad_to` tokens when given: fixed shapes); padding gets
    attention 0 and label IGNORE. Packed rows (with `seq_lens`) are flattened into one row
    with per-sequence position_ids instead."""

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        if "seq_lens" in batch[0]:
            return collate_packed(batch)
        width = max(pad_to or 0, *(len(ex["input_ids"]) for ex in batch))
        ids, mask, labels = [], [], []
        for ex in batch:
            pad = width - len(ex["input_ids"])
            ids.append(ex["input_ids"] + [pad_id] * pad)
            mask.append([1] * len(ex["input_ids"]) + [0] * pad)
            labels.append(ex["labels"] + [IGNORE] * pad)
        return {"input_ids": int64_tensor(ids), "attention_mask": int64_tensor(mask),
                "labels": int64_tensor(labels)}

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
    return {"input_ids": int64_tensor([ids]), "labels": int64_tensor([labels]),
            "position_ids": int64_tensor([pos]), "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
            "max_length_q": longest, "max_length_k": longest, "use_cache": False}

