"""Per-step work the transformers Trainer repeats without need, done once before training.

In:  a built transformers / trl Trainer, just before `train()` (stdlib/trainer.fit).
Out: the same Trainer with leaner per-step paths (instance attributes over its own
     methods, the same numbers: tests/test_train_loop_parity.py, tests/test_leansteps.py),
     and the function that removes them after training.

At a tiny model's step (bench/bench_train.py) the loop around forward, backward and the
optimizer is a few percent of the step; each saving here is one of those percents.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any


def apply(trainer: Any) -> Callable[[], None]:
    """Per-step work the Trainer repeats without need, done once; returns what undoes it.

    Its FLOP count walks every module each step (`num_parameters`) for a number that cannot
    change during training. In one process (no FSDP, no DeepSpeed, whose engines own these
    calls), three more walks of the module tree per step: `model.train()` (all modules are
    already in training mode but after an evaluation), `model.zero_grad()` and the gradient
    clip over `model.parameters()`. They go over the lists taken here instead: the same
    modules and parameters in the same order, so the same numbers (tests/test_train_loop_parity.py).
    Without a distributed engine at all (accelerate's DistributedType.NO), the clip is
    torch's own after accelerate's unscale (accelerate would parse torch's version string
    and look for DTensor gradients first, each step), and the backward pass skips
    accelerate's division of the loss by its accumulation count, which the Trainer fixes
    at 1 (it accumulates itself): x / 1 is x, so the same gradients."""
    model = trainer.model
    main = getattr(model, "main_input_name", "input_ids")
    if hasattr(model, "num_parameters"):
        n = int(model.num_parameters(exclude_embeddings=True))

        def floating_point_ops(inputs: dict[str, Any]) -> int:  # transformers' formula, cached count
            return 6 * inputs[main].numel() * n if main in inputs else 0

        trainer.floating_point_ops = floating_point_ops
    _ask_environment_once()
    handler = trainer.callback_handler
    handler.call_event = lean_call_event(handler)
    if trainer.args.world_size != 1 or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        return lambda: handler.__dict__.pop("call_event", None)
    modules, params = list(model.modules()), list(model.parameters())
    inner_train = model.train

    training = operator.attrgetter("training")

    def train(mode: bool = True) -> Any:
        # The flags are read in C (map, attrgetter), not by a Python loop: this runs every step.
        if (all(map(training, modules)) if mode else not any(map(training, modules))):
            return model
        return inner_train(mode)

    inner_zero = model.zero_grad

    def zero_grad(set_to_none: bool = True) -> None:
        if not set_to_none:  # the Trainer never asks for it; torch's own walk then
            return inner_zero(set_to_none)
        for q in params:  # what Module.zero_grad does, over the list
            q.grad = None

    import torch
    from accelerate.utils import DistributedType

    acc = trainer.accelerator
    plain = acc.distributed_type == DistributedType.NO
    inner_clip = trainer._clip_grad_norm

    def clip_grad_norm(m: Any) -> Any:
        if m is not model:
            return inner_clip(m)
        if not plain:
            return acc.clip_grad_norm_(params, trainer.args.max_grad_norm)
        acc.unscale_gradients()  # fp16 on a GPU: the scaler's factor out first
        return torch.nn.utils.clip_grad_norm_(params, trainer.args.max_grad_norm)

    inner_backward = acc.backward

    def backward(loss: Any, **kwargs: Any) -> None:
        # kwargs: LOMO's learning rate; a scaler: fp16. accelerate's own path for both.
        if kwargs or acc.scaler is not None or acc.gradient_accumulation_steps != 1:
            inner_backward(loss, **kwargs)
        else:
            loss.backward()

    # Instance attributes, removed after training: a copy of the model must not keep
    # functions that close over this one.
    model.train, model.zero_grad, trainer._clip_grad_norm = train, zero_grad, clip_grad_norm
    if plain:
        acc.backward = backward
    if count_is_the_mean(trainer):
        trainer._get_num_items_in_batch = _no_count

    def restore() -> None:
        for name in ("train", "zero_grad"):
            model.__dict__.pop(name, None)
        for name in ("_clip_grad_norm", "_get_num_items_in_batch"):
            trainer.__dict__.pop(name, None)
        acc.__dict__.pop("backward", None)
        handler.__dict__.pop("call_event", None)

    return restore


def lean_call_event(handler: Any) -> Callable[..., Any]:
    """The handler's call_event, calling for each event only the callbacks that define it.

    The Trainer fires four events a step (step begin, before and after the optimizer, step
    end) at every callback (its flow, ftlang's log and loss guard, trackers, a search's
    pruner), each call with eight keyword arguments built anew; most of them reach
    TrainerCallback's own method, which does nothing and returns None, and None leaves
    `control` as it was, so leaving them out changes nothing. The list of callbacks is
    compared at each call (in C): one added or removed during training is seen."""
    from transformers import TrainerCallback

    seen: list[Any] = []
    active: dict[str, list[Any]] = {}

    def defines(callback: Any, event: str) -> bool:
        own = getattr(callback, "__dict__", {})
        return event in own or getattr(type(callback), event, None) is not getattr(TrainerCallback, event, None)

    def call_event(event: str, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if handler.callbacks != seen:
            seen[:] = handler.callbacks
            active.clear()
        callbacks = active.get(event)
        if callbacks is None:
            callbacks = active[event] = [cb for cb in seen if defines(cb, event)]
        # transformers' CallbackHandler.call_event, over those callbacks (the same keyword
        # arguments: tests/test_leansteps.py compares them with its own).
        for callback in callbacks:
            result = getattr(callback, event)(
                args, state, control, model=handler.model, processing_class=handler.processing_class,
                optimizer=handler.optimizer, lr_scheduler=handler.lr_scheduler,
                train_dataloader=handler.train_dataloader, eval_dataloader=handler.eval_dataloader,
                **kwargs)
            if result is not None:
                control = result
        return control

    return call_event


def count_is_the_mean(trainer: Any) -> bool:
    """Whether the Trainer's per-step count of label tokens (`num_items_in_batch`, ~0.2 ms
    a step: a comparison, a sum, a copy and a division of tensors) can only repeat the
    model's own mean. The count exists so that a loss summed over several micro-batches or
    processes is divided by all their tokens; with one micro-batch per optimiser step, one
    process, Trainer's own compute_loss and no loss function of the user's, sum / count is
    the mean cross-entropy over the labels that are not -100, which the model computes
    without it (the same losses: tests/test_train_loop_parity.py). trl's trainers keep it."""
    from transformers import Trainer

    args = trainer.args
    return (type(trainer).compute_loss is Trainer.compute_loss and trainer.compute_loss_func is None
            and trainer.label_smoother is None and args.gradient_accumulation_steps == 1
            and args.world_size == 1 and args.n_gpu <= 1)


def _no_count(batch_samples: list[Any], device: Any) -> None:
    return None


def _ask_environment_once() -> None:
    """Questions about the installation and the launch environment that the training loop
    asks every step, whose answers cannot change while ftlang runs, asked once: accelerate's
    optimizer step asks twice whether the `lomo_optim` package is installed (a search of
    sys.path, importlib.util.find_spec), the Trainer's training step whether SageMaker model
    parallelism is on (two environment variables parsed as JSON)."""
    import functools

    import accelerate.optimizer as accel
    import transformers.trainer as hf

    if not hasattr(accel.is_lomo_available, "cache_info"):  # not cached yet
        accel.is_lomo_available = functools.cache(accel.is_lomo_available)
    if not hasattr(hf.is_sagemaker_mp_enabled, "cache_info"):
        hf.is_sagemaker_mp_enabled = functools.cache(hf.is_sagemaker_mp_enabled)
