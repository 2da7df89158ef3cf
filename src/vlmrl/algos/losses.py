"""Clipped policy-gradient losses (PPO family) for RL post-training, as pure functions.

All losses share one signature, so the trainer picks one by name (:class:`PolicyLoss`) and passes
the same keywords::

    fn(logp [N, L], old_logp [N, L], adv [N, L], mask [N, L], *, clip_low, clip_high,
       dual_clip_c, agg, norm_const, global_tokens, global_seqs) -> (loss [], metrics)

Sign convention: the returned loss is **minimised**; it is the negated surrogate objective, so
with ratio 1 and ``token_mean`` it equals ``-mean(A)`` over valid tokens. ``old_logp`` and
``adv`` are treated as constants (detached). The log-ratio is clamped to ``±20`` before ``exp``
so that a stale or diverged token cannot produce ``inf``/``nan``. The ratio is computed in
float32; pass float32 log-probs (as :func:`vlmrl.algos.logprobs.token_logprobs` returns): bf16
log-probs are off by ~1e-2, more than GSPO's whole clip range.

``metrics`` (python floats, token means over the valid tokens of this call, one device sync):
``clipfrac_low`` (``A < 0`` and ``ratio < 1 - clip_low``), ``clipfrac_high`` (``A > 0`` and
``ratio > 1 + clip_high``), ``clipfrac_dual`` (``A < 0`` and ``ratio > c``, dual-clip only),
``approx_kl`` (token-level k3 estimate of KL(old || new): ``r - 1 - log r``), ``ratio_mean``,
``ratio_max`` (for ``gspo`` the ratio and clip fractions use the sequence ratio ``s_i``).
``sapo`` and ``cispo`` (no hard clip on the objective) live in :mod:`vlmrl.algos.gated_losses`,
with their own clip metrics (``gate_mean``; the weight's clip fractions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor

from vlmrl.algos._ratio import LOG_RATIO_CLAMP, clamped_log_ratio, ratio_metrics
from vlmrl.algos._registry import resolve
from vlmrl.algos.aggregate import Count, LossAgg, agg_loss, masked_mean
from vlmrl.algos.gated_losses import cispo_loss, sapo_loss


class PolicyLoss(StrEnum):
    """Names of the policy losses (the keys of :data:`POLICY_LOSSES`)."""

    PPO_CLIP = "ppo_clip"
    DUAL_CLIP = "dual_clip"
    GSPO = "gspo"
    SAPO = "sapo"
    CISPO = "cispo"


LossOut = tuple[Tensor, dict[str, float]]
PolicyLossFn = Callable[..., LossOut]


def _surrogate(
    ratio: Tensor, adv: Tensor, clip_low: float, clip_high: float, dual_clip_c: float | None
) -> Tensor:
    """Per-token clipped loss ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))``, optionally dual-clipped.

    Dual-clip (Ye et al. 2020, arXiv:1912.09729): for ``A < 0`` the loss is further capped at
    ``-c A = c |A|``, so a ratio far above 1 on a bad action cannot blow the update up.
    """
    pg1 = -adv * ratio  # [N, L]
    pg2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [N, L]
    loss = torch.maximum(pg1, pg2)  # [N, L]
    if dual_clip_c is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * dual_clip_c), loss)  # [N, L]
    return loss  # [N, L]


@torch.no_grad()
def _metrics(
    ratio: Tensor,
    tok_log_ratio: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip_c: float | None,
) -> dict[str, float]:
    valid = mask.bool()  # [N, L]
    values = {
        "clipfrac_low": masked_mean(((adv < 0) & (ratio < 1.0 - clip_low)).float(), valid),
        "clipfrac_high": masked_mean(((adv > 0) & (ratio > 1.0 + clip_high)).float(), valid),
    }
    if dual_clip_c is not None:
        values["clipfrac_dual"] = masked_mean(((adv < 0) & (ratio > dual_clip_c)).float(), valid)
    return ratio_metrics(ratio, tok_log_ratio, mask, values)


def _check_clip(clip_low: float, clip_high: float) -> None:
    if not (0.0 <= clip_low < 1.0 and clip_high >= 0.0):
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low=} and {clip_high=}")


def _clipped_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip_c: float | None,
    agg_kw: dict,
) -> LossOut:
    _check_clip(clip_low, clip_high)
    log_ratio = clamped_log_ratio(logp, old_logp)  # [N, L]
    ratio = log_ratio.exp()  # [N, L]
    loss_mat = _surrogate(ratio, adv.detach(), clip_low, clip_high, dual_clip_c)  # [N, L]
    loss = agg_loss(loss_mat, mask, **agg_kw)  # []
    return loss, _metrics(ratio, log_ratio, adv, mask, clip_low, clip_high, dual_clip_c)


def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip_c: float = 3.0,
    agg: str | LossAgg = LossAgg.TOKEN_MEAN,
    norm_const: float | None = None,
    global_tokens: Count | None = None,
    global_seqs: Count | None = None,
) -> LossOut:
    """PPO clipped surrogate (Schulman et al. 2017) with DAPO's decoupled clip (Yu et al. 2025).

    ``r_t = exp(logp_t - old_logp_t)``;
    ``l_t = max(-A_t r_t, -A_t clip(r_t, 1 - eps_low, 1 + eps_high))``; ``loss = agg(l, mask)``.
    ``clip_high > clip_low`` is DAPO's *clip-higher* (paper: 0.2 / 0.28), which leaves room for
    low-probability tokens to grow and so keeps entropy up. Where the clip is active the token
    gets zero gradient. ``dual_clip_c`` is ignored (accepted so all losses share one signature).
    """
    agg_kw = dict(mode=agg, norm_const=norm_const, global_tokens=global_tokens, global_seqs=global_seqs)
    return _clipped_loss(logp, old_logp, adv, mask, clip_low, clip_high, None, agg_kw)


def dual_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip_c: float = 3.0,
    agg: str | LossAgg = LossAgg.TOKEN_MEAN,
    norm_const: float | None = None,
    global_tokens: Count | None = None,
    global_seqs: Count | None = None,
) -> LossOut:
    """Dual-clip PPO (Ye et al. 2020, "Mastering Complex Control in MOBA Games", arXiv:1912.09729).

    As :func:`ppo_clip_loss`, and for ``A_t < 0``: ``l_t = min(l_t, -c A_t)`` with ``c > 1``
    (default 3, as veRL/EasyR1's ``clip_ratio_dual``). Tokens with ``A < 0`` and ``r > c`` get
    the constant loss ``c |A|`` and zero gradient.
    """
    if dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c must be > 1 (it bounds the ratio from above), got {dual_clip_c}")
    agg_kw = dict(mode=agg, norm_const=norm_const, global_tokens=global_tokens, global_seqs=global_seqs)
    return _clipped_loss(logp, old_logp, adv, mask, clip_low, clip_high, dual_clip_c, agg_kw)


def gspo_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    dual_clip_c: float = 3.0,
    agg: str | LossAgg = LossAgg.SEQ_MEAN_TOKEN_MEAN,
    norm_const: float | None = None,
    global_tokens: Count | None = None,
    global_seqs: Count | None = None,
) -> LossOut:
    """GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv:2507.18071), GSPO-token form.

    Sequence ratio ``s_i = exp((1/|y_i|) sum_t (logp_t - old_logp_t))`` (length-normalised), used
    per token through the stop-gradient form ``s_{i,t} = sg[s_i] * pi_t / sg[pi_t]``: its value is
    ``s_i`` and its gradient ``s_i * grad log pi_t``. Then
    ``l_{i,t} = max(-A_{i,t} s_{i,t}, -A_{i,t} clip(s_{i,t}, 1 - eps_low, 1 + eps_high))``.
    With a sequence-level advantage and ``seq_mean_token_mean`` this is exactly the paper's
    sequence objective ``-(1/G) sum_i min(s_i A_i, clip(s_i) A_i)`` in value and gradient.

    Defaults follow the paper (§5.1): clip ranges **3e-4 / 4e-4** (sequence ratios sit very close
    to 1, so the token-level 0.2 would never clip) and ``agg=seq_mean_token_mean``. Pass GSPO's own
    clip values from the config; do not reuse the PPO ones. ``dual_clip_c`` is ignored.
    """
    _check_clip(clip_low, clip_high)
    logp, old_logp = logp.float(), old_logp.detach().float()  # [N, L]; 1 ± 4e-4 needs float32
    m = mask.to(logp.dtype)  # [N, L]
    tok_log_ratio = torch.where(mask.bool(), logp - old_logp, 0.0)  # [N, L]
    seq_log_ratio = tok_log_ratio.sum(-1) / m.sum(-1).clamp(min=1)  # [N]
    seq_log_ratio = seq_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).detach()  # [N]
    log_ratio = seq_log_ratio[:, None] + logp - logp.detach()  # [N, L]; value s_i, grad via logp_t
    ratio = log_ratio.exp()  # [N, L]
    loss_mat = _surrogate(ratio, adv.detach(), clip_low, clip_high, None)  # [N, L]
    loss = agg_loss(
        loss_mat, mask, agg, norm_const, global_tokens=global_tokens, global_seqs=global_seqs
    )  # []
    tok_log_ratio = tok_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [N, L]
    return loss, _metrics(ratio, tok_log_ratio, adv, mask, clip_low, clip_high, None)


POLICY_LOSSES: dict[PolicyLoss, PolicyLossFn] = {
    PolicyLoss.PPO_CLIP: ppo_clip_loss,
    PolicyLoss.DUAL_CLIP: dual_clip_loss,
    PolicyLoss.GSPO: gspo_loss,
    PolicyLoss.SAPO: sapo_loss,
    PolicyLoss.CISPO: cispo_loss,
}


@dataclass(frozen=True)
class ClipRange:
    """A loss's own clip defaults and the ranges in which its clip does something sensible.

    ``clip_low`` must lie in ``[0, low_max)`` (``1 − clip_low > 0``: a ratio bound below 1 that is
    still positive); ``clip_high`` in ``[0, high_max]``. ``dual_clip_c`` is ``None`` for losses
    that have no dual clip (setting it for them is an error, not a silent no-op).
    """

    clip_low: float
    clip_high: float
    low_max: float = 1.0
    high_max: float = math.inf
    dual_clip_c: float | None = None
    positive: bool = False
    """Both values must be > 0 (SAPO's gate temperatures: a zero one divides by zero)."""

    def problems(self, clip_low: float, clip_high: float, dual_clip_c: float | None) -> list[str]:
        """What is wrong with these values for this loss (empty: nothing), one phrase each."""
        out = []
        if not 0.0 <= clip_low < self.low_max:
            out.append(f"clip_low must be in [0, {self.low_max:g}), got {clip_low:g}")
        if not 0.0 <= clip_high <= self.high_max:
            out.append(f"clip_high must be in [0, {self.high_max:g}], got {clip_high:g}")
        if self.positive and not (clip_low > 0 and clip_high > 0):
            out.append(f"clip_low and clip_high must be > 0, got {clip_low:g} and {clip_high:g}")
        if dual_clip_c is not None and self.dual_clip_c is None:
            out.append("dual_clip_c applies to the dual_clip loss only")
        if dual_clip_c is not None and self.dual_clip_c is not None and dual_clip_c <= 1.0:
            out.append(f"dual_clip_c must be > 1 (it bounds the ratio from above), got {dual_clip_c:g}")
        return out


#: Each loss's clip defaults and valid ranges (the config takes both from here). GSPO's ratios are
#: length-normalised sequence ratios, within ~1e-3 of 1: its paper's 3e-4 / 4e-4, and any clip
#: above 0.01 would never bind.
CLIP_RANGES: dict[PolicyLoss, ClipRange] = {
    PolicyLoss.PPO_CLIP: ClipRange(0.2, 0.2),
    PolicyLoss.DUAL_CLIP: ClipRange(0.2, 0.2, dual_clip_c=3.0),
    PolicyLoss.GSPO: ClipRange(3e-4, 4e-4, low_max=0.01, high_max=0.01),
    # SAPO has no hard clip: its slots carry the gate temperatures tau_neg / tau_pos (paper: 1.05 / 1.0).
    PolicyLoss.SAPO: ClipRange(1.05, 1.0, low_max=math.inf, positive=True),
    # CISPO clips the IS weight; clip_low >= 1 is the paper's "no lower bound".
    PolicyLoss.CISPO: ClipRange(1.0, 0.28, low_max=math.inf),
}


def compute_policy_loss(
    name: str | PolicyLoss, logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, **kw: object
) -> LossOut:
    """Dispatch to the loss named ``name`` (a :class:`PolicyLoss`); keywords as the module docstring."""
    fn = POLICY_LOSSES[resolve(PolicyLoss, name, "policy loss")]
    return fn(logp, old_logp, adv, mask, **kw)


@dataclass(frozen=True)
class LossSpec:
    """A run's policy loss: which one and its constants (the keywords of the module docstring that
    stay fixed for the run). The minibatch's global token / sequence counts change every call, so
    they stay arguments of :func:`policy_loss`. Names are checked (and made enums) on construction.
    """

    name: PolicyLoss
    """Which loss (a :class:`PolicyLoss` or its name)."""
    clip_low: float
    """Lower clip ε: the ratio is clipped at ``1 − clip_low`` (``sapo``: its gate temperature τ_neg)."""
    clip_high: float
    """Upper clip ε: the ratio is clipped at ``1 + clip_high`` (``sapo``: τ_pos)."""
    dual_clip_c: float | None = None
    """Dual-clip ``c`` (``dual_clip`` only); None: the loss's own default."""
    agg: LossAgg = LossAgg.TOKEN_MEAN
    """How token losses become one number (:class:`vlmrl.algos.aggregate.LossAgg`)."""
    norm_const: float | None = None
    """``C`` of ``seq_mean_token_sum_norm``: the most tokens a completion can hold; ignored by the
    other aggregations."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", resolve(PolicyLoss, self.name, "policy loss"))
        object.__setattr__(self, "agg", resolve(LossAgg, self.agg, "loss aggregation mode"))


def policy_loss(
    spec: LossSpec,
    logp: Tensor,  # [N, L]
    old_logp: Tensor,  # [N, L]
    adv: Tensor,  # [N, L]
    mask: Tensor,  # [N, L]
    *,
    global_tokens: Count | None = None,
    global_seqs: Count | None = None,
) -> LossOut:
    """The loss ``spec`` describes on these tokens; ``global_*`` as in :func:`vlmrl.algos.agg_loss`."""
    dual = {} if spec.dual_clip_c is None else {"dual_clip_c": spec.dual_clip_c}
    return compute_policy_loss(
        spec.name, logp, old_logp, adv, mask, clip_low=spec.clip_low, clip_high=spec.clip_high,
        agg=spec.agg, norm_const=spec.norm_const, global_tokens=global_tokens, global_seqs=global_seqs,
        **dual,
    )  # fmt: skip
