"""Generation and reward-model scoring for the eval step.

- `generate`: completions of a causal LM for rendered prompts, greedy or sampled,
  batched with left padding, cut at EOS (and <|im_end|> for ChatML). Prompt- and
  prefix-tuned models are decoded through their base model with the virtual tokens
  put in by hand (see `_virtual_generate`): peft's own generate is wrong for both.
- `RewardModel`: a sequence-classification model artifact that scores
  prompt + completion (reward(...) and win_rate(...) metrics).

torch and transformers are imported inside functions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftlang.stdlib import modelio
from ftlang.stdlib import template as templates
from ftlang.stdlib.spec import Artifact, StepError


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen: greedy unless do_sample; `seed` makes sampling repeatable."""

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> Sampling:
        """From an eval step's complete params."""
        return cls(max_new_tokens=int(p["max_new_tokens"]), do_sample=bool(p["do_sample"]),
                   temperature=float(p["temperature"]), top_p=float(p["top_p"]), seed=int(p["seed"]))

    def describe(self) -> dict[str, Any]:
        if not self.do_sample:
            return {"decoding": "greedy", "max_new_tokens": self.max_new_tokens}
        return {"decoding": "sample", "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "seed": self.seed}


def stop_ids(tokenizer: Any, tpl: dict[str, Any]) -> list[int]:
    stop = [tokenizer.eos_token_id]
    marker = "<|im_end|>" if tpl.get("style") == "chatml" else tpl.get("stop") if tpl.get("style") == "jinja" else None
    if marker:  # the family's end-of-turn token (<|eot_id|>, <end_of_turn>, ...), when it is one token
        end = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(end, int) and end != tokenizer.unk_token_id and end not in stop:
            stop.append(end)
    return stop


def generate(lm: Any, tokenizer: Any, tpl: dict[str, Any], prompts: list[str], sampling: Sampling,
             batch_size: int, max_length: int) -> list[str]:
    """One completion per prompt, stopped at a stop token, special tokens removed.

    Sampling reseeds torch before the first batch, so the same seed, rows and batch size
    give the same text (on the same device).
    """
    import torch
    from ftlang.stdlib.examples import prompt_ids

    stop = stop_ids(tokenizer, tpl)
    pad = tokenizer.pad_token_id
    device = next(lm.parameters()).device
    virtual = _virtual_config(lm)
    # Virtual tokens take positions too: keep prompt + virtual + new within the context.
    room = max_length - (int(virtual.num_virtual_tokens) if virtual is not None else 0)
    extra: dict[str, Any] = {"do_sample": False}
    if sampling.do_sample:
        extra = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        torch.manual_seed(sampling.seed)
    else:
        # The model's generation_config may ask for sampling; greedy means greedy.
        extra.update(temperature=None, top_p=None, top_k=None)
    outputs: list[str] = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            # Over-long prompts keep their end: that is where the answer starts.
            encoded = [prompt_ids(tokenizer, tpl, p)[-(room - 1):] for p in prompts[i:i + batch_size]]
            width = max(len(e) for e in encoded)
            # Left padding: every row's next token is at the last position.
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
            settings = dict(max_new_tokens=max(1, min(sampling.max_new_tokens, room - width)),
                            eos_token_id=stop, pad_token_id=pad, **extra)
            if virtual is None:
                new_ids = lm.generate(input_ids=ids, attention_mask=mask, **settings)[:, width:]
            else:
                new_ids = _virtual_generate(lm, virtual, ids, mask, settings)
            for row in new_ids.cpu().tolist():
                # Cut at the first stop token: rows that stopped early are padded after it.
                cut = next((j for j, t in enumerate(row) if t in stop), len(row))
                text = tokenizer.decode(row[:cut], skip_special_tokens=True)
                if tpl.get("style") == "jinja" and tpl.get("stop"):
                    # A tokenizer without the family's marker as one token spells it out.
                    text = text.split(tpl["stop"])[0]
                outputs.append(text)
    return outputs


def _virtual_config(lm: Any) -> Any:
    """The active peft config of a prompt- or prefix-tuned model, else None."""
    config = getattr(lm, "peft_config", None)
    if not isinstance(config, dict):
        return None
    active = config.get(getattr(lm, "active_adapter", "default"))
    return active if active is not None and active.is_prompt_learning else None


def _virtual_generate(lm: Any, config: Any, ids: Any, mask: Any, settings: dict[str, Any]) -> Any:
    """The new tokens of a prompt- or prefix-tuned PeftModel for left-padded `ids`.

    peft 0.21's generate is wrong for both under transformers 5.24, which renamed the
    model's `past_key_values` argument to `cache`. generate passes its own empty `cache`;
    peft puts the prefix under `past_key_values`, which the model then ignores: prefix
    tuning decoded as the base model (and, under left padding, differently at each
    batch size).
    peft also looks for `past_key_values` to tell the first step from the others, so prompt
    tuning re-inserted its virtual tokens at every new token; and it drops position ids,
    so left padding moved the prompt relative to the virtual tokens (batch size changed
    the answers).

    Here the base model's generate runs with the virtual tokens in place, laid out as in
    training: virtual tokens first at positions 0..n-1, then the prompt from position n
    whatever its padding (position ids come from the attention mask, which covers the
    virtual tokens too). Prefix tuning: its key/value cache is passed as the cache, the
    mask has n leading ones. Prompt tuning: its embeddings go before the prompt's in
    `inputs_embeds`. Greedy decoding equals an argmax over the model's own forward passes.
    """
    import inspect

    import torch

    kind = str(getattr(config.peft_type, "value", config.peft_type))
    base = lm.get_base_model()
    rows, n = ids.shape[0], int(config.num_virtual_tokens)
    full_mask = torch.cat([torch.ones(rows, n, dtype=mask.dtype, device=mask.device), mask], dim=1)
    if kind == "PREFIX_TUNING":
        cache = lm.get_prompt(batch_size=rows)
        # transformers 5 renamed the argument; older versions read past_key_values.
        name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        out = base.generate(input_ids=ids, attention_mask=full_mask, **{name: cache}, **settings)
        return out[:, ids.shape[1]:]
    if kind == "PROMPT_TUNING":
        embeds = lm.word_embeddings(ids)
        prompts = lm.get_prompt(batch_size=rows).to(embeds.dtype)
        # From inputs_embeds alone, generate returns the new tokens only.
        return base.generate(inputs_embeds=torch.cat([prompts, embeds], dim=1), attention_mask=full_mask,
                             **settings)
    raise StepError(f"generation from a {kind.lower()} adapter is not supported")


# ---- reward models -------------------------------------------------------------------------

def _architectures(folder: Any) -> list[str]:
    import json

    cfg = folder / "config.json"
    if not cfg.is_file():
        return []
    return list(json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or [])


def load_classifier(artifact: Artifact) -> Any:
    """A sequence-classification model (eval mode, fp32) from a model artifact.

    Full and linked folders load directly; an adapter loads over its base classifier
    and is merged.
    """
    from transformers import AutoModelForSequenceClassification

    modelio.quiet()
    meta = modelio.read_meta(artifact)
    if meta["type"] == "adapter":
        from peft import PeftModel

        base = load_classifier(Artifact(artifact.node, meta["base"], modelio.base_folder(artifact)))
        with modelio.quiet_peft():
            lm = PeftModel.from_pretrained(base, str(artifact.path / modelio.ADAPTER_DIR)).merge_and_unload()
        lm.eval()
        return lm
    src = modelio.weights_folder(artifact)
    arch = _architectures(src)
    if arch and not any(a.endswith(("ForSequenceClassification", "ForRewardModeling")) for a in arch):
        raise StepError(f"{artifact.node} is not a reward model: its architecture is {', '.join(arch)}",
                        hint="a reward model is a sequence-classification model "
                             "(e.g. LlamaForSequenceClassification with num_labels = 1)")
    import torch

    try:
        lm = AutoModelForSequenceClassification.from_pretrained(str(src), dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise StepError(f"cannot load the reward model: {e}", path=src) from e
    lm.eval()
    return lm


class RewardModel:
    """Scores prompt + completion with a sequence-classification model.

    The text is rendered with the reward model's own template (plain when it has none) and
    ends with EOS, as in reward_model training; rows are right-padded and each is read at
    its own last token, so a pad token equal to EOS is harmless.
    One label: the score is its logit; several: the log-probability of the last label.
    """

    def __init__(self, artifact: Artifact, device: str) -> None:
        self.artifact = artifact
        self.tokenizer = modelio.load_tokenizer(artifact)
        self.lm = load_classifier(artifact).to(device)  # the step's one device decision
        self.template = modelio.template_of(artifact) or templates.load(None)
        self.max_length = int(getattr(self.lm.config, "max_position_embeddings", None) or 2048)

    def text(self, prompt: str, completion: str) -> str:
        """The scored text: rendered prompt + completion + EOS, the shape reward_model training
        uses (trl appends EOS, and the score is read at the last token)."""
        return (templates.render_prompt(self.template, prompt)
                + templates.render_completion(self.template, completion, prompt) + (self.tokenizer.eos_token or ""))

    def _value(self, logits: Any) -> list[float]:
        import torch

        logits = logits.float()
        if logits.size(-1) == 1:
            return [float(x) for x in logits[:, 0]]
        return [float(x) for x in torch.log_softmax(logits, dim=-1)[:, -1]]

    def score(self, prompts: list[str], completions: list[str], batch_size: int = 16) -> list[float]:
        """One score per (prompt, completion) pair."""
        import torch

        texts = [self.text(p, c) for p, c in zip(prompts, completions, strict=True)]
        # Long texts keep their end: the score is read at the last token.
        encoded = [list(self.tokenizer(t, add_special_tokens=True)["input_ids"])[-self.max_length:] or
                   [self.tokenizer.eos_token_id] for t in texts]
        device = next(self.lm.parameters()).device
        body = getattr(self.lm, getattr(self.lm, "base_model_prefix", "") or "", None)
        head = getattr(self.lm, "score", None)
        scores: list[float] = []
        with torch.no_grad():
            if body is None or head is None:
                # Not a decoder classifier with a `score` head: one row at a time, so the
                # model's own pooling never has to find the end of a padded row.
                for ids in encoded:
                    out = self.lm(input_ids=torch.tensor([ids], device=device))
                    scores += self._value(out.logits)
                return scores
            pad = self.tokenizer.pad_token_id
            for i in range(0, len(encoded), batch_size):
                batch = encoded[i:i + batch_size]
                width = max(len(e) for e in batch)
                ids = torch.tensor([e + [pad] * (width - len(e)) for e in batch], device=device)
                mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in batch], device=device)
                hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
                # The score is read at each row's last real token (right padding).
                last = torch.tensor([len(e) - 1 for e in batch], device=device)
                pooled = hidden[torch.arange(len(batch), device=device), last]
                scores += self._value(head(pooled))
        return scores
