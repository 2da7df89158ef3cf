"""The off-policy correction of asynchronous rollouts: decoupled PPO with a truncated importance weight.

With ``rollout.mode: async`` the batch trained at step t was sampled by the *behaviour* policy μ,
the weights of step t − s (staleness s ≤ k, ``rollout.staleness``), not by the policy π_prox the
update starts from. Decoupled PPO (Hilton et al. 2022, "Batch size-invariance for policy
optimization"; AReaL, Fu et al. 2025) keeps the PPO trust region around π_prox and corrects for μ
with an importance weight; truncating that weight at a cap C (IMPALA's ρ̄, Espeholt et al. 2018;
"truncated importance sampling") bounds its variance::

    w_t   = min(π_prox(y_t) / μ(y_t), C)                          (no gradient through w)
    r_t   = π_θ(y_t) / π_prox(y_t)
    L(θ)  = − agg_t  w_t · min(r_t · A_t, clip(r_t, 1 − ε_low, 1 + ε_high) · A_t)

Because w_t > 0, ``w_t · min(r A, clip(r) A) = min(r (w A), clip(r) (w A))``: the correction is the
unchanged policy loss on advantages scaled by w (true of every loss of :mod:`vlmrl.algos.losses`,
which are positively homogeneous in A), so it composes with any of them. With one update per
batch (the default) π_prox = π_θ in value, so r_t = 1 and w_t = min(π_θ / μ, C): the gradient is
``w_t · A_t · ∇ log π_θ(y_t)``. A batch with staleness 0 needs no weight (μ = π_prox): the trainer
leaves it uncorrected, which is why ``staleness: 0`` reproduces the synchronous run exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlmrl.algos._ratio import LOG_RATIO_CLAMP
from vlmrl.algos.aggregate import masked_mean


@torch.no_grad()
def truncated_is_weights(
    prox_logp: Tensor,  # [N, L] log π_prox of the sampled tokens
    behaviour_logp: Tensor,  # [N, L] log μ, the sampler's (stale) log-probs
    mask: Tensor,  # [N, L] 1 on tokens that count in the loss
    cap: float,
) -> tuple[Tensor, dict[str, float]]:
    """``w = min(exp(log π_prox − log μ), cap)`` per token (1 on masked tokens), and its metrics:
    ``is_clip_frac`` (share of valid tokens whose weight hit the cap), ``is_weight_mean`` (mean w
    over valid tokens, after the cap). ``cap ≥ 1``.

    >>> w, m = truncated_is_weights(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, -1.0]]),
    ...                             torch.ones(1, 2), cap=2.0)
    >>> [round(x, 4) for x in w[0].tolist()], m["is_clip_frac"]
    ([1.0, 2.0], 0.5)
    """
    if cap < 1:
        raise ValueError(f"truncated importance weight cap must be ≥ 1, got {cap}")
    log_ratio = prox_logp.float() - behaviour_logp.float()  # [N, L]
    log_ratio = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [N, L], as every ratio here
    ratio = log_ratio.exp()  # [N, L]
    valid = mask.bool()  # [N, L]
    w = torch.where(valid, ratio.clamp(max=cap), torch.ones_like(ratio))  # [N, L]
    clipped = (ratio > cap) & valid  # [N, L]
    stats = torch.stack([masked_mean(clipped.float(), valid), masked_mean(w, valid)]).tolist()
    return w, {"is_clip_frac": stats[0], "is_weight_mean": stats[1]}
