"""ftlang's training (the Trainer a train step builds) gives the same losses as a plain
transformers + peft loop with the same optimizer, and that optimizer is fused AdamW."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import train_loops  # noqa: E402  (the benchmark's two loops: the test checks what it times)
from ftlang.stdlib import cputhreads  # noqa: E402


def test_losses_equal_hand_written_loop_to_6_digits() -> None:
    data = train_loops.examples(48, 24)
    ft, _, _ = train_loops.ftlang_loop(data, steps=12, batch=4, lr=3e-3)
    hand, _, _ = train_loops.hand_loop(data, steps=12, batch=4, lr=3e-3)
    assert len(ft) == len(hand) == 12
    assert hand[-1] < hand[0]  # it trains: the comparison is not between two constants
    assert ft == pytest.approx(hand, abs=2e-6), list(zip(ft, hand))
    # The same optimizer: ftlang asks transformers for the fused AdamW kernel on CPU.
    inner = getattr(train_loops.ftlang_loop.optimizer, "optimizer", train_loops.ftlang_loop.optimizer)
    assert type(inner).__name__ == "AdamW" and inner.defaults.get("fused") is True


@pytest.mark.parametrize("hand_first", [False, True])
def test_lockstep_times_every_step_of_both_and_trains_each_as_alone(hand_first: bool) -> None:
    """bench_train's harness: one hand step per Trainer step, before or after it; each side
    gets the losses it gets alone, and every turn but the set-up's is timed."""
    data = train_loops.examples(48, 24)
    run = train_loops.lockstep(data, steps=8, batch=4, lr=3e-3, hand_first=hand_first)
    alone, _, _ = train_loops.hand_loop(data, steps=8, batch=4, lr=3e-3)
    ft, _, _ = train_loops.ftlang_loop(data, steps=8, batch=4, lr=3e-3)
    assert run.hand_losses == alone and run.ft_losses == ft
    assert len(run.hand_steps) == 8 and len(run.ft_steps) == 7
    assert all(t > 0 for t in run.ft_steps + run.hand_steps)
    assert 0 < run.ft_total and sum(run.hand_steps) < run.hand_total


def test_thread_count_is_a_fixed_choice_never_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FT_TORCH_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cputhreads.choose(cores=8) == 8  # every core of the affinity mask
    monkeypatch.setattr(os, "getloadavg", lambda: (11.0, 11.0, 11.0))
    assert cputhreads.choose(cores=8) == 8  # a busy machine gives the same count: same bytes
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # what --jobs 2 gives each job on 8 cores
    assert cputhreads.choose(cores=8) == 4
    monkeypatch.setenv("FT_TORCH_THREADS", "3")
    assert cputhreads.choose(cores=8) == 3
    assert cputhreads.apply("cuda") is None


def test_per_run_and_per_step_overheads_are_done_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """fit() counts the parameters for the Trainer's FLOPs once, not every step (the same
    total_flos as transformers' own formula), and trains with the collector frozen, so
    accelerate's gc.collect() at the start does not walk every object alive; unfrozen after."""
    import gc

    from transformers import PreTrainedModel, TrainerCallback
    from transformers.trainer import Trainer

    calls = {"num_parameters": 0}
    real = PreTrainedModel.num_parameters

    def counting(self: PreTrainedModel, *a: object, **k: object) -> int:
        calls["num_parameters"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(PreTrainedModel, "num_parameters", counting)
    frozen: list[int] = []

    class Probe(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *a: object, **k: object) -> None:
            frozen.append(gc.get_freeze_count())

    seen: dict[str, float] = {}
    orig_init = Trainer.__init__

    def init(self: Trainer, *a: object, **k: object) -> None:
        orig_init(self, *a, **k)
        self.add_callback(Probe())
        seen["trainer"] = id(self)
        train_loops.ftlang_loop.trainer = self  # type: ignore[attr-defined]

    monkeypatch.setattr(Trainer, "__init__", init)
    steps, batch, length = 12, 4, 24
    data = train_loops.examples(48, length)
    train_loops.ftlang_loop(data, steps=steps, batch=batch, lr=3e-3)
    trainer = train_loops.ftlang_loop.trainer  # type: ignore[attr-defined]
    assert calls["num_parameters"] <= 2, calls  # once for the cached count (not 12 times)
    n = real(trainer.model, exclude_embeddings=True)
    assert trainer.state.total_flos == 6 * n * steps * batch * length
    assert len(frozen) == steps and min(frozen) > 0 and gc.get_freeze_count() == 0


def _counted_steps(monkeypatch: pytest.MonkeyPatch, counts: dict[str, int]) -> tuple[list[dict[str, int]], Any]:
    """Eight steps of ftlang_loop, `counts` copied at each step's end; and the Trainer."""
    from transformers import TrainerCallback
    from transformers.trainer import Trainer

    seen: list[dict[str, int]] = []
    made: list[Any] = []

    class Probe(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *a: object, **k: object) -> None:
            seen.append(dict(counts))

    orig_init = Trainer.__init__

    def init(self: Trainer, *a: object, **k: object) -> None:
        orig_init(self, *a, **k)
        self.add_callback(Probe())
        made.append(self)

    monkeypatch.setattr(Trainer, "__init__", init)
    train_loops.ftlang_loop(train_loops.examples(48, 24), steps=8, batch=4, lr=3e-3, logging_steps=100)
    return seen, made[0]


def test_a_step_walks_no_module_tree_and_searches_no_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the first and the last optimiser step, nothing walks the model's module tree
    (Trainer's per-step model.train(), model.zero_grad() and the gradient clip over
    model.parameters() go over lists fit() took once) and nothing searches sys.path
    (accelerate's per-step lomo check); the instance methods are gone after training."""
    import importlib.util

    import torch

    counts = {"walk": 0, "children": 0, "find_spec": 0}
    real_walk, real_children = torch.nn.Module.named_modules, torch.nn.Module.named_children
    real_find = importlib.util.find_spec

    def walk(self: torch.nn.Module, *a: object, **k: object) -> object:
        counts["walk"] += 1  # parameters(), zero_grad(), modules()
        return real_walk(self, *a, **k)

    def children(self: torch.nn.Module) -> object:
        counts["children"] += 1  # train(): a recursion over children()
        return real_children(self)

    def find(*a: object, **k: object) -> object:
        counts["find_spec"] += 1
        return real_find(*a, **k)

    monkeypatch.setattr(torch.nn.Module, "named_modules", walk)
    monkeypatch.setattr(torch.nn.Module, "named_children", children)
    monkeypatch.setattr(importlib.util, "find_spec", find)
    seen, trainer = _counted_steps(monkeypatch, counts)
    assert len(seen) == 8 and seen[1] == seen[-1], seen  # step 2 to step 8: no walk, no search
    model = trainer.model
    assert "train" not in model.__dict__ and "zero_grad" not in model.__dict__


def test_one_process_steps_skip_accelerate_s_distributed_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """In one process without a distributed engine, a step goes to torch directly: the
    backward pass without accelerate's division by 1, the clip without its DTensor search
    (which parses torch's version string each time), and no JSON parse of SageMaker's
    environment variables per step. The losses stay the hand loop's (the parity test
    above); the accelerator's instance attribute is gone after training."""
    import json

    import accelerate

    counts = {"accelerate_backward": 0, "dtensor_clip": 0, "json": 0}
    real_backward = accelerate.Accelerator.backward
    real_clip = accelerate.Accelerator._clip_grad_norm_dtensor_aware
    real_loads = json.loads

    def backward(self: object, *a: object, **k: object) -> object:
        counts["accelerate_backward"] += 1
        return real_backward(self, *a, **k)

    def clip(self: object, *a: object, **k: object) -> object:
        counts["dtensor_clip"] += 1
        return real_clip(self, *a, **k)

    def loads(*a: object, **k: object) -> object:
        counts["json"] += 1
        return real_loads(*a, **k)

    monkeypatch.setattr(accelerate.Accelerator, "backward", backward)
    monkeypatch.setattr(accelerate.Accelerator, "_clip_grad_norm_dtensor_aware", clip)
    monkeypatch.setattr(json, "loads", loads)
    seen, trainer = _counted_steps(monkeypatch, counts)
    assert len(seen) == 8 and seen[-1]["accelerate_backward"] == seen[-1]["dtensor_clip"] == 0, seen
    assert seen[1]["json"] == seen[-1]["json"], seen  # step 2 to step 8: no JSON parsed
    assert "backward" not in trainer.accelerator.__dict__


def test_one_micro_batch_steps_do_not_count_label_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Trainer's per-step label count (num_items_in_batch) only repeats the model's mean
    with one micro-batch per optimiser step in one process: it is skipped there (the losses
    stay the hand loop's: the parity test above) and kept wherever it changes the loss."""
    from transformers.trainer import Trainer

    counts = {"label_count": 0}
    real = Trainer._get_num_items_in_batch

    def counted(self: Trainer, *a: object, **k: object) -> object:
        counts["label_count"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "_get_num_items_in_batch", counted)
    seen, trainer = _counted_steps(monkeypatch, counts)
    assert len(seen) == 8 and seen[-1]["label_count"] == 0, seen
    assert "_get_num_items_in_batch" not in trainer.__dict__

    from ftlang.stdlib.leansteps import count_is_the_mean

    def fake(cls: type, accumulate: int = 1, world: int = 1, loss_func: object = None) -> Any:
        t = cls.__new__(cls)
        t.args = type("Args", (), {"gradient_accumulation_steps": accumulate, "world_size": world, "n_gpu": 1})()
        t.compute_loss_func, t.label_smoother = loss_func, None
        return t

    class OwnLoss(Trainer):  # as trl's trainers: their compute_loss may use the count
        def compute_loss(self, *a: object, **k: object) -> Any:
            raise NotImplementedError

    assert count_is_the_mean(fake(Trainer))
    assert not count_is_the_mean(fake(Trainer, accumulate=2))  # a sum over micro-batches needs it
    assert not count_is_the_mean(fake(Trainer, world=2))
    assert not count_is_the_mean(fake(Trainer, loss_func=lambda *a, **k: 0))
    assert not count_is_the_mean(fake(OwnLoss))
