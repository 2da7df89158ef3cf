"""Policy losses that keep a gradient on every token: SAPO's soft gate and CISPO's clipped IS weight.

Same signature, sign convention and ratio clamp as :mod:`vlmrl.algos.losses` (registered there
in :data:`~vlmrl.algos.losses.POLICY_LOSSES`). A hard PPO clip gives a token *zero* gradient once
its ratio leaves ``[1 - eps_low, 1 + eps_high]``; these two only shrink it:

- **SAPO** replaces the clip by a smooth gate whose slope is set by a temperature, one for
  positive and one for negative advantages (``clip_high`` / ``clip_low`` carry ``tau_pos`` /
  ``tau_neg``; there is no hard bound for them to carry).
- **CISPO** clips the importance weight itself, stops its gradient, and multiplies a REINFORCE
  log-prob term by it: the weight is bounded, the token's gradient never vanishes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlmrl.algos._ratio import clamped_log_ratio, ratio_metrics
from vlmrl.algos.aggregate import Count, LossAgg, agg_loss, masked_mean

LossOut = tuple[Tensor, dict[str, float]]


def sapo_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 1.05,
    clip_high: float = 1.0,
    dual_clip_c: float = 3.0,
    agg: str | LossAgg = LossAgg.SEQ_MEAN_TOKEN_MEAN,
    norm_const: float | None = None,
    global_tokens: Count | None = None,
    global_seqs: Count | None = None,
) -> LossOut:
    """SAPO (Gao et al. 2025, Qwen team, "Soft Adaptive Policy Optimization", arXiv:2511.20347).

    ``r_t = exp(logp_t - old_logp_t)``; ``tau_t = tau_pos if A_t > 0 else tau_neg``;
    ``f(r) = (4 / tau) * sigmoid(tau (r - 1))``; ``l_t = -A_t f(r_t)``; ``loss = agg(l, mask)``.

    Gradient: ``d l_t / d logp_t = -A_t w_t r_t`` with the gate ``w_t = 4 s (1 - s)``,
    ``s = sigmoid(tau (r_t - 1))``: ``w = 1`` at ``r = 1`` (the plain policy gradient, the same as
    PPO's on-policy) and decays smoothly as ``r`` leaves 1, faster for a larger ``tau``. The paper
    sets ``tau_neg > tau_pos`` (1.05 / 1.0, the defaults) since a negative advantage pushes up the
    logits of many unsampled tokens. Here ``clip_high`` is ``tau_pos`` and ``clip_low`` is
    ``tau_neg`` (both > 0). The value at ``r = 1`` is ``-2 A / tau``, not ``-A``. ``agg`` defaults
    to the paper's ``seq_mean_token_mean``. Metric ``gate_mean``: the mean ``w`` over valid tokens
    (1 on-policy; lower means more of the update is being damped). ``dual_clip_c`` is ignored.
    """
    tau_pos, tau_neg = clip_high, clip_low
    if not (tau_pos > 0 and tau_neg > 0):
        raise ValueError(f"sapo needs temperatures > 0: {tau_pos=} (clip_high), {tau_neg=} (clip_low)")
    log_ratio = clamped_log_ratio(logp, old_logp)  # [N, L]
    ratio = log_ratio.exp()  # [N, L]
    adv = adv.detach().float()  # [N, L]
    tau = torch.where(adv > 0, tau_pos, tau_neg)  # [N, L]
    gate = torch.sigmoid(tau * (ratio - 1.0))  # [N, L]
    loss_mat = -adv * (4.0 / tau) * gate  # [N, L]
    loss = agg_loss(
        loss_mat, mask, agg, norm_const, global_tokens=global_tokens, global_seqs=global_seqs
    )  # []
    weight = (4.0 * gate * (1.0 - gate)).detach()  # [N, L]; the gradient's factor against PG's
    return loss, ratio_metrics(ratio, log_ratio, mask, {"gate_mean": masked_mean(weight, mask.bool())})


def cispo_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 1.0,
    clip_high: float = 0.28,
    dual_clip_c: float = 3.0,
    agg: str | LossAgg = LossAgg.TOKEN_MEAN,
    norm_const: float | None = None,
    global_tokens: Count | None = None,
    global_seqs: Count | None = None,
) -> LossOut:
    """CISPO (MiniMax 2025, "MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning
    Attention", arXiv:2506.13585, §3.1).

    Paper: ``J = (1 / sum_i |o_i|) sum_{i,t} sg(r_hat_t) A_t log pi_t`` with the clipped weight
    ``r_hat_t = clip(r_t, 1 - eps_low, 1 + eps_high)``: every token keeps the gradient
    ``r_hat_t A_t grad log pi_t`` (PPO's clip would zero it), only its weight is bounded.

    Here ``l_t = -A_t sg(r_hat_t) (logp_t - sg(logp_t) + 1)``: the paper's gradient exactly, and a
    value ``-A_t r_hat_t`` that reads like the other losses' (``-mean(A)`` on-policy) instead of a
    sum of log-probs. Defaults: no lower bound (``clip_low = 1``: ``1 - eps_low = 0``), as the paper
    ("we did not impose a lower bound on the IS weight"), which tuned only ``eps_high`` and does not
    state it; ``0.28`` here (DAPO's clip-higher). ``agg`` defaults to ``token_mean`` (the paper's
    ``1 / sum |o_i|``). ``clipfrac_high`` / ``clipfrac_low``: the share of tokens whose *weight* was
    capped above / below, whatever the sign of ``A``. ``dual_clip_c`` is ignored.
    """
    if not (clip_low >= 0.0 and clip_high >= 0.0):
        raise ValueError(f"need clip_low >= 0 and clip_high >= 0, got {clip_low=} and {clip_high=}")
    log_ratio = clamped_log_ratio(logp, old_logp)  # [N, L]
    ratio = log_ratio.exp()  # [N, L]
    weight = ratio.clamp(max(1.0 - clip_low, 0.0), 1.0 + clip_high).detach()  # [N, L]; sg(r_hat)
    logp32 = logp.float()  # [N, L]
    loss_mat = -adv.detach().float() * weight * (logp32 - logp32.detach() + 1.0)  # [N, L]
    loss = agg_loss(
        loss_mat, mask, agg, norm_const, global_tokens=global_tokens, global_seqs=global_seqs
    )  # []
    valid = mask.bool()  # [N, L]
    extra = {
        "clipfrac_low": masked_mean((ratio < 1.0 - clip_low).float(), valid),
        "clipfrac_high": masked_mean((ratio > 1.0 + clip_high).float(), valid),
    }
    return loss, ratio_metrics(ratio, log_ratio, mask, extra)
