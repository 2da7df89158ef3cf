"""KL estimators: values by hand, signs, clamps, expectations, and the in-reward helper."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from vlmrl.algos import KL_ESTIMATORS, KLEstimator, kl_in_reward, kl_penalty

LOG2 = math.log(2.0)


def test_registry_covers_every_name() -> None:
    assert set(KL_ESTIMATORS) == set(KLEstimator)


def test_values_by_hand() -> None:
    # pi = 0.5, ref = 0.25: log r = log(ref / pi) = -log 2.
    # k1 = log 2 = 0.693147; k2 = 0.5 (log 2)^2 = 0.240227; k3 = r - 1 - log r = 0.5 - 1 + log 2 = 0.193147.
    logp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(LOG2)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * LOG2**2)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(LOG2 - 0.5)
    # Reversed (pi = 0.25, ref = 0.5): k1 = -log 2 < 0, while k3 = 2 - 1 - log 2 = 0.306853 >= 0.
    assert kl_penalty(ref, logp, "k1").item() == pytest.approx(-LOG2)
    assert kl_penalty(ref, logp, "k3").item() == pytest.approx(1.0 - LOG2)


@pytest.mark.parametrize("kind", list(KLEstimator))
def test_zero_when_equal(kind: KLEstimator) -> None:
    x = torch.randn(3, 5)
    assert_close(kl_penalty(x, x, kind), torch.zeros(3, 5))


def test_k2_k3_nonnegative_and_k3_clamped() -> None:
    gen = torch.Generator().manual_seed(0)
    logp, ref = 5 * torch.randn(64, 32, generator=gen), 5 * torch.randn(64, 32, generator=gen)
    assert (kl_penalty(logp, ref, "k2") >= 0).all()
    k3 = kl_penalty(logp, ref, "k3")
    assert (k3 >= 0).all() and (k3 <= 10).all()
    # ref far above pi: exp(30) would dominate; log r is clamped to 20 and the output to 10.
    assert kl_penalty(torch.zeros(1, 1), torch.full((1, 1), 30.0), "k3").item() == 10.0
    assert torch.isfinite(kl_penalty(torch.zeros(1, 1), torch.full((1, 1), 1e4), "k3")).all()


def test_k1_and_k3_are_unbiased_in_expectation() -> None:
    # pi = (0.5, 0.5), ref = (0.25, 0.75): KL(pi || ref) = 0.5 log 2 + 0.5 log(2/3) = 0.143841.
    # E_pi[k1] = KL exactly; E_pi[k3] = sum ref - 1 + KL = KL.
    pi, ref = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.25, 0.75]])
    kl = 0.5 * LOG2 + 0.5 * math.log(2 / 3)
    for kind in ("k1", "k3"):
        assert (pi * kl_penalty(pi.log(), ref.log(), kind)).sum().item() == pytest.approx(kl)


def test_gradients_of_k2_and_k3_in_the_loss() -> None:
    # The docstring's warning, checked exactly on a 3-way categorical pi = softmax(theta):
    # E_{y~pi}[grad k2] = grad KL(pi || ref) (reverse), E_{y~pi}[grad k3] = grad KL(ref || pi) (forward).
    theta0, ref = torch.tensor([0.3, -1.0, 0.5]), torch.tensor([0.2, 0.5, 0.3])

    def expected_grad(kind: str) -> torch.Tensor:
        theta = theta0.clone().requires_grad_(True)
        logp = theta.log_softmax(-1)
        (logp.exp().detach() * kl_penalty(logp, ref.log(), kind)).sum().backward()
        return theta.grad

    def exact_grad(reverse: bool) -> torch.Tensor:
        theta = theta0.clone().requires_grad_(True)
        logp = theta.log_softmax(-1)
        kl = (logp.exp() * (logp - ref.log())).sum() if reverse else (ref * (ref.log() - logp)).sum()
        kl.backward()
        return theta.grad

    assert_close(expected_grad("k2"), exact_grad(reverse=True))
    assert_close(expected_grad("k3"), exact_grad(reverse=False))


def test_kl_in_reward() -> None:
    # r = (1, 0); masked KL sums: 0.1 + 0.2 = 0.3 (the 9 is padding) and 0.3; coef 0.5
    # -> (1 - 0.15, 0 - 0.15) = (0.85, -0.15).
    kl = torch.tensor([[0.1, 0.2, 9.0], [0.3, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = kl_in_reward(torch.tensor([1.0, 0.0]), kl, mask, coef=0.5)
    assert_close(out, torch.tensor([0.85, -0.15]))
    assert not out.requires_grad


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown KL estimator 'low_var_kl'; allowed: k1, k2, k3"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "low_var_kl")
