"""Policy losses: values and gradients by hand (derivations in the comments).

Notation: r = exp(logp - old_logp); per-token loss l = max(-A r, -A clip(r, 1 - eps_lo, 1 + eps_hi));
d l / d logp = -A r where the unclipped term is active, 0 where the clipped one is.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from vlmrl.algos import (
    POLICY_LOSSES,
    PolicyLoss,
    compute_policy_loss,
    dual_clip_loss,
    global_counts,
    gspo_loss,
    ppo_clip_loss,
)

OLD = math.log(0.3)  # any old log-prob; only logp - old_logp matters


def tokens(ratios: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp with grad, old_logp) such that exp(logp - old_logp) = ratios."""
    old = torch.full((len(ratios), len(ratios[0])), OLD)
    logp = (old + torch.tensor(ratios).log()).requires_grad_(True)
    return logp, old


def row(*xs: float) -> torch.Tensor:
    return torch.tensor([xs])


def test_registry_covers_every_name() -> None:
    assert set(POLICY_LOSSES) == set(PolicyLoss)


def test_ratio_one_is_minus_mean_advantage() -> None:
    # Ragged: row 0 has 2 tokens with A = 2, row 1 one token with A = -1 (T = 3).
    # loss = -(2 + 2 - 1) / 3 = -1; grad = -A r / T = (-2/3, -2/3, 0 | 1/3, 0, 0).
    logp, old = tokens([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([[2.0, 2.0, 2.0], [-1.0, -1.0, -1.0]])
    loss, m = ppo_clip_loss(logp, old, adv, mask)
    loss.backward()
    assert loss.item() == pytest.approx(-1.0)
    assert_close(logp.grad, torch.tensor([[-2 / 3, -2 / 3, 0.0], [1 / 3, 0.0, 0.0]]))
    assert m["approx_kl"] == pytest.approx(0.0, abs=1e-7)
    assert (m["ratio_mean"], m["ratio_max"], m["clipfrac_low"], m["clipfrac_high"]) == pytest.approx(
        (1.0, 1.0, 0.0, 0.0)
    )


def test_positive_advantage_clips_above_only() -> None:
    # A = 1, ratios (1.5, 0.5, 1.1, 0.9), eps = 0.2, T = 4:
    #   1.5 -> max(-1.5, -1.2) = -1.2 (clipped, grad 0)
    #   0.5 -> max(-0.5, -0.8) = -0.5 (unclipped: the objective min keeps the lower ratio), grad -0.5/4
    #   1.1 -> -1.1, grad -1.1/4;  0.9 -> -0.9, grad -0.9/4
    # loss = (-1.2 - 0.5 - 1.1 - 0.9) / 4 = -0.925
    logp, old = tokens([[1.5, 0.5, 1.1, 0.9]])
    loss, m = ppo_clip_loss(logp, old, torch.ones(1, 4), torch.ones(1, 4))
    loss.backward()
    assert loss.item() == pytest.approx(-0.925)
    assert_close(logp.grad, row(0.0, -0.125, -0.275, -0.225))
    assert (m["clipfrac_high"], m["clipfrac_low"]) == (0.25, 0.0)
    # ratio_mean = 4.0 / 4; approx_kl = mean(r - 1 - log r)
    #   = (0.094535 + 0.193147 + 0.004690 + 0.005361) / 4 = 0.297733 / 4 = 0.074433
    assert (m["ratio_mean"], m["ratio_max"]) == pytest.approx((1.0, 1.5))
    assert m["approx_kl"] == pytest.approx(0.074433, abs=1e-5)


def test_negative_advantage_clips_below_only() -> None:
    # A = -1, same ratios:
    #   1.5 -> max(1.5, 1.2) = 1.5 (unclipped), grad 1.5/4
    #   0.5 -> max(0.5, 0.8) = 0.8 (clipped, grad 0)
    #   1.1 -> 1.1, grad 1.1/4;  0.9 -> 0.9, grad 0.9/4
    # loss = (1.5 + 0.8 + 1.1 + 0.9) / 4 = 1.075
    logp, old = tokens([[1.5, 0.5, 1.1, 0.9]])
    loss, m = ppo_clip_loss(logp, old, -torch.ones(1, 4), torch.ones(1, 4))
    loss.backward()
    assert loss.item() == pytest.approx(1.075)
    assert_close(logp.grad, row(0.375, 0.0, 0.275, 0.225))
    assert (m["clipfrac_low"], m["clipfrac_high"]) == (0.25, 0.0)


def test_clip_higher_is_asymmetric() -> None:
    # A = (1, 1, -1), ratios (1.25, 1.25, 0.75), T = 3.
    # Symmetric 0.2/0.2: 1.25 > 1.2 clipped -> -1.2 each, grad 0; 0.75 < 0.8 clipped -> 0.8, grad 0.
    #   loss = (-1.2 - 1.2 + 0.8) / 3 = -1.6 / 3
    # DAPO 0.2/0.28: 1.25 < 1.28 -> -1.25, grad -1.25/3; the low side is unchanged.
    #   loss = (-1.25 - 1.25 + 0.8) / 3 = -1.7 / 3
    adv, mask = row(1.0, 1.0, -1.0), torch.ones(1, 3)
    logp, old = tokens([[1.25, 1.25, 0.75]])
    loss, _ = ppo_clip_loss(logp, old, adv, mask)
    loss.backward()
    assert loss.item() == pytest.approx(-1.6 / 3)
    assert_close(logp.grad, torch.zeros(1, 3))

    logp, old = tokens([[1.25, 1.25, 0.75]])
    loss, m = ppo_clip_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    loss.backward()
    assert loss.item() == pytest.approx(-1.7 / 3)
    assert_close(logp.grad, row(-1.25 / 3, -1.25 / 3, 0.0))
    assert (m["clipfrac_high"], m["clipfrac_low"]) == pytest.approx((0.0, 1 / 3))


def test_dual_clip_caps_negative_advantage_loss() -> None:
    # A = -1, ratios (4, 2, 0.5), c = 3, T = 3.
    # PPO-clip: 4 -> max(4, 1.2) = 4 (grad 4/3); 2 -> 2 (grad 2/3); 0.5 -> 0.8 (clipped, grad 0).
    # Dual-clip: 4 -> min(4, c |A| = 3) = 3 (grad 0); 2 -> min(2, 3) = 2; 0.5 -> 0.8.
    adv, mask = -torch.ones(1, 3), torch.ones(1, 3)
    logp, old = tokens([[4.0, 2.0, 0.5]])
    loss, _ = ppo_clip_loss(logp, old, adv, mask)
    loss.backward()
    assert loss.item() == pytest.approx(6.8 / 3)
    assert_close(logp.grad, row(4 / 3, 2 / 3, 0.0))

    logp, old = tokens([[4.0, 2.0, 0.5]])
    loss, m = dual_clip_loss(logp, old, adv, mask, dual_clip_c=3.0)
    loss.backward()
    assert loss.item() == pytest.approx(5.8 / 3)
    assert_close(logp.grad, row(0.0, 2 / 3, 0.0))
    assert m["clipfrac_dual"] == pytest.approx(1 / 3)


def test_dual_clip_leaves_positive_advantage_alone() -> None:
    logp, old = tokens([[4.0, 2.0, 0.5]])
    a, _ = ppo_clip_loss(logp, old, torch.ones(1, 3), torch.ones(1, 3))
    b, _ = dual_clip_loss(logp, old, torch.ones(1, 3), torch.ones(1, 3))
    assert a.item() == pytest.approx(b.item())


def test_gspo_ratio_is_exp_mean_log_ratio() -> None:
    # Token log-ratios (0.1, 0.3) + a padded token: s = exp((0.1 + 0.3) / 2) = exp(0.2) = 1.221403.
    # With a wide clip and A = 1, seq_mean_token_mean: loss = -(s + s) / 2 = -1.221403.
    old = torch.zeros(1, 3)
    logp = torch.tensor([[0.1, 0.3, 5.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    loss, m = gspo_loss(logp, old, torch.ones(1, 3), mask, clip_low=0.5, clip_high=10.0)
    assert loss.item() == pytest.approx(-math.exp(0.2))
    assert m["ratio_mean"] == pytest.approx(math.exp(0.2))
    # Paper clip ranges (3e-4 / 4e-4): s > 1 + 4e-4 with A > 0 is clipped: loss -1.0004, grad 0.
    loss, m = gspo_loss(logp, old, torch.ones(1, 3), mask)
    loss.backward()
    assert loss.item() == pytest.approx(-1.0004)
    assert_close(logp.grad, torch.zeros(1, 3))
    assert m["clipfrac_high"] == 1.0


def test_gspo_token_form_matches_sequence_objective() -> None:
    # Unclipped, sequence-level A: the stop-gradient token form has the value and gradient of
    # J = -(1/G) sum_i s_i A_i with s_i = exp(mean_t (logp - old_logp)) differentiated directly.
    gen = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 4, generator=gen)
    base = old + 0.1 * torch.randn(3, 4, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    adv_seq = torch.tensor([1.0, -0.5, 2.0])

    logp = base.clone().requires_grad_(True)
    loss, _ = gspo_loss(logp, old, adv_seq[:, None].expand(3, 4), mask, clip_low=0.99, clip_high=100.0)
    loss.backward()

    ref_logp = base.clone().requires_grad_(True)
    m = mask.float()
    s = (((ref_logp - old) * m).sum(-1) / m.sum(-1)).exp()  # [3]
    ref = -(s * adv_seq).mean()
    ref.backward()
    assert_close(loss, ref)
    assert_close(logp.grad, ref_logp.grad)


def test_gspo_at_ratio_one_has_ppo_gradient_with_seq_mean_token_mean() -> None:
    # On-policy both are -A_i / (|y_i| S) grad log pi: mask (2 tokens | 1 token), A = (2 | -1), S = 2
    # -> (-2/2/2, -0.5, 0 | 1/1/2, 0, 0) = (-0.5, -0.5, 0 | 0.5, 0, 0).
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([[2.0] * 3, [-1.0] * 3])
    logp_g, old = tokens([[1.0] * 3, [1.0] * 3])
    logp_p, _ = tokens([[1.0] * 3, [1.0] * 3])
    gspo_loss(logp_g, old, adv, mask)[0].backward()
    ppo_clip_loss(logp_p, old, adv, mask, agg="seq_mean_token_mean")[0].backward()
    expected = torch.tensor([[-0.5, -0.5, 0.0], [0.5, 0.0, 0.0]])
    assert_close(logp_g.grad, expected)
    assert_close(logp_p.grad, expected)


@pytest.mark.parametrize(
    ("name", "agg"),
    [
        ("ppo_clip", "token_mean"),
        ("gspo", "seq_mean_token_mean"),
        ("sapo", "seq_mean_token_mean"),
        ("cispo", "token_mean"),
    ],
)
def test_micro_batch_invariance(name: str, agg: str) -> None:
    # 1 x 4 rows vs micro-batches of 1 and 3 rows with global normalisers: summed losses and
    # gradients equal the full batch. Ratios near 1 so some tokens clip and some do not.
    gen = torch.Generator().manual_seed(1)
    old = -torch.rand(4, 5, generator=gen)
    base = old + 0.3 * torch.randn(4, 5, generator=gen)
    adv = torch.randn(4, 1, generator=gen).expand(4, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    kw = {"agg": agg, "clip_low": 0.1, "clip_high": 0.1}

    full_lp = base.clone().requires_grad_(True)
    full, _ = compute_policy_loss(name, full_lp, old, adv, mask, **kw)
    full.backward()

    tokens_, seqs = global_counts(mask)
    mb_lp = base.clone().requires_grad_(True)
    total = sum(
        compute_policy_loss(
            name, mb_lp[r], old[r], adv[r], mask[r], global_tokens=tokens_, global_seqs=seqs, **kw
        )[0]
        for r in (slice(0, 1), slice(1, 4))
    )
    total.backward()
    assert_close(total, full)
    assert_close(mb_lp.grad, full_lp.grad)


def test_old_logp_and_advantages_get_no_gradient() -> None:
    logp, _ = tokens([[1.1, 0.9]])
    old = torch.full((1, 2), OLD, requires_grad=True)
    adv = torch.ones(1, 2, requires_grad=True)
    for name in PolicyLoss:
        compute_policy_loss(name, logp, old, adv, torch.ones(1, 2))[0].backward()
    assert old.grad is None and adv.grad is None


def test_dispatch_and_errors() -> None:
    logp, old = tokens([[4.0, 2.0, 0.5]])
    args = (logp, old, -torch.ones(1, 3), torch.ones(1, 3))
    assert compute_policy_loss("dual_clip", *args)[0].item() == pytest.approx(dual_clip_loss(*args)[0].item())
    with pytest.raises(ValueError, match="unknown policy loss 'ppo'; allowed: ppo_clip, dual_clip, gspo"):
        compute_policy_loss("ppo", *args)
    with pytest.raises(ValueError, match="dual_clip_c must be > 1"):
        dual_clip_loss(*args, dual_clip_c=1.0)
    with pytest.raises(ValueError, match="clip_low"):
        ppo_clip_loss(*args, clip_low=1.0)


def test_loss_spec_carries_the_run_constants() -> None:
    # Ratios [4, 2, 0.5], A = -1, dual clip c = 1.5: PPO's terms max(r, clip(r, 0.8, 1.2)) are
    # 4, 2, 0.8 and the dual cap min(·, c) makes them 1.5, 1.5, 0.8. seq_mean_token_sum_norm with
    # C = 10: (1.5 + 1.5 + 0.8) / 10 = 0.38; token_mean would give 3.8 / 3.
    from vlmrl.algos import LossAgg, LossSpec, policy_loss

    logp, old = tokens([[4.0, 2.0, 0.5]])
    args = (logp, old, -torch.ones(1, 3), torch.ones(1, 3))
    spec = LossSpec("dual_clip", 0.2, 0.2, dual_clip_c=1.5, agg="seq_mean_token_sum_norm", norm_const=10.0)
    assert spec.name is PolicyLoss.DUAL_CLIP and spec.agg is LossAgg.SEQ_MEAN_TOKEN_SUM_NORM
    assert policy_loss(spec, *args)[0].item() == pytest.approx(0.38)
    token_mean = LossSpec("dual_clip", 0.2, 0.2, dual_clip_c=1.5)
    assert policy_loss(token_mean, *args, global_tokens=6)[0].item() == pytest.approx(3.8 / 6)  # global T
    with pytest.raises(ValueError, match="unknown policy loss 'ppo'; allowed: ppo_clip"):
        LossSpec("ppo", 0.2, 0.2)
    with pytest.raises(ValueError, match="unknown loss aggregation mode 'mean'"):
        LossSpec("ppo_clip", 0.2, 0.2, agg="mean")
