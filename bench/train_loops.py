"""Two ways to train the same LoRA on the same batches, shared by bench/bench_train.py and
tests/test_train_loop_parity.py:

- `ftlang_loop`: transformers.Trainer built exactly as a train step builds it
  (ftlang.stdlib.trainer.trainer_settings, callbacks, fit; the step's collator);
- `hand_loop`: a plain transformers + peft loop: torch AdamW (fused, what ftlang picks on
  CPU and CUDA), the same linear schedule with warmup, gradient clipping over the list of
  trainable weights, no KV cache built in training (`use_cache=False`), no Trainer: the
  fastest way found to write it by hand.

Both return (per-step losses, seconds spent in the training loop, tokens trained).
`lockstep` runs the two in one process, one step of each in turn, and times every step:
load on the machine then hits both sides within milliseconds of each other.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHAPE = {"hidden": 64, "layers": 2, "heads": 4, "vocab": 512}


def model(seed: int = 0) -> Any:
    """A tiny Llama with a LoRA on q/v, initialised from `seed` (the same on both sides)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    h = SHAPE["hidden"]
    cfg = LlamaConfig(hidden_size=h, intermediate_size=2 * h, num_hidden_layers=SHAPE["layers"],
                      num_attention_heads=SHAPE["heads"], num_key_value_heads=SHAPE["heads"],
                      vocab_size=SHAPE["vocab"], max_position_embeddings=256)
    lm = LlamaForCausalLM(cfg)
    return get_peft_model(lm, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                         target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))


def examples(n: int, length: int, seed: int = 1) -> list[dict[str, list[int]]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, SHAPE["vocab"], (n, length), generator=g).tolist()
    return [{"input_ids": row, "labels": list(row)} for row in ids]


def params(steps: int, batch: int, lr: float, logging_steps: int = 1) -> dict[str, Any]:
    """A train step's complete params for this run (declared defaults, in-order data)."""
    from ftlang.stdlib.registry import STEPS
    from ftlang.stdlib.spec import REQUIRED

    out = {a.name: a.default for a in STEPS["train"].signature.attrs if a.default is not REQUIRED}
    for sub in STEPS["train"].subblocks:
        out.setdefault(sub, None)
    out.update(max_steps=steps, batch_size=batch, lr=lr, warmup=0.1, shuffle=False, logging_steps=logging_steps,
               device="cpu", eval_data=None, patience=None)
    return out


def ftlang_loop(data: list[dict[str, list[int]]], steps: int, batch: int, lr: float,
                device: str = "cpu", logging_steps: int = 1,
                collate_seconds: list[float] | None = None,
                extra_callbacks: tuple[Any, ...] = (),
                setup_seconds: list[float] | None = None) -> tuple[list[float], float, int]:
    """Losses as the step logs them: each the mean over its `logging_steps` window.
    `collate_seconds`, when given, gets the time of each batch's assembly (the collator the
    DataLoader runs in the training process); `setup_seconds` the time to build the
    TrainingArguments and the Trainer (fit's own time holds the rest of the set-up);
    `extra_callbacks` go after the step's own."""
    from ftlang.stdlib.examples import make_collator
    from ftlang.stdlib.spec import StepContext
    from ftlang.stdlib.trainer import callbacks, fit, trainer_settings
    from transformers import Trainer, TrainingArguments

    p = params(steps, batch, lr, logging_steps)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = StepContext(node="train.bench", name="bench", params=p, out=Path(tmp) / "out",
                          project=Path(tmp), cache=Path(tmp) / "cache")
        history: list[dict[str, float]] = []
        lm = model()
        lm.train()
        started = time.perf_counter()
        args = TrainingArguments(**trainer_settings(p, lr, Path(tmp) / "ckpt", device, has_eval=False))
        collate = make_collator(0)
        if collate_seconds is not None:
            collate = _timed(collate, collate_seconds)
        trainer = Trainer(model=lm, args=args, train_dataset=data, data_collator=collate,
                          callbacks=[*callbacks(ctx, history, [], p), *extra_callbacks])
        if setup_seconds is not None:
            setup_seconds.append(time.perf_counter() - started)
        result, seconds = fit(ctx, trainer, Path(tmp) / "ckpt")
        ftlang_loop.optimizer = trainer.optimizer  # type: ignore[attr-defined]  # for the test
    tokens = int(result.metrics.get("ftlang_tokens") or steps * batch * len(data[0]["input_ids"]))
    return [h["loss"] for h in history], seconds, tokens


def _timed(fn: Any, into: list[float]) -> Any:
    def timed(*args: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args)
        into.append(time.perf_counter() - t0)
        return out
    return timed


class HandSteps:
    """The hand-written loop's state, one step per call: the model, torch's fused AdamW over
    the trainable parameters, transformers' linear schedule with 10% warmup, clipping to 1.0."""

    def __init__(self, data: list[dict[str, list[int]]], steps: int, batch: int, lr: float,
                 device: str = "cpu") -> None:
        import torch
        from transformers import get_scheduler

        self.torch, self.data, self.batch, self.device = torch, data, batch, device
        self.lm = model().to(device)
        self.lm.train()
        started = time.perf_counter()  # the set-up a run pays, as fit() times it: not the model's build
        self.trainable = [q for q in self.lm.parameters() if q.requires_grad]
        self.opt = torch.optim.AdamW(self.trainable, lr=lr, weight_decay=0.0, fused=True)
        self.sched = get_scheduler("linear", self.opt, num_warmup_steps=math.ceil(0.1 * steps),
                                   num_training_steps=steps)
        self.setup_seconds = time.perf_counter() - started
        self.done, self.losses, self.tokens = 0, [], 0

    def step(self) -> None:
        torch, lm, batch = self.torch, self.lm, self.batch
        chunk = self.data[(self.done * batch) % len(self.data):][:batch]
        ids = torch.tensor([ex["input_ids"] for ex in chunk], device=self.device)
        out = lm(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, use_cache=False)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)  # the LoRA weights: the only ones with grads
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(round(float(out.loss.detach()), 6))
        self.tokens += ids.numel()
        self.done += 1


def hand_loop(data: list[dict[str, list[int]]], steps: int, batch: int, lr: float,
              device: str = "cpu") -> tuple[list[float], float, int]:
    hand = HandSteps(data, steps, batch, lr, device)
    started = time.perf_counter()
    for _ in range(steps):
        hand.step()
    return hand.losses, time.perf_counter() - started, hand.tokens


@dataclass
class Lockstep:
    ft_steps: list[float]  # seconds of each turn of the Trainer's loop (the lockstep callback's own excluded)
    hand_steps: list[float]  # seconds of each hand-loop step
    ft_losses: list[float]  # as the step logs them (`logging_steps` windows)
    hand_losses: list[float]  # per step
    ft_total: float  # the Trainer's build and train(), less the hand steps run inside it
    hand_total: float  # the hand loop's set-up (optimizer, schedule; not the model) and all its steps


def lockstep(data: list[dict[str, list[int]]], steps: int, batch: int, lr: float,
             logging_steps: int = 1, collate_seconds: list[float] | None = None,
             hand_first: bool = False) -> Lockstep:
    """ftlang's Trainer with a last callback that runs one step of the hand loop per
    optimiser step: at the step's end, or with `hand_first` at its beginning (after the
    Trainer fetched the batch, before its forward pass): alternating the two evens out what
    going first or second in a pair does to a step's time. ftlang's step is timed from one
    return of that callback to its next call: a whole turn of the Trainer's loop (fetch,
    forward, backward, clip, optimizer, schedule, callbacks, logging). The turn that holds
    the set-up is not one of them; both totals keep their set-up."""
    from transformers import TrainerCallback

    hand = HandSteps(data, steps, batch, lr)
    ft_steps: list[float] = []
    hand_steps: list[float] = []
    mark: list[float] = []

    def one() -> None:
        now = time.perf_counter()
        if mark:
            ft_steps.append(now - mark[0])
        hand.step()
        done = time.perf_counter()
        hand_steps.append(done - now)
        mark[:] = [done]

    class Lock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if hand_first:
                one()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not hand_first:
                one()

    built: list[float] = []
    ft_losses, seconds, _ = ftlang_loop(data, steps, batch, lr, logging_steps=logging_steps,
                                        collate_seconds=collate_seconds, extra_callbacks=(Lock(),),
                                        setup_seconds=built)
    return Lockstep(ft_steps=ft_steps, hand_steps=hand_steps, ft_losses=ft_losses, hand_losses=hand.losses,
                    ft_total=built[0] + seconds - sum(hand_steps), hand_total=hand.setup_seconds + sum(hand_steps))


def windows(losses: list[float], every: int) -> list[float]:
    """Per-step losses as a Trainer logs them every `every` steps: step 1 alone (ftlang
    sets logging_first_step), then the mean of steps 2..every, then of each next window."""
    if every == 1:
        return list(losses)
    cuts = [0, 1, *range(every, len(losses), every), len(losses)]
    return [sum(losses[a:b]) / (b - a) for a, b in zip(cuts, cuts[1:]) if b > a]
