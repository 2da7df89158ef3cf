"""Constrained RL with a safety cost: a fixed penalty or a PPO-Lagrangian multiplier.

An episode has a reward ``R`` and a cost ``C ≥ 0`` (unsafe, irreversible actions; see
``vlmrl.envs.gui``). The constrained problem (Altman 1999; Ray, Achiam & Amodei 2019,
"Benchmarking Safe Exploration", PPO-Lagrangian) is

    max_θ E[R]   subject to   E[C] ≤ d      (d: the target cost rate, ``cost_target``)

and its Lagrangian ``E[R] − λ (E[C] − d)`` is optimised by gradient ascent in θ on the shaped
return ``R − λ·C`` and by projected gradient ascent in λ ≥ 0 on the constraint violation:

    λ ← min(λ_max, max(0, λ + lr_λ · (mean C − d)))             (:func:`lagrange_update`)

with an optional upper bound ``λ_max`` (``cost_lambda_max``; OmniSafe's
``lagrangian_upper_bound``). Why bound it: with group-normalised advantages, once ``λ`` exceeds
``R(unsafe success) − R(failure)`` a failed episode out-scores an unsafe success, and in a group
with no safe success the failures get a *positive* advantage — the policy is taught to fail.
Bounding λ below that edge keeps the order safe success > unsafe success > failure.

Both arms use the same shaping ``R − λ·C`` (:func:`shaped_rewards`); they differ only in λ:

* ``penalty``: λ is a fixed coefficient (``cost_coef``; 0 = the plain reward, the cost is only
  logged) — classic reward shaping, which needs the right weight found by hand;
* ``lagrangian``: λ starts at ``cost_coef`` and follows the update above once per step, so it
  grows while the policy is unsafer than ``d`` and decays to 0 once it is safe.

Departure from the paper: PPO-Lagrangian subtracts λ·A_C from the reward advantage and divides
by ``1 + λ``; with GRPO the shaped return is group-normalised anyway, so the rescale is a no-op
and we shape the return before the advantage instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch


class CostMode(StrEnum):
    """How the safety cost enters the advantage (config ``env.cost_mode``)."""

    PENALTY = "penalty"
    LAGRANGIAN = "lagrangian"


@dataclass
class CostSpec:
    """The safety-cost keys of the config's ``env`` section (``EnvConfig`` inherits them)."""

    cost_mode: str = "penalty"
    """How an environment's safety cost ``C`` (e.g. the GUI world's unsafe actions) enters the
    advantage, as ``R − λ·C``: ``penalty`` (λ = ``cost_coef``, fixed; 0 = the plain reward, the cost
    only logged) or ``lagrangian`` (PPO-Lagrangian: λ starts at ``cost_coef`` and moves each step by
    ``λ ← max(0, λ + cost_lr·(mean C − cost_target))``)."""
    cost_coef: float = 0.0
    """The fixed penalty λ (``penalty``) or the starting multiplier (``lagrangian``)."""
    cost_target: float = 0.05
    """``lagrangian``: the allowed mean episode cost ``d`` (the constraint ``E[C] ≤ d``)."""
    cost_lr: float = 1.0
    """``lagrangian``: the multiplier's learning rate ``lr_λ``."""
    cost_lambda_max: float | None = None
    """``lagrangian``: the upper bound ``λ_max`` of the multiplier (None: unbounded); keep it below
    ``R(unsafe success) − R(failure)`` so a failure never out-scores an unsafe success."""


def lagrange_update(
    lam: float, mean_cost: float, target: float, lr: float, lam_max: float | None = None
) -> float:
    """One projected ascent step of the multiplier: ``min(λ_max, max(0, λ + lr · (mean_cost − target)))``.

    >>> lagrange_update(0.0, 0.5, 0.1, 1.0)   # unsafe: 0 + 1·(0.5 − 0.1)
    0.4
    >>> lagrange_update(0.2, 0.0, 0.1, 5.0)   # safe: 0.2 + 5·(0 − 0.1) = −0.3 → projected to 0
    0.0
    >>> lagrange_update(0.9, 0.5, 0.1, 1.0, lam_max=1.0)   # 0.9 + 0.4 = 1.3 → bounded at 1.0
    1.0
    """
    if lr < 0 or target < 0 or (lam_max is not None and lam_max < 0):
        raise ValueError(f"need lr, target, lam_max >= 0, got lr={lr}, target={target}, lam_max={lam_max}")
    lam = max(0.0, float(lam) + float(lr) * (float(mean_cost) - float(target)))
    return lam if lam_max is None else min(float(lam_max), lam)


def shaped_rewards(rewards: torch.Tensor, costs: torch.Tensor, lam: float) -> torch.Tensor:
    """``R − λ·C`` per episode; ``rewards`` and ``costs`` are ``[N]``.

    >>> shaped_rewards(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 2.0]), 0.25).tolist()
    [1.0, 0.5]
    """
    if rewards.shape != costs.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and costs {tuple(costs.shape)} differ in shape")
    return rewards - float(lam) * costs.to(rewards.dtype)  # [N]
