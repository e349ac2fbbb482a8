"""The arithmetic of PPO for language models, in plain torch (no model, no trainer).

In:  per-token tensors of one rollout batch, shape [rows, response tokens], with a 0/1
     `mask` that is 1 on the response tokens (the stop token included) and 0 after it.
Out: the KL-shaped per-token rewards, GAE advantages and returns, the clipped policy and
     value losses with their clip fractions, token entropies, and the adaptive KL
     controller of Ziegler et al. (2019). ppo.py builds the training loop from these; the
     unit tests check each against values worked out by hand.

Conventions follow the InstructGPT / trl-PPOv1 recipe: the scalar score of a completion
is added at its last response token, every token pays -kl_coef * (log p - log p_ref), and
losses are means over the response tokens of the batch (padding never counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the positions where mask is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """`x` scaled to unit variance over the masked positions (and centred when shift_mean).

    The variance is the unbiased one, as in trl's PPO; a batch with one token is only
    centred (its variance is undefined)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    centred = x - mean
    if n < 2:
        return centred * mask if shift_mean else x
    var = ((centred ** 2) * mask).sum() / (n - 1)
    out = centred * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                  mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards and per-token KL estimates.

    kl_t = log p(t) - log p_ref(t) (the sampled-token estimate of KL(p || p_ref)); every
    response token gets -kl_coef * kl_t, and the completion's score is added at its last
    response token."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rows = torch.arange(scores.shape[0], device=scores.device)
    rewards[rows, last] += scores * (mask.sum(dim=1) > 0).to(scores.dtype)
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over each response.

    delta_t = r_t + gamma * V_{t+1} - V_t, with V after the last response token = 0;
    A_t = delta_t + gamma * lam * A_{t+1}. Returns (advantages, returns = A + V), both 0
    on padding."""
    steps = rewards.shape[1]
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        # mask[t + 1] is 0 past a response's end: nothing is bootstrapped from padding.
        after = mask[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        next_value = values[:, t + 1] * after if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * after * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


@dataclass(frozen=True)
class PolicyLoss:
    loss: torch.Tensor
    clip_fraction: torch.Tensor  # share of tokens whose ratio the clip cut
    approx_kl: torch.Tensor  # 0.5 * mean((log ratio)^2): how far this update moved


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_range: float) -> PolicyLoss:
    """The clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1 - e, 1 + e)),
    r = exp(log p - log p_old)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return PolicyLoss(loss, masked_mean((clipped > unclipped).float(), mask),
                      masked_mean(0.5 * log_ratio ** 2, mask))


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped value loss 0.5 * mean(max((V - R)^2, (V_clip - R)^2)), where V_clip keeps
    V within clip_range_value of the rollout's value; and the share of tokens clipped."""
    clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    plain_err = (values - returns) ** 2
    clip_err = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(plain_err, clip_err), mask)
    return loss, masked_mean((clip_err > plain_err).float(), mask)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's next-token distribution, [rows, tokens]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) at each position, [rows, tokens]."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class KLController:
    """kl_coef, fixed, or adapted towards a target KL (Ziegler et al. 2019, section 2.2):
    after each batch, kl_coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * rows / horizon."""

    def __init__(self, kl_coef: float, target: float | None, horizon: int) -> None:
        self.value = float(kl_coef)
        self.target = target
        self.horizon = horizon

    def update(self, kl: float, rows: int) -> None:
        if self.target is None or self.target <= 0:
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * rows / self.horizon

    def state(self) -> dict[str, Any]:
        return {"kl_coef": self.value, "target": self.target, "horizon": self.horizon}
