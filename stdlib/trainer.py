"""Trainer plumbing shared by every training method (train, preference, rl).

In:  a train step's complete parameters (lr, epochs, batch_size, eval_steps, ...), the
     device, and a built transformers / trl trainer.
Out: TrainingArguments keyword arguments (`trainer_settings`), the logging and tracker
     callbacks, a `fit` that resumes from this node key's checkpoint and fails the step on
     a nan or inf loss, the saved model artifact, and the ledger metadata (`report`).

trl-based methods (preference.py, rl.py) start from `trl_setup` and `trl_settings`.
"""

from __future__ import annotations

import gc
import math
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlang.stdlib import cadence, cputhreads, devices, distributed, gpu, leansteps, modelio
from ftlang.stdlib import template as templates
from ftlang.stdlib.adapters import adapter_of, load_base
from ftlang.stdlib.spec import Artifact, Call, StepContext, StepError


def default_lr(method: Call) -> float:
    """The method's peak learning rate when `lr` is not given (its Method declaration)."""
    from ftlang.stdlib import registry

    return registry.METHOD_INDEX[method.name].default_lr(method)


def learning_rate(p: dict[str, Any], method: Call) -> float:
    """`lr` as given, or the method's default (lr = None is the declared default)."""
    return float(p["lr"]) if p["lr"] is not None else default_lr(method)


def clamp_length(ctx: StepContext, lm: Any, max_length: int) -> int:
    limit = getattr(lm.config, "max_position_embeddings", None)
    if limit and max_length > limit:
        ctx.log(f"max_length {max_length} > the model's {limit} positions: using {limit}")
        return int(limit)
    return max_length


# ---- Trainer settings ----------------------------------------------------------------

def trainer_settings(p: dict[str, Any], lr: float, output_dir: Path, device: str, *,
                     has_eval: bool) -> dict[str, Any]:
    """Keyword arguments for TrainingArguments and the trl configs (which extend it)."""
    warmup = float(p["warmup"])
    scheduler = p["scheduler"]
    if scheduler == "constant" and warmup > 0:
        scheduler = "constant_with_warmup"  # plain "constant" ignores warmup
    seed = int(p["seed"])
    eval_steps = cadence.whole(p["eval_every"]) or int(p["eval_steps"])
    patience = p["patience"]
    save_steps = p["save_steps"] or cadence.whole(p["save_every"])
    kw: dict[str, Any] = dict(
        output_dir=str(output_dir),
        learning_rate=lr,
        num_train_epochs=float(p["epochs"]),
        max_steps=int(p["max_steps"]),
        per_device_train_batch_size=int(p["batch_size"]),
        per_device_eval_batch_size=int(p["batch_size"]),
        gradient_accumulation_steps=int(p["grad_accum"]),
        # transformers 5: a float < 1 is a warmup ratio, an int a step count.
        warmup_steps=warmup if warmup < 1 else int(warmup),
        lr_scheduler_type=scheduler,
        optim=devices.optimizer(p["optimizer"], device),
        weight_decay=float(p["weight_decay"]),
        max_grad_norm=float(p["max_grad_norm"]),
        seed=seed, data_seed=seed,
        train_sampling_strategy="random" if p["shuffle"] else "sequential",
        logging_steps=int(p["logging_steps"]), logging_first_step=True,
        # guard_loss fails the step on the first nan or inf loss; the Trainer's own filter
        # would test every micro-batch's loss again (two more device syncs each on a GPU).
        logging_nan_inf_filter=False,
        save_strategy="no", eval_strategy="no", report_to="none",
        activation_checkpointing=bool(p["gradient_checkpointing"]),
        disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0,  # workers would outlive a killed driver
        **devices.placement(device), **devices.precision_flags(p["precision"], device),
    )
    if kw["activation_checkpointing"]:
        kw["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    kw.update(distributed.trainer_kwargs(p, device))  # under torchrun: ddp_backend, fsdp, deepspeed
    if has_eval:
        kw.update(eval_strategy="steps", eval_steps=eval_steps)
    if save_steps:
        kw.update(save_strategy="steps", save_steps=int(save_steps), save_total_limit=int(p["save_limit"]))
    if has_eval and patience:
        # The best checkpoint is reloaded at the end: saves must line up with evaluations.
        every = int(save_steps) if save_steps and int(save_steps) % eval_steps == 0 else eval_steps
        kw.update(save_strategy="steps", save_steps=every, load_best_model_at_end=True,
                  metric_for_best_model="eval_loss", greater_is_better=False,
                  save_total_limit=max(2, int(p["save_limit"])))
    kw.update(cadence.settings(p, has_eval))  # fractions of an epoch: driven by cadence's callback
    return kw


def _node_dirname(ctx: StepContext) -> str:
    """The node id as a folder name ("train.sft[lr=1e-4]" keeps its brackets' content)."""
    return re.sub(r"[^\w.=-]+", "_", ctx.node)


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
    return Path(tempfile.mkdtemp(prefix=_node_dirname(ctx) + "-", dir=root))


def _agreed_resume(folder: Path) -> Path | None:
    """The newest complete checkpoint; under torchrun, the newest that every machine has
    (distributed.agreed_step), so all ranks resume from the same step."""
    mine = last_checkpoint(folder)
    step = distributed.agreed_step(int(mine.name.split("-")[-1]) if mine else None,
                                   lambda n: (folder / f"checkpoint-{n}" / "trainer_state.json").is_file())
    return None if step is None else folder / f"checkpoint-{step}"


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (trainer_state.json is written last)."""
    done = [d for d in folder.glob("checkpoint-*")
            if d.is_dir() and (d / "trainer_state.json").is_file() and d.name.split("-")[-1].isdigit()]
    return max(done, key=lambda d: int(d.name.split("-")[-1]), default=None)


# ---- callbacks -----------------------------------------------------------------------

def callbacks(ctx: StepContext, history: list[dict[str, float]], evals: list[dict[str, float]],
              p: dict[str, Any]) -> list[Any]:
    """Loss and validation-loss logging into `history`/`evals`, progress, early stopping
    (patience with eval_data) and the trackers named in report_to."""
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
    if p["patience"] and p["eval_data"] is not None:
        out.append(EarlyStoppingCallback(early_stopping_patience=int(p["patience"])))
    if "tensorboard" in p["report_to"]:
        try:
            from torch.utils.tensorboard import SummaryWriter
            from transformers.integrations import TensorBoardCallback
        except ImportError as e:
            raise StepError("report_to = [\"tensorboard\"] needs the tensorboard package",
                            hint="pip install tensorboard") from e
        logdir = ctx.cache / "runs" / _node_dirname(ctx)
        logdir.mkdir(parents=True, exist_ok=True)
        out.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(logdir))))
        ctx.log(f"tensorboard logs in {logdir}")
    out += _file_trackers(ctx, p["report_to"])
    out += cadence.callbacks(ctx, p, history)  # epoch-fraction cadences, stop_if_loss_above
    out += p.get("search_callbacks") or []  # a search trial's pruning reporter (stdlib/search.py)
    return out


def _file_trackers(ctx: StepContext, names: list[str]) -> list[Any]:
    """mlflow and wandb: online where the user's environment says so, else on disk under .ft/
    (ftlang.stdlib.trackers)."""
    from ftlang.stdlib import trackers

    return trackers.callbacks(ctx, names)


# ---- training ------------------------------------------------------------------------

def count_tokens(trainer: Any) -> Any:
    """Wraps training_step to count the tokens trained on (attention-mask ones: padding is
    not work; a batch without a mask counts its ids). Summed on the device and read once at
    the end, so it adds no sync per step. Returns the reader."""
    import torch

    total: list[Any] = [0]
    inner = trainer.training_step

    def training_step(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(inputs, dict):
            tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
            # SFT and preference batches carry attention masks (SFT also a completion_mask, a
            # subset); GRPO/RLOO carry prompt_mask + completion_mask.
            masks = [v for k, v in tensors.items() if k.endswith("attention_mask")] or \
                [v for k, v in tensors.items() if k in ("prompt_mask", "completion_mask")]
            if masks:
                total[0] = total[0] + sum(m.sum() for m in masks)
            else:
                total[0] = total[0] + sum(v.numel() for k, v in tensors.items() if k.endswith("input_ids"))
        return inner(model, inputs, *args, **kwargs)

    trainer.training_step = training_step
    return lambda: int(total[0])


def guard_loss(trainer: Any) -> None:
    """Fail the step at the first optimiser step whose training loss is nan or inf.

    Trainer leaves such losses out of its log (logging_nan_inf_filter) and trains on, so a
    diverged run would end "successfully" with nan weights. The loss of each micro-batch
    is taken from training_step (trl's trainers all go through it) and checked once per
    optimiser step by a callback, which raises: nothing is saved, the step fails.
    """
    import torch
    from transformers import TrainerCallback

    losses: list[Any] = []  # this optimiser step's micro-batch losses, still on the device
    inner = trainer.training_step

    def training_step(*args: Any, **kwargs: Any) -> Any:
        loss = inner(*args, **kwargs)
        if isinstance(loss, torch.Tensor):
            losses.append(loss.detach())
        return loss

    class FiniteLoss(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not losses:
                return
            step = losses[0] if len(losses) == 1 else torch.stack([x.float().mean() for x in losses])
            losses.clear()
            if step.numel() == 1:  # one micro-batch: its value, read once (one device sync)
                value = float(step)
                if math.isfinite(value):
                    return
            else:
                finite = torch.isfinite(step)
                if bool(finite.all()):  # one device sync per optimiser step
                    return
                value = float(step[~finite].flatten()[0])
            raise StepError(f"loss became {value} at step {state.global_step}; nothing was saved",
                            hint=f"training diverged: lower lr (it is {args.learning_rate:g}) or "
                                 "max_grad_norm, or add warmup")

    trainer.training_step = training_step
    trainer.add_callback(FiniteLoss())


def _diverged(trainer: Any, error: Exception) -> None:
    """A crash caused by weights that went nan or inf in an update whose loss was still
    finite (sampling from them fails in grpo, rloo, online_dpo): a StepError that says so."""
    try:
        bad = modelio.first_non_finite(trainer.model.named_parameters())
    except Exception:  # e.g. out of memory again: the original error is the one to report
        return
    if bad is not None:
        raise StepError(f"the weights became {bad[1]} at step {trainer.state.global_step} ({bad[0]}); "
                        "nothing was saved",
                        hint=f"training diverged: lower lr (it is {trainer.args.learning_rate:g}) or "
                             "max_grad_norm, or add warmup") from error


def fit(ctx: StepContext, trainer: Any, folder: Path) -> tuple[Any, float]:
    """trainer.train(), resumed from the last checkpoint of this node key if there is one.
    The checkpoint folder is removed after success; after a failure it stays for the rerun.
    Every training method goes through here, so every one fails on a nan or inf loss."""
    from transformers import PrinterCallback

    # Trainer prints every log dict to stdout when tqdm is off; ctx.log reports instead.
    trainer.remove_callback(PrinterCallback)
    distributed.check_engaged(trainer, ctx.params)  # fsdp / deepspeed really run, or the step fails
    gpu.prepare(ctx, trainer)  # attention kernel; peak memory per logging step on CUDA
    guard_loss(trainer)
    threads = cputhreads.apply(trainer.args.device.type)  # on CPU: a fixed count (same bytes)
    if threads is not None and ctx.verbose:
        ctx.log(f"torch threads: {threads} (stdlib/cputhreads.py; FT_TORCH_THREADS overrides)")
    tokens = count_tokens(trainer)
    resume = _agreed_resume(folder)
    if resume is not None:
        ctx.log(f"resuming from {resume.name} (same node key)")
    restore = leansteps.apply(trainer)
    started = time.perf_counter()
    # The Trainer starts with accelerate's free_memory(), a gc.collect() over every object
    # alive (0.1-0.3 s after importing transformers); frozen, the collector skips what was
    # already there and still collects what training makes.
    gc.freeze()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    except BaseException as e:
        if not ctx.key:
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(e, Exception) and not isinstance(e, StepError):
            _diverged(trainer, e)
        raise
    finally:
        gc.unfreeze()
        restore()
    seconds = time.perf_counter() - started
    cadence.keep(ctx, folder)  # keep_checkpoints: the last N move out before the folder goes
    shutil.rmtree(folder, ignore_errors=True)
    result.metrics["ftlang_tokens"] = tokens()  # report() puts it in the ledger metadata
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
        "trained_tokens": int(result.metrics.get("ftlang_tokens", 0)),  # this session's
    }
    if evals:
        out["eval_loss"] = [e["loss"] for e in evals]
        out["eval_steps"] = [e["step"] for e in evals]
        out["best_eval_loss"] = min(e["loss"] for e in evals)
    out.update(extra)
    # Microseconds: rounded to milliseconds, a short run's seconds no longer give back the
    # tokens_per_second derived from them below (tests/test_trainer_hparams.py).
    out["seconds"] = round(seconds, 6)
    # None where the trainer's batches carry no token tensors (online DPO generates inside).
    out["tokens_per_second"] = round(out["trained_tokens"] / seconds, 1) \
        if seconds > 0 and out["trained_tokens"] else None
    return out


def save_trained(lm: Any, tokenizer: Any, ctx: StepContext, src: Artifact, adapter: Call,
                 template: dict[str, Any] | None) -> None:
    """The model artifact: full weights, or the adapter with its base's digest. Under torchrun
    only local rank 0 writes (DDP replicas are equal; the driver commits what it wrote)."""
    if not distributed.rank_zero():
        return
    lm.eval()
    if adapter.name == "full":
        lm.to("cpu")
        modelio.save_full(lm, tokenizer, ctx.out, template=template)
    else:
        a = adapter.args
        quant = {"quant": a["quant"], "double_quant": bool(a["double_quant"])} \
            if adapter.name == "lora" and a.get("quant") not in (None, "none") else None
        modelio.save_adapter(lm, tokenizer, ctx.out, base_digest=src.digest, template=template,
                             quant=quant)


# ---- trl-based methods (preference.py, rl.py) --------------------------------------------

def own_objective(name: str, columns: tuple[str, ...]) -> dict[str, str]:
    """Method.unused of a method with its own objective and fixed column names: the train
    attributes that pick an objective, name columns, or cut and pack examples."""
    rename = (f"{name} reads the columns {', '.join(columns)}: rename yours in a curate query "
              f"(SELECT x AS {columns[0]})")
    return {"objective": "the method is the objective",
            "prompt_field": rename, "completion_field": rename, "messages_field": rename, "text_field": rename,
            "truncation": f"trl cuts {name}'s rows to max_length itself",
            "packing": "packing applies to sft, chat and clm training",
            "pad_to_length": f"trl pads {name}'s batches itself"}


@dataclass
class TrlSetup:
    """What every trl-based method needs before its trainer is built."""

    method: Call
    adapter: Call
    src: Artifact
    device: str
    seed: int
    lr: float
    tokenizer: Any
    template: dict[str, Any]


def trl_setup(ctx: StepContext) -> TrlSetup:
    from datasets.utils.logging import disable_progress_bar
    from transformers import set_seed

    disable_progress_bar()  # trl maps its datasets with tqdm bars; ctx.progress reports instead

    p = ctx.params
    method: Call = p["method"]
    adapter = adapter_of(method)
    device = devices.resolve(p["device"])
    seed = int(p["seed"])
    set_seed(seed)
    src: Artifact = p["from"]
    tokenizer = modelio.load_tokenizer(src)
    cadence.set_pad_token(tokenizer, p)
    # The template the model was trained with, so preference training sees sft's text.
    tpl = templates.load(p["template"]) if p["template"] is not None else \
        (modelio.template_of(src) or templates.load(None))
    tpl = templates.resolve(tpl, tokenizer)  # a family preset or tokenizer(): its Jinja source
    return TrlSetup(method, adapter, src, device, seed, learning_rate(p, method), tokenizer, tpl)


def trl_settings(ctx: StepContext, s: TrlSetup, *, has_eval: bool) -> tuple[dict[str, Any], Path]:
    """trainer_settings for a trl config, plus the checkpoint folder."""
    folder = checkpoint_dir(ctx)
    kw = trainer_settings(ctx.params, s.lr, folder, s.device, has_eval=has_eval)
    return kw, folder


def reference_model(s: TrlSetup, ctx: StepContext) -> Any:
    """The frozen reference for full-weight training: `from`, adapters merged. With an
    adapter trl disables it to get the same model, so no second copy is loaded."""
    if s.adapter.name != "full":
        return None
    ref = load_base(s.src, Call("full", {}), s.device, ctx.cache)
    ref.eval()
    for param in ref.parameters():
        param.requires_grad_(False)
    return ref
