"""Outcome (sequence-level) advantage estimators for group-sampled RL, and token broadcasting.

Every estimator maps one scalar reward per response to one scalar advantage per response:
``fn(rewards [N], group_ids [N], *, eps) -> [N]``. ``group_ids`` are arbitrary integer ids (the
prompt a response was sampled for); groups need not be contiguous nor of equal size. The trainer
broadcasts the result to tokens with :func:`broadcast_advantages` (or :func:`segment_advantages`
for per-segment credit, e.g. perception vs answer).

Conventions shared by all estimators
  * Standard deviations are **unbiased** (Bessel, divide by ``n - 1``), as ``torch.std`` in
    EasyR1 / veRL / TRL.
  * A group of size 1 gets advantage **0**: with nothing to compare against there is no signal.
    (veRL instead uses mean 0 / std 1 there, i.e. ``A = r``; we depart on purpose.)
  * A group whose rewards are all equal gets advantage 0 (``0 / (0 + eps)``).
  * Results are detached: advantages are constants in the policy gradient.

Pick an estimator by name with :func:`compute_advantages`; the names are :class:`AdvantageEstimator`.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import torch
from torch import Tensor

from vlmrl.algos._registry import resolve


class AdvantageEstimator(StrEnum):
    """Names of the outcome advantage estimators (the keys of :data:`ADVANTAGE_ESTIMATORS`)."""

    GRPO = "grpo"
    DRGRPO = "drgrpo"
    RLOO = "rloo"
    REINFORCE_PP = "reinforce_pp"
    REINFORCE_PP_BASELINE = "reinforce_pp_baseline"
    GRPO_PASSK = "grpo_passk"


AdvantageFn = Callable[..., Tensor]


# --------------------------------------------------------------------------- group statistics


def group_stats(values: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample mean, unbiased std and size of the sample's group.

    ``std = sqrt(sum_g (x - mean_g)^2 / max(n_g - 1, 1))``; two passes (centre, then square) for
    numerical stability. Returns three ``[N]`` tensors (the size as ``values``' dtype).
    """
    _, inv, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)  # [N], [K]
    counts = counts.to(values.dtype)  # [K]
    sums = values.new_zeros(counts.shape).index_add_(0, inv, values)  # [K]
    mean = (sums / counts)[inv]  # [N]
    sq = values.new_zeros(counts.shape).index_add_(0, inv, (values - mean) ** 2)  # [K]
    std = (sq / (counts - 1).clamp(min=1)).sqrt()[inv]  # [N]
    return mean, std, counts[inv]


def _as_float(rewards: Tensor) -> Tensor:
    return rewards.detach() if rewards.is_floating_point() else rewards.detach().float()


# --------------------------------------------------------------------------- estimators


def grpo_advantages(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    """GRPO (Shao et al. 2024, DeepSeekMath §4.1.2, outcome supervision).

    ``A_i = (r_i - mean_g(r)) / (std_g(r) + eps)`` with the unbiased group std.
    Example: one group ``[1, 0, 0, 1]``: mean 0.5, std sqrt(1/3) = 0.5774, so ``A = ±0.866``.
    """
    r = _as_float(rewards)  # [N]
    mean, std, n = group_stats(r, group_ids)  # [N] x3
    adv = (r - mean) / (std + eps)  # [N]
    return torch.where(n > 1, adv, torch.zeros_like(adv))  # [N]


def drgrpo_advantages(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): ``A_i = r_i - mean_g(r)``.

    No division by the group std, which biases updates towards too-easy / too-hard prompts.
    (The paper's other half, no per-response length normalisation, is the loss aggregation
    ``seq_mean_token_sum_norm`` in :mod:`vlmrl.algos.aggregate`.) ``eps`` is unused.
    """
    r = _as_float(rewards)  # [N]
    mean, _, _ = group_stats(r, group_ids)  # [N]
    return r - mean  # [N]; a size-1 group is r - r = 0


def rloo_advantages(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    """RLOO (Ahmadian et al. 2024, "Back to Basics"; Kool et al. 2019): leave-one-out baseline.

    ``A_i = r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean_g(r))``; a size-1 group gets 0.
    Example: ``[1, 0, 0]``: ``1 - 0 = 1``, ``0 - (1 + 0) / 2 = -0.5``, so ``A = [1, -0.5, -0.5]``.
    ``eps`` is unused.
    """
    r = _as_float(rewards)  # [N]
    mean, _, n = group_stats(r, group_ids)  # [N] x2
    scale = torch.where(n > 1, n / (n - 1).clamp(min=1), torch.zeros_like(n))  # [N]
    return scale * (r - mean)  # [N]


def _whiten(x: Tensor, eps: float) -> Tensor:
    """``(x - mean(x)) / (std(x) + eps)`` over the whole batch, unbiased std; one sample gives 0."""
    centred = x - x.mean()  # [N]
    std = centred.square().sum().div(max(x.numel() - 1, 1)).sqrt()  # []
    return centred / (std + eps)  # [N]


def reinforce_pp_advantages(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    """REINFORCE++ (Hu 2025, arXiv:2501.03262), outcome reward, no critic, no group baseline.

    ``A_i = (r_i - mean_B(r)) / (std_B(r) + eps)``: whitening over the whole batch ``B``.
    Departure: veRL whitens the token-broadcast returns, which weights each response by its
    length; we whiten one value per response. With a KL-in-reward penalty, pass the penalised
    sequence reward (see :func:`vlmrl.algos.kl.kl_in_reward`). ``group_ids`` are unused.
    """
    return _whiten(_as_float(rewards), eps)  # [N]


def reinforce_pp_baseline_advantages(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    """REINFORCE++-baseline (Hu 2025): subtract the group mean first, then whiten over the batch.

    ``A'_i = r_i - mean_g(r)``;  ``A_i = (A'_i - mean_B(A')) / (std_B(A') + eps)``.
    Unlike GRPO the scale is the *batch* std, so easy and hard prompts are not re-weighted.
    """
    return _whiten(drgrpo_advantages(rewards, group_ids), eps)  # [N]


def grpo_passk_advantages(
    rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6, normalize_std: bool = True
) -> Tensor:
    """Pass@k-style GRPO: only the best response of each group gets a (non-negative) advantage.

    ``A_best = (r_max - r_second_max) / (std_g(r) + eps)``, every other response gets 0; the
    best is the first index holding the group max, so a tie for the max gives 0 to everyone.
    This rewards the response that makes the group succeed, i.e. optimises max-over-samples
    (pass@k) rather than the mean. Formulation of veRL's ``grpo_passk`` (citing arXiv:2503.19595).
    ``normalize_std=False`` drops the std division. A size-1 group gets 0.
    """
    r = _as_float(rewards)  # [N]
    _, inv = torch.unique(group_ids, return_inverse=True)  # [N]
    k = int(inv.max()) + 1 if inv.numel() else 0
    neg_inf = torch.full((k,), float("-inf"), dtype=r.dtype, device=r.device)  # [K]
    gmax = neg_inf.scatter_reduce(0, inv, r, "amax")  # [K]
    pos = torch.arange(r.numel(), device=r.device)  # [N]
    # First position holding the group max: min over candidate positions (others pushed to N).
    cand = torch.where(r == gmax[inv], pos, torch.full_like(pos, r.numel()))  # [N]
    best = torch.full((k,), r.numel(), device=r.device).scatter_reduce(0, inv, cand, "amin")  # [K]
    is_best = pos == best[inv]  # [N]
    others = torch.where(is_best, torch.full_like(r, float("-inf")), r)  # [N]
    second = neg_inf.scatter_reduce(0, inv, others, "amax")  # [K]; -inf for a size-1 group
    gap = torch.where(torch.isfinite(second), gmax - second, torch.zeros_like(gmax))  # [K]
    if normalize_std:
        _, std, _ = group_stats(r, group_ids)  # [N]
        adv = gap[inv] / (std + eps)  # [N]
    else:
        adv = gap[inv]  # [N]
    return torch.where(is_best, adv, torch.zeros_like(adv))  # [N]


ADVANTAGE_ESTIMATORS: dict[AdvantageEstimator, AdvantageFn] = {
    AdvantageEstimator.GRPO: grpo_advantages,
    AdvantageEstimator.DRGRPO: drgrpo_advantages,
    AdvantageEstimator.RLOO: rloo_advantages,
    AdvantageEstimator.REINFORCE_PP: reinforce_pp_advantages,
    AdvantageEstimator.REINFORCE_PP_BASELINE: reinforce_pp_baseline_advantages,
    AdvantageEstimator.GRPO_PASSK: grpo_passk_advantages,
}


@torch.no_grad()
def compute_advantages(
    name: str | AdvantageEstimator, rewards: Tensor, group_ids: Tensor, eps: float = 1e-6, **kw: object
) -> Tensor:
    """Outcome advantages ``[N]`` from rewards ``[N]`` and integer group ids ``[N]``.

    ``name`` is one of :class:`AdvantageEstimator`; extra keywords go to the estimator
    (only ``grpo_passk`` takes one: ``normalize_std``).
    """
    fn = ADVANTAGE_ESTIMATORS[resolve(AdvantageEstimator, name, "advantage estimator")]
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must both be 1-D of the same length, got rewards "
            f"{tuple(rewards.shape)} and group_ids {tuple(group_ids.shape)}"
        )
    if group_ids.is_floating_point():
        raise ValueError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    return fn(rewards, group_ids, eps=eps, **kw)  # [N]


# --------------------------------------------------------------------------- token level


def broadcast_advantages(adv: Tensor, mask: Tensor) -> Tensor:
    """Give every valid token its response's advantage: ``A[i, t] = adv[i] * mask[i, t]``."""
    return adv[:, None] * mask.to(adv.dtype)  # [N, L]


def segment_advantages(adv_by_segment: dict[str, Tensor], segment_masks: dict[str, Tensor]) -> Tensor:
    """Give each token the advantage of the segment it belongs to (per-segment credit).

    ``A[i, t] = sum_s adv_by_segment[s][i] * segment_masks[s][i, t]``. With disjoint masks
    (e.g. ``perception`` = the description span, ``answer`` = the rest) each token gets exactly
    its segment's advantage and tokens in no segment get 0. Overlapping masks add up, which lets
    a whole-response advantage be combined with a segment bonus on purpose.
    Both dicts must have the same keys; advantages are ``[N]``, masks ``[N, L]``.
    """
    if not adv_by_segment or set(adv_by_segment) != set(segment_masks):
        raise ValueError(
            f"segment names differ: advantages have {sorted(adv_by_segment)}, "
            f"masks have {sorted(segment_masks)}"
        )
    parts = [broadcast_advantages(adv_by_segment[s], segment_masks[s]) for s in adv_by_segment]  # [N, L]
    return torch.stack(parts).sum(0)  # [N, L]
