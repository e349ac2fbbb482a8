"""Training cadence as people write it: eval_every / save_every in steps or fractions of an
epoch, keep_checkpoints, the loss watchdog, a pad token other than EOS.

In:  a train step's complete params (and, at run time, the Trainer's dataloader length).
Out: TrainingArguments settings (`settings`), TrainerCallbacks (`callbacks`: validation and
     checkpoints at epoch fractions, `stop_if_loss_above`), the checkpoints kept after a
     successful run (`keep`, read back by `ft checkpoints FILE NODE` through `listing`), and
     the compile-time rules across these attributes (`rules`).

The one syntax for a cadence: a number >= 1 is a step count, a number < 1 a fraction of an
epoch (`eval_every = 0.25`: four validations an epoch), as `warmup` reads a ratio.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib.spec import Attr, BlockView, StepContext, StepError, error

KEPT = "kept-checkpoints"  # under the cache folder: <node folder>/<node key>/checkpoint-N

ATTRS = (
    Attr("eval_every", "float", None, "validate every N steps, or every fraction of an epoch when < 1 "
         "(0.25: four times an epoch); replaces eval_steps", gt=0),
    Attr("save_every", "float", None, "write a checkpoint every N steps, or every fraction of an epoch "
         "when < 1; replaces save_steps", gt=0, semantic=False),
    Attr("keep_checkpoints", "int", None, "keep the last N checkpoints after a successful run (they are "
         "deleted otherwise); `ft checkpoints FILE NODE` lists them", ge=1, semantic=False),
    Attr("stop_if_loss_above", "float", None, "fail the node when the training loss stays above this "
         "value for stop_if_loss_above_steps logged steps (a diverging run stops early)", semantic=False),
    Attr("stop_if_loss_above_steps", "int", None, "consecutive logged losses above stop_if_loss_above "
         "that stop the run (default 1)", ge=1, semantic=False),
    Attr("pad_to_length", "int", None, "pad every batch to exactly this many tokens (fixed shapes for "
         "compiled kernels and predictable memory); at least max_length, not with packing (sft, chat, clm)",
         ge=8),
    Attr("gradient_checkpointing_reentrant", "bool", None, "torch's use_reentrant for gradient "
         "checkpointing (default false, the non-reentrant variant)", semantic=False),
    Attr("pad_token", "str", None, "the tokenizer's pad token, when it should not be EOS (a token the "
         "vocabulary has, e.g. \"<pad>\")"),
)


def whole(every: float | None) -> int | None:
    """A cadence given in steps (>= 1), else None (unset, or a fraction of an epoch)."""
    return int(every) if every is not None and every >= 1 else None


def _steps(every: float | None, per_epoch: int | None) -> int | None:
    if every is None:
        return None
    if every >= 1:
        return int(every)
    return max(1, round(every * per_epoch)) if per_epoch else None


def rules(b: BlockView) -> list[Diagnostic]:
    """Cadence attributes that contradict each other or cannot act."""
    p, out = b.params, []
    for new, old in (("eval_every", "eval_steps"), ("save_every", "save_steps")):
        if b.given(new) and b.given(old):
            out.append(error("FT0283", f"`{new}` and `{old}` both set the same cadence", b.at(new), "twice",
                             help=f"keep `{new}` (steps, or a fraction of an epoch when < 1)"))
    for name in ("eval_every", "save_every"):
        v = p.get(name)
        if isinstance(v, (int, float)) and v >= 1 and v != int(v):
            out.append(error("FT0283", f"`{name} = {v:g}`: a step count is a whole number", b.at(name),
                             "neither steps nor a fraction",
                             help=f"write {int(v)} (steps), or a fraction of an epoch below 1 (0.5)"))
    v = p.get("eval_every")
    if isinstance(v, (int, float)) and v < 1 and p.get("patience") is not None:
        out.append(error("FT0283", "early stopping (`patience`) needs validations every N steps",
                         b.at("eval_every"), "a fraction of an epoch",
                         help="write eval_every as a step count, e.g. 50"))
    v = p.get("save_every")
    if isinstance(v, (int, float)) and v < 1 and p.get("patience") is not None:
        out.append(error("FT0283", "early stopping (`patience`) saves at its validations",
                         b.at("save_every"), "a fraction of an epoch",
                         help="write save_every as a step count that is a multiple of eval_every"))
    if b.given("keep_checkpoints") and p.get("save_every") is None and p.get("save_steps") is None:
        out.append(error("FT0283", "`keep_checkpoints` keeps nothing: no checkpoint is written",
                         b.at("keep_checkpoints"), "no save cadence",
                         help="add save_every = N (steps) or a fraction of an epoch, e.g. 0.5"))
    pad, longest = p.get("pad_to_length"), p.get("max_length")
    if isinstance(pad, int) and isinstance(longest, int) and pad < longest:
        out.append(error("FT0283", f"`pad_to_length = {pad}` is shorter than max_length ({longest})",
                         b.at("pad_to_length"), "examples may be longer",
                         help=f"set pad_to_length >= {longest}, or lower max_length"))
    if isinstance(pad, int) and p.get("packing") is True:
        out.append(error("FT0283", "`pad_to_length` with packing: packed rows carry no padding",
                         b.at("pad_to_length"), "nothing to pad", help="remove one of them"))
    if b.given("gradient_checkpointing_reentrant") and p.get("gradient_checkpointing") is not True:
        out.append(error("FT0283", "`gradient_checkpointing_reentrant` without gradient checkpointing",
                         b.at("gradient_checkpointing_reentrant"), "not used",
                         help="add gradient_checkpointing = true"))
    if b.given("stop_if_loss_above_steps") and p.get("stop_if_loss_above") is None:
        out.append(error("FT0283", "`stop_if_loss_above_steps` without `stop_if_loss_above`",
                         b.at("stop_if_loss_above_steps"), "no threshold",
                         help="add stop_if_loss_above = 10 (the loss above which the run stops)"))
    return out


def settings(p: dict[str, Any], has_eval: bool) -> dict[str, Any]:
    """TrainingArguments overrides for fractions of an epoch (whole steps are trainer_settings'
    eval_steps / save_steps) and the checkpoints kept."""
    kw: dict[str, Any] = {}
    ev, sv = p["eval_every"], p["save_every"]
    if ev is not None and ev < 1 and has_eval:
        kw["eval_strategy"] = "no"  # the callback asks for each validation
    if sv is not None and sv < 1:
        kw["save_strategy"] = "no"
    if p["gradient_checkpointing"]:
        kw["activation_checkpointing_kwargs"] = {"use_reentrant": bool(p["gradient_checkpointing_reentrant"])}
    if sv is not None or p["keep_checkpoints"]:
        kw["save_total_limit"] = max(int(p["save_limit"]), int(p["keep_checkpoints"] or 0))
    return kw


def callbacks(ctx: StepContext, p: dict[str, Any], history: list[dict[str, float]]) -> list[Any]:
    from transformers import TrainerCallback

    out: list[Any] = []
    fractions = {k: p[k] for k in ("eval_every", "save_every") if p[k] is not None and p[k] < 1}

    class EpochFractions(TrainerCallback):  # type: ignore[misc]
        """Validation / checkpoints every fraction of an epoch, in optimiser steps."""

        every: dict[str, int | None] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, train_dataloader: Any = None,
                           **kw: Any) -> None:
            batches = len(train_dataloader) if train_dataloader is not None else 0
            per_epoch = math.ceil(batches / max(1, int(args.gradient_accumulation_steps))) or None
            self.every = {k: _steps(v, per_epoch) for k, v in fractions.items()}
            shown = ", ".join(f"{k} every {n} steps" for k, n in self.every.items() if n)
            if shown:
                ctx.log(f"{per_epoch} steps an epoch: {shown}")

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ev, sv = self.every.get("eval_every"), self.every.get("save_every")
            if ev and state.global_step % ev == 0 and p["eval_data"] is not None:
                control.should_evaluate = True
            if sv and state.global_step % sv == 0:
                control.should_save = True

    if fractions:
        out.append(EpochFractions())
    limit = p["stop_if_loss_above"]
    if limit is not None:
        need = int(p["stop_if_loss_above_steps"] or 1)

        class Watchdog(TrainerCallback):  # type: ignore[misc]
            """Fails the node cleanly (one line, nothing saved) when the loss stays high."""

            def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                       **kw: Any) -> None:
                losses = [h["loss"] for h in history[-need:]]
                if "loss" in (logs or {}) and len(losses) == need and all(x > limit for x in losses):
                    raise StepError(f"the training loss stayed above {limit:g} for {need} logged "
                                    f"step{'s' if need > 1 else ''} (last {losses[-1]:.4g} at step "
                                    f"{state.global_step}): stopped, nothing was saved",
                                    hint="stop_if_loss_above stopped it: lower lr, add warmup, or check the data")

        out.append(Watchdog())
    return out


def set_pad_token(tokenizer: Any, p: dict[str, Any]) -> None:
    """`pad_token = "<pad>"`: padding uses that token instead of EOS (it must be in the
    vocabulary: a new token would need a new embedding row)."""
    name = p["pad_token"]
    if name is None:
        return
    ids = tokenizer.convert_tokens_to_ids(name)
    if not isinstance(ids, int) or ids == tokenizer.unk_token_id or ids is None:
        raise StepError(f"pad_token = {name!r} is not a token of this tokenizer",
                        hint="name a token the vocabulary has, e.g. one of "
                             + ", ".join(repr(t) for t in list(tokenizer.all_special_tokens)[:6]))
    tokenizer.pad_token = name


def keep(ctx: StepContext, folder: Path) -> None:
    """After a successful run: the last keep_checkpoints checkpoints move out of the resume
    folder (a rerun of the same key must not resume from a finished run) to the kept ones."""
    n = ctx.params.get("keep_checkpoints")
    if not n or not ctx.key:
        return
    done = sorted((d for d in folder.glob("checkpoint-*") if d.name.split("-")[-1].isdigit()),
                  key=lambda d: int(d.name.split("-")[-1]))[-int(n):]
    if not done:
        return
    dest = ctx.cache / KEPT / _dirname(ctx.node) / ctx.key
    if dest.exists():
        shutil.rmtree(dest)  # ftlang's own earlier copy of the same key
    dest.mkdir(parents=True)
    for d in done:
        shutil.move(str(d), str(dest / d.name))
    (dest / "node.json").write_text(json.dumps({"node": ctx.node, "key": ctx.key}) + "\n")
    ctx.log(f"kept {len(done)} checkpoint{'s' if len(done) > 1 else ''} in {dest}")


def _dirname(node: str) -> str:
    import re

    return re.sub(r"[^\w.=-]+", "_", node)


def listing(cache: Path, node: str) -> list[dict[str, Any]]:
    """The kept checkpoints of `node`, newest run first: {key, path, step, loss}."""
    root = cache / KEPT / _dirname(node)
    runs = sorted((d for d in root.glob("*") if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True) \
        if root.is_dir() else []
    out = []
    for run in runs:
        for ck in sorted(run.glob("checkpoint-*"), key=lambda d: int(d.name.split("-")[-1])):
            state = ck / "trainer_state.json"
            logs = json.loads(state.read_text()).get("log_history", []) if state.is_file() else []
            loss = next((h["loss"] for h in reversed(logs) if "loss" in h), None)
            out.append({"key": run.name, "path": str(ck), "step": int(ck.name.split("-")[-1]), "loss": loss})
    return out
