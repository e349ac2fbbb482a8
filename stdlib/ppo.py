"""PPO for language models: ftlang's own loop on transformers + peft + torch.

In:  a train block with method = ppo(...), `from` a causal LM (usually an SFT result),
     `data` with a prompt column (other columns reach py(...) rewards as keyword
     arguments), rewards: py("file.py", "fn") and/or rm(reward_model_block).
Out: a model artifact like any train step's (an adapter over `from`, or full weights) and,
     in the metadata, per logging step: mean reward, KL to the reference, policy loss,
     value loss, clip fraction and entropy (`reward`, `kl`, `policy_loss`, ...).

One PPO step (InstructGPT, Ouyang et al. 2022; the details of Huang et al., "The N+
implementation details of RLHF with PPO"):
1. rollout: `batch_size` prompts, one sampled completion each (temperature, top_k, top_p;
   max_new_tokens capped at the model's context);
2. score: the rewards add up per completion; each token pays kl_coef * (log p - log p_ref)
   to the frozen reference (`from`; with an adapter, the policy with its adapter disabled,
   so no second copy is loaded); kl_coef is fixed, or adapted towards kl_target;
3. GAE advantages (gamma, lam) from a scalar value head on the policy, whitened;
4. ppo_epochs passes over the batch in `mini_batches` mini-batches: the clipped policy
   loss (clip_range) + vf_coef * the clipped value loss (clip_range_value), one optimiser
   step per mini-batch.

The value head (a Linear(hidden, 1) on the policy's last hidden state, shared backbone)
is trained with the policy and dropped when the model is saved: the artifact is a plain
causal LM. Dropout is switched off in the policy, so that the first PPO pass sees the
same probabilities as the rollout (a ratio of exactly 1). The arithmetic is ppo_math.py.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlang.stdlib import devices, modelio, rl
from ftlang.stdlib.adapters import apply_adapter, load_base
from ftlang.stdlib.generate import stop_ids
from ftlang.stdlib.pyfunc import where_in
from ftlang.stdlib.spec import Call, StepContext, StepError
from ftlang.stdlib.trainer import reference_model, save_trained, trl_setup

# Names of the per-step numbers in the metadata (lists, one value per logging step).
LOGGED = ("reward", "kl", "policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "entropy",
          "kl_coef")


@dataclass
class Rollout:
    """One batch of sampled completions, left-padded prompts then right-padded responses."""

    rows: list[int]  # dataset row indices
    seq: Any  # [B, W + T] token ids
    attn: Any  # [B, W + T] attention mask
    pos: Any  # [B, W + T] position ids (from the mask: left padding must not shift positions)
    width: int  # W: the prompt part's width
    mask: Any  # [B, T] 1 on response tokens up to and including the stop token
    texts: list[str]  # decoded completions (stop token and specials removed)


def _scores(rewards: list[Any], calls: list[Call], batch: Rollout, ds: dict[str, list[Any]], data_node: str) -> Any:
    """The summed reward per completion, [B]. A Python reward that raises fails the step
    naming the function and the first row it fails on."""
    import torch

    prompts = [ds["prompt"][i] for i in batch.rows]
    extra = [c for c in ds if c != "prompt"]
    columns = {c: [ds[c][i] for i in batch.rows] for c in extra}
    total = torch.zeros(len(batch.rows), dtype=torch.float32)
    for fn, call in zip(rewards, calls):
        name = getattr(fn, "__name__", call.name)
        try:
            values = fn(prompts, batch.texts, **columns)
        except StepError:
            raise
        except Exception as e:
            row = _failing_row(fn, prompts, batch.texts, columns)
            at = batch.rows[row] if row is not None else None
            where = f" on row {at + 1} of {data_node} (prompt {ds[rl.PROMPT_COLUMN][at]!r:.80})" if at is not None else ""
            file = Path(call.args["file"]) if call.name == "py" else None
            raise StepError(f"reward {name} raised {type(e).__name__}: {e}{where}",
                            hint=where_in(e, file) if file is not None else None) from e
        got = torch.tensor([float(v) for v in values], dtype=torch.float32)
        bad = (~torch.isfinite(got)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise StepError(f"reward {name} returned {float(got[i])} on row {batch.rows[i] + 1} of {data_node} "
                            f"(prompt {ds[rl.PROMPT_COLUMN][batch.rows[i]]!r:.80})",
                            hint="a reward must be a finite number")
        total += got
    return total


def _failing_row(fn: Any, prompts: list[str], texts: list[str], columns: dict[str, list[Any]]) -> int | None:
    """The first row on which `fn` raises when called one row at a time."""
    for i in range(len(prompts)):
        try:
            fn(prompts[i:i + 1], texts[i:i + 1], **{k: v[i:i + 1] for k, v in columns.items()})
        except Exception:
            return i
    return None


def _rollout(lm: Any, tokenizer: Any, encoded: list[list[int]], rows: list[int], settings: dict[str, Any],
             stop: list[int], device: str) -> Rollout:
    import torch

    pad = tokenizer.pad_token_id
    prompts = [encoded[i] for i in rows]
    width = max(len(e) for e in prompts)
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in prompts], device=device)
    pmask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in prompts], device=device)
    lm.eval()
    with torch.no_grad():
        out = lm.generate(input_ids=ids, attention_mask=pmask, eos_token_id=stop, pad_token_id=pad,
                          do_sample=True, **settings)
    resp = out[:, width:]
    is_stop = torch.zeros_like(resp, dtype=torch.bool)
    for s in stop:
        is_stop |= resp == s
    # 1 up to and including the first stop token: the stop is the policy's choice too.
    before = torch.cumsum(is_stop.int(), dim=1) - is_stop.int()
    mask = (before == 0).long()
    resp = torch.where(mask.bool(), resp, torch.full_like(resp, pad))
    texts = []
    for row, m in zip(resp.cpu().tolist(), mask.cpu().tolist()):
        kept = [t for t, k in zip(row, m) if k and t not in stop]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    seq = torch.cat([ids, resp], dim=1)
    attn = torch.cat([pmask, mask], dim=1)
    pos = (torch.cumsum(attn, dim=1) - 1).clamp(min=0)
    return Rollout(rows, seq, attn, pos, width, mask.float(), texts)


def _forward(model: Any, b: Rollout, sel: Any, temperature: float, head: Any = None,
             autocast: Any = None) -> tuple[Any, Any, Any]:
    """log p of each response token, the value before it (with a head) and the logits."""
    import contextlib

    from ftlang.stdlib import ppo_math

    with autocast() if autocast is not None else contextlib.nullcontext():
        out = model(input_ids=b.seq[sel], attention_mask=b.attn[sel], position_ids=b.pos[sel],
                    output_hidden_states=head is not None)
    # Position W - 1 + t predicts response token t; sampling divided the logits by the temperature.
    logits = out.logits[:, b.width - 1:-1].float() / temperature
    logprobs = ppo_math.token_logprobs(logits, b.seq[sel][:, b.width:])
    values = None
    if head is not None:
        values = head(out.hidden_states[-1][:, b.width - 1:-1].float()).squeeze(-1)
    return logprobs, values, logits


def _no_dropout(lm: Any) -> None:
    import torch

    for m in lm.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def _optimizer(params: list[Any], p: dict[str, Any], lr: float, device: str) -> Any:
    import torch

    name = devices.optimizer(p["optimizer"], device)  # also refuses adamw_8bit off CUDA
    wd = float(p["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name == "adamw_bnb_8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd, fused=name == "adamw_torch_fused")


def _autocast(p: dict[str, Any], device: str) -> tuple[Any, Any]:
    """(an autocast context factory or None, a GradScaler or None) for `precision`."""
    import torch

    flags = devices.precision_flags(p["precision"], device)
    if flags["bf16"]:
        return (lambda: torch.autocast(device, dtype=torch.bfloat16)), None
    if flags["fp16"]:
        return (lambda: torch.autocast(device, dtype=torch.float16)), torch.amp.GradScaler(device)
    return None, None


def _order(n: int, total_rows: int, shuffle: bool, seed: int) -> list[int]:
    """Row indices for the whole run: epoch after epoch, each a seeded permutation when shuffling."""
    import random

    out: list[int] = []
    epoch = 0
    while len(out) < total_rows:
        rows = list(range(n))
        if shuffle:
            random.Random(seed * 1_000_003 + epoch).shuffle(rows)
        out += rows
        epoch += 1
    return out[:total_rows]


def run(ctx: StepContext) -> dict[str, Any]:
    import torch
    from ftlang.stdlib import ppo_math
    from transformers import get_scheduler, set_seed

    p = ctx.params
    s = trl_setup(ctx)
    a = s.method.args
    ds = rl.dataset(p["data"], s.template).to_dict()  # plain lists: rows are read one by one
    calls = list(a["reward"] or [])
    rewards = rl.reward_functions(calls, s.device)
    lm = load_base(s.src, s.adapter, s.device, ctx.cache, gradient_checkpointing=bool(p["gradient_checkpointing"]))
    new_tokens = rl.generation_budget(ctx, lm, s.tokenizer, ds["prompt"], int(a["max_new_tokens"]))
    set_seed(s.seed)
    lm = apply_adapter(lm, s.adapter, tokenizer_dir=modelio.tokenizer_folder(s.src))
    quantised = s.adapter.name == "lora" and s.adapter.args["quant"] != "none"
    if not quantised:
        lm.to(s.device)
    if p["gradient_checkpointing"] and hasattr(lm, "enable_input_require_grads"):
        lm.enable_input_require_grads()  # a frozen embedding would cut the checkpointed graph
    _no_dropout(lm)
    ref = reference_model(s, ctx)  # None with an adapter: the policy with its adapter disabled
    if ref is not None:
        ref.to(s.device)
    hidden = int(lm.config.get_text_config().hidden_size)
    head = torch.nn.Linear(hidden, 1).to(s.device)
    torch.nn.init.zeros_(head.weight)  # V = 0 at the start: the first advantages are the rewards
    torch.nn.init.zeros_(head.bias)

    n = len(ds["prompt"])
    batch = int(p["batch_size"])
    steps = int(p["max_steps"]) if int(p["max_steps"]) > 0 else max(1, math.ceil(float(p["epochs"]) * n / batch))
    order = _order(n, steps * batch, bool(p["shuffle"]), s.seed)
    ppo_epochs, mini = int(a["ppo_epochs"]), min(int(a["mini_batches"]), batch)
    updates = steps * ppo_epochs * mini
    params = [q for q in lm.parameters() if q.requires_grad] + list(head.parameters())
    opt = _optimizer(params, p, s.lr, s.device)
    warmup = float(p["warmup"])
    scheduler = p["scheduler"]
    if scheduler == "constant" and warmup > 0:
        scheduler = "constant_with_warmup"
    sched = get_scheduler(scheduler, opt, num_warmup_steps=int(warmup * updates) if warmup < 1 else int(warmup),
                          num_training_steps=updates)
    autocast, scaler = _autocast(p, s.device)
    kl_ctl = ppo_math.KLController(float(a["kl_coef"]), a["kl_target"], int(a["kl_horizon"]))
    settings = {"max_new_tokens": new_tokens, "temperature": float(a["temperature"]), "top_k": int(a["top_k"]),
                "top_p": float(a["top_p"])}
    temperature = float(a["temperature"])
    encoded = [list(e) for e in s.tokenizer(ds["prompt"], add_special_tokens=True)["input_ids"]]
    stop = stop_ids(s.tokenizer, s.template)
    gamma, lam = float(a["gamma"]), float(a["lam"])
    clip, clip_v, vf = float(a["clip_range"]), float(a["clip_range_value"]), float(a["vf_coef"])
    every = int(p["logging_steps"])
    max_norm = float(p["max_grad_norm"])
    trainable = modelio.count_params(lm, trainable=True)
    ctx.log(f"ppo with {s.adapter.name}: {n} prompts, {steps} steps of {batch} rollouts, {trainable:,} "
            f"trainable parameters, lr {s.lr:g}, rewards {', '.join(getattr(r, '__name__', 'rm') for r in rewards)}")
    gen = torch.Generator().manual_seed(s.seed)
    log: dict[str, list[float]] = {k: [] for k in LOGGED}
    log_steps: list[int] = []
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(1, steps + 1):
        b = _rollout(lm, s.tokenizer, encoded, order[(step - 1) * batch:step * batch], settings, stop, s.device)
        scores = _scores(rewards, calls, b, ds, p["data"].node).to(s.device)
        every_row = torch.arange(len(b.rows), device=s.device)
        with torch.no_grad():
            old_lp, old_v, _ = _forward(lm, b, every_row, temperature, head, autocast)
            if ref is None:
                with lm.disable_adapter():
                    ref_lp, _, _ = _forward(lm, b, every_row, temperature, None, autocast)
            else:
                ref_lp, _, _ = _forward(ref, b, every_row, temperature, None, autocast)
            tok_rewards, kl = ppo_math.token_rewards(scores, old_lp, ref_lp, b.mask, kl_ctl.value)
            adv, returns = ppo_math.gae(tok_rewards, old_v, b.mask, gamma, lam)
            if a["whiten"]:
                adv = ppo_math.masked_whiten(adv, b.mask)
        lm.train()
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "clip_fraction",
                                                        "value_clip_fraction", "entropy", "loss")}
        for _ in range(ppo_epochs):
            perm = torch.randperm(len(b.rows), generator=gen).to(s.device)
            for sel in torch.chunk(perm, mini):
                m = b.mask[sel]
                lp, v, logits = _forward(lm, b, sel, temperature, head, autocast)
                pl = ppo_math.policy_loss(lp, old_lp[sel], adv[sel], m, clip)
                vl, vclip = ppo_math.value_loss(v, old_v[sel], returns[sel], m, clip_v)
                loss = pl.loss + vf * vl
                if not bool(torch.isfinite(loss)):
                    raise StepError(f"the ppo loss became {float(loss)} at step {step}; nothing was saved",
                                    hint=f"training diverged: lower lr (it is {s.lr:g}) or clip_range, or add warmup")
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, max_norm)
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, max_norm)
                    opt.step()
                sched.step()
                with torch.no_grad():
                    ent = ppo_math.masked_mean(ppo_math.entropy(logits * temperature), m)
                for k, val in (("policy_loss", pl.loss), ("value_loss", vl), ("clip_fraction", pl.clip_fraction),
                               ("value_clip_fraction", vclip), ("entropy", ent), ("loss", loss)):
                    stats[k].append(float(val.detach()))
        row_kl = float(kl.sum(dim=1).mean())
        coef = kl_ctl.value
        kl_ctl.update(row_kl, len(b.rows))
        mean = {k: sum(v) / len(v) for k, v in stats.items()}
        losses.append(mean["loss"])
        reward = float(scores.mean())
        ctx.progress(step, steps, f"reward {reward:.3f}")
        if step == 1 or step % every == 0 or step == steps:
            log_steps.append(step)
            for k, val in (("reward", reward), ("kl", row_kl), ("kl_coef", coef)):
                log[k].append(round(val, 6))
            for k in ("policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "entropy"):
                log[k].append(round(mean[k], 6))
            ctx.log(f"step {step}: reward {reward:.3f}, kl {row_kl:.4f}, policy loss {mean['policy_loss']:.4f}, "
                    f"value loss {mean['value_loss']:.4f}, clip {mean['clip_fraction']:.3f}, "
                    f"entropy {mean['entropy']:.3f}")
    seconds = time.perf_counter() - started
    save_trained(lm, s.tokenizer, ctx, s.src, s.adapter, s.template)
    meta: dict[str, Any] = {
        "train_loss": [round(losses[k - 1], 6) for k in log_steps], "loss_steps": log_steps,
        "final_loss": round(losses[-1], 6), "mean_loss": round(sum(losses) / len(losses), 6), "steps": steps,
        **log, "reward_steps": log_steps, "final_reward": log["reward"][-1], "prompts": n,
        "trainable_params": trainable, "lr": s.lr, "device": s.device, "max_new_tokens": new_tokens,
        "optimizer_steps": updates, "value_function": "head", "seconds": round(seconds, 3)}
    ctx.log(f"ppo: {steps} steps in {seconds:.1f} s; mean reward {log['reward'][0]:.3f} -> {log['reward'][-1]:.3f}, "
            f"kl {log['kl'][-1]:.4f}")
    return meta
