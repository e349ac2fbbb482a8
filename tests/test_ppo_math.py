"""PPO's arithmetic (stdlib/ppo_math.py) against values worked out by hand."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ftlang.stdlib import ppo_math  # noqa: E402


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_gae_by_hand_and_padding_is_not_bootstrapped() -> None:
    # gamma 0.9, lam 0.8: deltas 0.9*0.2-0.5 = -0.32, 0.9*0.4-0.2 = 0.16, 1-0.4 = 0.6;
    # A2 = 0.6, A1 = 0.16 + 0.72*0.6 = 0.592, A0 = -0.32 + 0.72*0.592 = 0.10624.
    # Row 2 ends after one token: its padded values (9) must not leak into its advantage.
    rewards = _t([[0, 0, 1], [2, 0, 0]])
    values = _t([[0.5, 0.2, 0.4], [0.5, 9, 9]])
    mask = _t([[1, 1, 1], [1, 0, 0]])
    adv, ret = ppo_math.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    assert torch.allclose(adv, _t([[0.10624, 0.592, 0.6], [1.5, 0, 0]]))
    assert torch.allclose(ret, _t([[0.60624, 0.792, 1.0], [2.0, 0, 0]]))
    # lam = 1, gamma = 1: the advantage is the return-to-go minus the value.
    adv, _ = ppo_math.gae(rewards[:1], values[:1], mask[:1], gamma=1.0, lam=1.0)
    assert torch.allclose(adv, _t([[0.5, 0.8, 0.6]]))


def test_token_rewards_put_the_score_on_the_last_token_and_pay_kl_on_each() -> None:
    rewards, kl = ppo_math.token_rewards(_t([1.0]), _t([[-1, -2, -3]]), _t([[-1.5, -2, -2.5]]),
                                         _t([[1, 1, 0]]), kl_coef=0.1)
    assert torch.allclose(kl, _t([[0.5, 0, 0]]))
    assert torch.allclose(rewards, _t([[-0.05, 1.0, 0]]))


@pytest.mark.parametrize("sign,loss,frac", [(1.0, -0.85, 0.5), (-1.0, 1.15, 0.5)])
def test_clipped_policy_loss_by_hand(sign: float, loss: float, frac: float) -> None:
    # ratios 1.5 and 0.5, clip 0.2: with A = +1 the surrogate keeps min(r, clip(r)) = 1.2, 0.5;
    # with A = -1 it keeps max = 1.5, 0.8. One of the two tokens is clipped each time.
    logp = torch.log(_t([[1.5, 0.5]]))
    out = ppo_math.policy_loss(logp, _t([[0, 0]]), _t([[sign, sign]]), _t([[1, 1]]), clip_range=0.2)
    assert float(out.loss) == pytest.approx(loss)
    assert float(out.clip_fraction) == pytest.approx(frac)
    # Padding does not count: a masked third token with a huge ratio changes nothing.
    logp3 = torch.log(_t([[1.5, 0.5, 50.0]]))
    out3 = ppo_math.policy_loss(logp3, _t([[0, 0, 0]]), _t([[sign, sign, sign]]), _t([[1, 1, 0]]), 0.2)
    assert float(out3.loss) == pytest.approx(loss)


def test_clipped_value_loss_by_hand() -> None:
    # V = 1.0, 0.0 from old 0.5, 0.5 with clip 0.2: V_clip = 0.7, 0.3; returns 2, 0:
    # errors (1.0, 0.0) plain, (1.69, 0.09) clipped; 0.5 * mean(max) = 0.5 * 0.89.
    loss, frac = ppo_math.value_loss(_t([[1.0, 0.0]]), _t([[0.5, 0.5]]), _t([[2.0, 0.0]]), _t([[1, 1]]), 0.2)
    assert float(loss) == pytest.approx(0.445)
    assert float(frac) == pytest.approx(1.0)
    # Inside the clip range the clipped and plain values agree: the plain squared error.
    loss, frac = ppo_math.value_loss(_t([[0.6]]), _t([[0.5]]), _t([[1.6]]), _t([[1]]), 0.2)
    assert float(loss) == pytest.approx(0.5) and float(frac) == 0.0


def test_whitening_uses_only_the_masked_tokens() -> None:
    out = ppo_math.masked_whiten(_t([[1, 2, 3, 100]]), _t([[1, 1, 1, 0]]))
    assert torch.allclose(out, _t([[-1, 0, 1, 0]]), atol=1e-6)


def test_adaptive_kl_controller_moves_at_most_twenty_percent_per_horizon() -> None:
    ctl = ppo_math.KLController(0.1, target=1.0, horizon=100)
    ctl.update(3.0, rows=10)  # error clipped to +0.2: * (1 + 0.2 * 10 / 100)
    assert ctl.value == pytest.approx(0.102)
    ctl.update(0.9, rows=10)  # error -0.1: * (1 - 0.1 * 10 / 100)
    assert ctl.value == pytest.approx(0.102 * 0.99)
    fixed = ppo_math.KLController(0.1, target=None, horizon=100)
    fixed.update(50.0, rows=10)
    assert fixed.value == 0.1


def test_entropy_and_token_logprobs() -> None:
    logits = torch.zeros(1, 1, 4)
    assert float(ppo_math.entropy(logits)[0, 0]) == pytest.approx(torch.log(torch.tensor(4.0)).item())
    lp = ppo_math.token_logprobs(torch.log(_t([[[0.1, 0.2, 0.7]]])), torch.tensor([[2]]))
    assert float(lp[0, 0]) == pytest.approx(float(torch.log(torch.tensor(0.7))), abs=1e-6)
