"""Per-token estimators of KL(pi_theta || pi_ref) from sampled tokens, and where to put them.

With ``y ~ pi_theta`` and ``r = pi_ref(y) / pi_theta(y)`` (Schulman 2020, "Approximating KL
Divergence", http://joschu.net/blog/kl-approx.html):

  ``k1 = -log r = logp - ref_logp``            unbiased, high variance, can be negative
  ``k2 = 0.5 (log r)^2``                       biased, low variance, >= 0
  ``k3 = (r - 1) - log r``                     unbiased, low variance, >= 0 ("low_var_kl")

``k3`` clamps ``log r`` to ``±20`` before ``exp`` and its output to ``<= 10``, as EasyR1's
``low_var_kl`` does, so one far-off token cannot dominate the loss.

Placement (the trainer decides; both are common):
  * **in the loss** (GRPO, Shao et al. 2024): ``loss = pg_loss + beta * agg(kl_penalty(logp,
    ref_logp, "k3"), mask)``. Mind the gradient: on-policy, ``grad E[k3]`` is the gradient of the
    *forward* KL(ref || pi), while ``grad E[k2]`` is exactly that of the reverse KL(pi || ref).
  * **in the reward** (PPO-RLHF, REINFORCE++): ``r_i <- r_i - beta * sum_t k1_t`` before the
    advantage, with the KL detached; see :func:`kl_in_reward`.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from torch import Tensor

from vlmrl.algos._registry import resolve

K3_LOG_RATIO_CLAMP = 20.0
K3_MAX = 10.0


class KLEstimator(StrEnum):
    """Names of the per-token KL estimators (the keys of :data:`KL_ESTIMATORS`)."""

    K1 = "k1"
    K2 = "k2"
    K3 = "k3"


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``k1 = logp - ref_logp``."""
    return logp - ref_logp  # [N, L]


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``k2 = 0.5 (logp - ref_logp)^2``."""
    return 0.5 * (logp - ref_logp).square()  # [N, L]


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``k3 = exp(d) - d - 1`` with ``d = clamp(ref_logp - logp, ±20)``, output clamped to ``<= 10``."""
    d = (ref_logp - logp).clamp(-K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)  # [N, L]
    return (d.exp() - d - 1.0).clamp(min=0.0, max=K3_MAX)  # [N, L]; min=0 only removes rounding


KL_ESTIMATORS: dict[KLEstimator, Callable[[Tensor, Tensor], Tensor]] = {
    KLEstimator.K1: kl_k1,
    KLEstimator.K2: kl_k2,
    KLEstimator.K3: kl_k3,
}


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str | KLEstimator = KLEstimator.K3) -> Tensor:
    """Per-token KL estimate ``[N, L]`` of the named kind (see the module docstring).

    Padded positions are not masked here; aggregate with the response mask
    (:func:`vlmrl.algos.aggregate.agg_loss`).
    """
    return KL_ESTIMATORS[resolve(KLEstimator, kind, "KL estimator")](logp, ref_logp)  # [N, L]


def kl_in_reward(rewards: Tensor, kl: Tensor, mask: Tensor, coef: float) -> Tensor:
    """Sequence reward with the KL penalty folded in: ``r_i - coef * sum_t mask_{i,t} kl_{i,t}``.

    ``rewards [N]``, ``kl [N, L]`` (usually ``k1`` from :func:`kl_penalty`), ``mask [N, L]``.
    The KL is detached: in-reward KL shapes the advantage, it is not back-propagated.
    """
    m = mask.to(kl.dtype)  # [N, L]
    return rewards - coef * (kl.detach() * m).sum(-1)  # [N]
