"""SAPO and CISPO: values and gradients by hand (derivations in the comments).

Notation: r = exp(logp - old_logp), s(x) = 1 / (1 + exp(-x)).
SAPO:  l = -A (4/tau) s(tau (r - 1)),  dl/dlogp = -A w r with w = 4 s (1 - s),
       tau = tau_pos if A > 0 else tau_neg.
CISPO: l = -A sg(r_hat) (logp - sg(logp) + 1), r_hat = clip(r, 1 - eps_low, 1 + eps_high): value -A r_hat,
       dl/dlogp = -A r_hat (never 0 where A != 0).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from vlmrl.algos import (
    CLIP_RANGES,
    PolicyLoss,
    cispo_loss,
    ppo_clip_loss,
    sapo_loss,
)

OLD = math.log(0.3)


def tokens(ratios: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp with grad, old_logp) such that exp(logp - old_logp) = ratios."""
    old = torch.full((len(ratios), len(ratios[0])), OLD)
    return (old + torch.tensor(ratios).log()).requires_grad_(True), old


def test_sapo_on_policy_is_the_plain_policy_gradient() -> None:
    # r = 1: s(0) = 0.5, so l = -A (4/tau) 0.5 = -2A/tau and w = 4 * 0.5 * 0.5 = 1.
    # A = (1, -1), tau_pos = 1, tau_neg = 2, token_mean over T = 2:
    #   values (-2, +1) -> loss = -0.5;  grads -A w r / T = (-0.5, +0.5)  (= PPO's -A/T on-policy)
    logp, old = tokens([[1.0, 1.0]])
    adv, mask = torch.tensor([[1.0, -1.0]]), torch.ones(1, 2)
    loss, m = sapo_loss(logp, old, adv, mask, clip_low=2.0, clip_high=1.0, agg="token_mean")
    loss.backward()
    assert loss.item() == pytest.approx(-0.5)
    assert_close(logp.grad, torch.tensor([[-0.5, 0.5]]))
    assert m["gate_mean"] == pytest.approx(1.0)
    ppo_lp, _ = tokens([[1.0, 1.0]])
    ppo_clip_loss(ppo_lp, old, adv, mask)[0].backward()
    assert_close(logp.grad, ppo_lp.grad)


def test_sapo_soft_gate_off_policy() -> None:
    # tau_pos = 1 (clip_high), tau_neg = 2 (clip_low); ratios (1.5, 0.5 | 1.5, 0.5), A = (1, 1 | -1, -1);
    # token_mean over T = 4.
    #   A=+1, r=1.5, tau=1: s(0.5)  = 0.622459; l = -4 * 0.622459   = -2.489837; w = 4 s(1-s) = 0.940015
    #                       grad = -1 * 0.940015 * 1.5 / 4 = -0.352506
    #   A=+1, r=0.5, tau=1: s(-0.5) = 0.377541; l = -4 * 0.377541   = -1.510163; w = 0.940015
    #                       grad = -0.940015 * 0.5 / 4 = -0.117502
    #   A=-1, r=1.5, tau=2: s(1)    = 0.731059; l = +2 * 0.731059   = +1.462117; w = 0.786448
    #                       grad = +0.786448 * 1.5 / 4 = +0.294918
    #   A=-1, r=0.5, tau=2: s(-1)   = 0.268941; l = +2 * 0.268941   = +0.537883; w = 0.786448
    #                       grad = +0.786448 * 0.5 / 4 = +0.098306
    # loss = (-2.489837 - 1.510163 + 1.462117 + 0.537883) / 4 = -2.0 / 4 = -0.5
    # PPO-clip at 0.2 would zero the gradient of r = 1.5 / A > 0 and r = 0.5 / A < 0; SAPO only damps it.
    logp, old = tokens([[1.5, 0.5], [1.5, 0.5]])
    adv, mask = torch.tensor([[1.0, 1.0], [-1.0, -1.0]]), torch.ones(2, 2)
    loss, m = sapo_loss(logp, old, adv, mask, clip_low=2.0, clip_high=1.0, agg="token_mean")
    loss.backward()
    assert loss.item() == pytest.approx(-0.5, abs=1e-6)
    assert_close(logp.grad, torch.tensor([[-0.352506, -0.117502], [0.294918, 0.098306]]), atol=1e-6, rtol=0)
    assert m["gate_mean"] == pytest.approx((0.940015 * 2 + 0.786448 * 2) / 4, abs=1e-6)


def test_sapo_larger_temperature_damps_more() -> None:
    # Same r = 1.5, A = -1: w(tau) = 4 s(0.5 tau)(1 - s(0.5 tau)): tau 1 -> 0.940015, tau 4 -> 4 s(2)(1-s(2))
    # = 4 * 0.880797 * 0.119203 = 0.419974; grad = w * 1.5 (one token).
    grads = []
    for tau in (1.0, 4.0):
        logp, old = tokens([[1.5]])
        sapo_loss(logp, old, -torch.ones(1, 1), torch.ones(1, 1), clip_low=tau, clip_high=1.0)[0].backward()
        grads.append(logp.grad.item())
    assert grads == pytest.approx([0.940015 * 1.5, 0.419974 * 1.5], abs=1e-6)


def test_cispo_keeps_the_gradient_of_clipped_tokens() -> None:
    # ratios (1.5, 0.5, 1.1), A = (1, 1, -1), eps_high = 0.2, no lower bound (eps_low = 1), T = 3:
    #   r_hat = (min(1.5, 1.2), 0.5, 1.1) = (1.2, 0.5, 1.1)
    #   value  -A r_hat / T: (-1.2 - 0.5 + 1.1) / 3 = -0.2
    #   grad   -A r_hat / T = (-0.4, -0.166667, +0.366667)
    # PPO-clip would give the first token (A > 0, r > 1.2) a zero gradient.
    logp, old = tokens([[1.5, 0.5, 1.1]])
    adv, mask = torch.tensor([[1.0, 1.0, -1.0]]), torch.ones(1, 3)
    loss, m = cispo_loss(logp, old, adv, mask, clip_low=1.0, clip_high=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(-0.2)
    assert_close(logp.grad, torch.tensor([[-0.4, -0.5 / 3, 1.1 / 3]]))
    assert (m["clipfrac_high"], m["clipfrac_low"]) == pytest.approx((1 / 3, 0.0))
    ppo_lp, _ = tokens([[1.5, 0.5, 1.1]])
    ppo_clip_loss(ppo_lp, old, adv, mask)[0].backward()
    assert ppo_lp.grad[0, 0].item() == 0.0


def test_cispo_lower_bound_and_gradient_is_reinforce_weighted() -> None:
    # eps_low = 0.2: r = 0.5 -> r_hat = 0.8 (whatever the sign of A); A = -2, one token:
    #   value -A r_hat = 1.6; grad = 1.6. The gradient is sg(r_hat) A grad log pi: its size does not
    #   depend on where logp sits (REINFORCE), only on the clipped weight.
    logp, old = tokens([[0.5]])
    loss, m = cispo_loss(logp, old, torch.full((1, 1), -2.0), torch.ones(1, 1), clip_low=0.2, clip_high=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(1.6)
    assert logp.grad.item() == pytest.approx(1.6)
    assert m["clipfrac_low"] == 1.0


def test_cispo_on_policy_matches_ppo() -> None:
    # r = 1: r_hat = 1, so value -A and gradient -A/T: identical to PPO-clip, for any aggregation.
    gen = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 4, generator=gen)
    adv = torch.randn(3, 1, generator=gen).expand(3, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    a, b = old.clone().requires_grad_(True), old.clone().requires_grad_(True)
    la, _ = cispo_loss(a, old, adv, mask, agg="seq_mean_token_mean")
    lb, _ = ppo_clip_loss(b, old, adv, mask, agg="seq_mean_token_mean")
    la.backward()
    lb.backward()
    assert_close(la, lb)
    assert_close(a.grad, b.grad)


def test_clip_ranges_and_errors() -> None:
    # SAPO's slots carry temperatures (> 0, paper 1.05 / 1.0); CISPO's clip_low may reach 1 (no lower bound).
    sapo, cispo = CLIP_RANGES[PolicyLoss.SAPO], CLIP_RANGES[PolicyLoss.CISPO]
    assert (sapo.clip_low, sapo.clip_high) == (1.05, 1.0)
    assert sapo.problems(1.05, 1.0, None) == [] and cispo.problems(1.0, 0.28, None) == []
    assert sapo.problems(0.0, 1.0, None) == ["clip_low and clip_high must be > 0, got 0 and 1"]
    assert cispo.problems(1.0, 0.28, 3.0) == ["dual_clip_c applies to the dual_clip loss only"]
    logp, old = tokens([[1.0]])
    with pytest.raises(ValueError, match="temperatures > 0"):
        sapo_loss(logp, old, torch.ones(1, 1), torch.ones(1, 1), clip_low=0.0)
