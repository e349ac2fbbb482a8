"""Partial fine-tuning: train's `trainable` attribute (which weights a full fine-tune updates).

In:  a train step's `trainable` (None, match(patterns) / a list of glob patterns, layers(start,
     stop), or half(every, seed)) and the model about to train with method = full.
Out: every other parameter frozen (requires_grad off, so the Trainer's optimizer never holds
     it and its saved bytes stay those of `from`), the count of trainable parameters, and for
     half(every = N) a TrainerCallback that swaps the trained half every N optimizer steps.

- `["*.mlp.*"]` (or match(["*.mlp.*"])): parameters whose full name matches a glob (fnmatch).
- `layers(12, 24)`: the transformer blocks 12 <= i < 24 (a half-open range, as Python's
  range), counted from the `layers.<i>.` / `h.<i>.` / `blocks.<i>.` part of the names;
  embeddings = true / head = true add the input embeddings / the output head.
- `half(...)`: Half Fine-Tuning (HFT; Hui et al. 2024, "HFT: Half Fine-Tuning for Large
  Language Models", arXiv:2404.18466). What is implemented: within each transformer block,
  each category of parameters (attention, MLP, norms, the rest) is shuffled with `seed` and
  split into two halves; half A trains and half B stays frozen. Embeddings and the head stay
  frozen. With `every = N` the halves alternate every N optimizer steps (A, then B, then A
  ...): the paper re-draws a random half per fine-tuning round; here the rounds are N steps
  and the draw is the fixed complement, so a step's frozen half is known and reproducible.
  Parameters of the idle half get no gradient in that step, so AdamW leaves them untouched.

A pattern or range that selects no parameter is a StepError listing the names the model has.
"""

from __future__ import annotations

import fnmatch
import random
import re
from collections.abc import Mapping
from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib.spec import REQUIRED, Attr, BlockView, Call, Signature, StepError, error, points

NAME = "trainable"
TRAINABLE = {
    "match": Signature("match", (
        Attr("patterns", "list[str]", REQUIRED, 'glob patterns over parameter names, e.g. ["*.mlp.*"]'),
    ), "Train the parameters whose names match a glob; `trainable = [...]` is short for it.",
        positional=("patterns",)),
    "layers": Signature("layers", (
        Attr("start", "int", REQUIRED, "first transformer block trained (counted from 0)", ge=0, le=100_000),
        Attr("stop", "int", REQUIRED, "first block after the range (start <= i < stop)", ge=1, le=100_000),
        Attr("embeddings", "bool", False, "train the input embeddings too"),
        Attr("head", "bool", False, "train the output head too (with tied embeddings, as in many small "
             "models, that is the shared embedding matrix)"),
    ), "Train a range of transformer blocks; the rest stays frozen.", positional=("start", "stop")),
    "half": Signature("half", (
        Attr("every", "int", None, "swap the trained half every N optimizer steps; default: half A "
             "trains all along", ge=1, le=10_000_000),
        Attr("seed", "int", 0, "which parameters fall in each half", ge=0, le=2**31 - 1),
    ), "Half Fine-Tuning (HFT, arXiv:2404.18466): half of each block's attention, MLP and norm "
       "parameters train, the other half stays frozen; with `every`, the halves alternate."),
}
ATTRS = (
    Attr(NAME, "call[trainable]", None, 'which weights method = full trains: ["*.mlp.*"] (globs over '
         "parameter names), layers(12, 24) (blocks 12 <= i < 24), or half(every = N) (Half "
         "Fine-Tuning); default: all"),
)
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_EMBED = ("embed_tokens", "wte", "wpe", "embed_in", "word_embeddings")
_HEAD = ("lm_head", "embed_out")
_TOKENS = ("embed_tokens", "wte", "embed_in", "word_embeddings")  # what a tied head shares


def rules(b: BlockView) -> list[Diagnostic]:
    """`trainable` applies to full fine-tuning; layers(a, b) needs a < b."""
    out: list[Diagnostic] = []
    value = b.params.get(NAME)
    if not isinstance(value, Call):
        return out
    for method in points(b.params.get("method")):
        if isinstance(method, Call) and method.name != "full":
            out.append(error("FT0410", f"`trainable` chooses the weights of method = full, not {method.name}(...)",
                             b.at(NAME), "needs method = full",
                             help="for an adapter, write lora(modules_to_save = [\"embed_tokens\", \"lm_head\"]) "
                                  "to train whole modules beside it; or use method = full"))
            return out
    if value.name == "layers" and isinstance(value.args.get("start"), int) and \
            isinstance(value.args.get("stop"), int) and value.args["start"] >= value.args["stop"]:
        out.append(error("FT0411", f"layers({value.args['start']}, {value.args['stop']}) selects no block",
                         b.at(NAME), "empty range", help="the range is start <= i < stop: make stop larger than start"))
    if value.name == "match" and not value.args.get("patterns"):
        out.append(error("FT0411", "`trainable = []` freezes every weight", b.at(NAME), "no pattern",
                         help='name the parameters to train, e.g. ["*.mlp.*"]'))
    return out


def layer_of(name: str) -> int | None:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def _category(name: str) -> str:
    low = name.lower()
    if "attn" in low or "attention" in low:
        return "attention"
    if "mlp" in low or "ffn" in low or "feed_forward" in low:
        return "mlp"
    if "norm" in low or "ln_" in low:
        return "norm"
    return "other"


def halves(names: list[str], seed: int) -> tuple[list[str], list[str]]:
    """HFT's split: per block and category, a seeded shuffle, alternately into A and B."""
    groups: dict[tuple[int, str], list[str]] = {}
    for n in names:
        i = layer_of(n)
        if i is not None:
            groups.setdefault((i, _category(n)), []).append(n)
    a: list[str] = []
    b: list[str] = []
    for key in sorted(groups):
        members = sorted(groups[key])
        random.Random(f"{seed}:{key[0]}:{key[1]}").shuffle(members)
        # An odd group's extra member goes to the smaller half, so the halves stay even.
        first, second = (a, b) if len(a) <= len(b) else (b, a)
        cut = (len(members) + 1) // 2
        first += members[:cut]
        second += members[cut:]
    return a, b


def selected(call: Call, names: list[str]) -> list[str]:
    """The parameter names `call` trains (for half: half A)."""
    a = call.args
    if call.name == "match":
        return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in a["patterns"])]
    if call.name == "layers":
        def part(n: str, kinds: tuple[str, ...]) -> bool:
            return any(k in n.rsplit(".", 2) for k in kinds)

        # A model with tied embeddings has no head parameter of its own (named_parameters lists
        # the shared matrix once, as the embedding): training its head trains that matrix.
        heads = [n for n in names if part(n, _HEAD)] or [n for n in names if part(n, _TOKENS)]
        return [n for n in names if (layer_of(n) is not None and a["start"] <= layer_of(n) < a["stop"])
                or (a["embeddings"] and part(n, _EMBED)) or (a["head"] and n in heads)]
    if call.name == "half":
        return halves(names, int(a["seed"]))[0]
    raise StepError(f"unknown trainable {call.name}(...)", hint=f"use one of {', '.join(TRAINABLE)}")


def refuse(p: Mapping[str, Any]) -> None:
    """The compiler refuses `trainable` with any method but full (FT0410); a context built by
    hand is refused here too, so no method ignores it silently."""
    if p["trainable"] is not None and p["method"].name != "full":
        raise StepError(f"trainable = ... applies to method = full, not {p['method'].name}(...)",
                        hint="remove `trainable`, or use lora(modules_to_save = [...]) for whole modules")


def apply(lm: Any, p: Mapping[str, Any], log: Any) -> list[Any]:
    """Freezes what `trainable` leaves out; returns the callbacks the schedule needs."""
    call = p["trainable"]
    if call is None:
        return []
    params = dict(lm.named_parameters())
    names = list(params)
    keep = set(selected(call, names))
    if not keep:
        blocks = sorted({i for i in map(layer_of, names) if i is not None})
        raise StepError(f"`trainable = {_show(call)}` selects no parameter of this model",
                        hint=f"it has {len(names)} parameters, e.g. {', '.join(names[:4])}; "
                             f"blocks {blocks[0]}..{blocks[-1]}" if blocks else f"e.g. {', '.join(names[:4])}")
    other: set[str] = set()
    if call.name == "half":
        other = set(halves(names, int(call.args["seed"]))[1])
    for n, t in params.items():
        # The idle half stays trainable when it will alternate: the optimizer must hold it.
        t.requires_grad_(n in keep or (n in other and call.args.get("every") is not None))
    count = sum(params[n].numel() for n in keep)
    log(f"trainable = {_show(call)}: {len(keep)} of {len(names)} tensors train ({count:,} parameters)")
    if call.name == "half" and call.args["every"] is not None:
        return [_alternate(params, sorted(keep), sorted(other), int(call.args["every"]))]
    return []


def _alternate(params: dict[str, Any], a: list[str], b: list[str], every: int) -> Any:
    from transformers import TrainerCallback

    class Alternate(TrainerCallback):  # type: ignore[misc]
        """Before each optimizer step: half A in rounds 0, 2, ..., half B in rounds 1, 3, ..."""

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            on, off = (a, b) if (state.global_step // every) % 2 == 0 else (b, a)
            for n in on:
                params[n].requires_grad_(True)
            for n in off:
                params[n].requires_grad_(False)
                params[n].grad = None  # no stale gradient: AdamW skips a parameter without one

    return Alternate()


def _show(call: Call) -> str:
    if call.name == "match":
        return "[" + ", ".join(f'"{x}"' for x in call.args["patterns"]) + "]"
    inner = ", ".join(f"{k} = {v}" for k, v in call.args.items() if v is not None)
    return f"{call.name}({inner})"
