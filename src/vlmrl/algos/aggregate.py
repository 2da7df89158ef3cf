"""Reduce a per-token loss matrix ``[N, L]`` to the scalar that is back-propagated.

The choice is a real algorithmic knob (it decides how much each token and each response weighs):

  ``token_mean``               ``sum_{i,t} m l / T``                          DAPO (Yu et al. 2025)
  ``seq_mean_token_mean``      ``(1/S) sum_i [sum_t m l / sum_t m]``          GRPO paper, GSPO
  ``seq_mean_token_sum``       ``(1/S) sum_i sum_t m l``
  ``seq_mean_token_sum_norm``  ``(1/S) sum_i sum_t m l / C``                  Dr. GRPO (Liu et al. 2025)

with ``m`` the mask, ``T`` the number of valid tokens, ``S`` the number of responses that have
at least one valid token (fully masked rows are padding and count for nothing) and ``C`` a
constant (``norm_const``; default ``L``, the padded width; Dr. GRPO uses the max generation length).

Gradient accumulation / data parallel: the normalisers ``T`` and ``S`` are by default those of
the tensor passed in, so averaging micro-batch losses is *not* the full-batch loss when
micro-batches hold different token counts. Pass ``global_tokens`` (``T`` of the whole
optimizer-step batch) or ``global_seqs`` (``S`` of that batch) to every micro-batch call, then
**sum** (do not average) the micro-batch losses: ``sum_k agg(mb_k) == agg(full batch)`` exactly,
for values and gradients. Under DDP, which averages gradients over ``W`` ranks, use the counts
all-reduced over ranks and multiply each loss by ``W`` (or sum gradients instead of averaging).
For ``seq_mean_token_sum_norm`` pass the configured max response length as ``norm_const``, since
the padded width ``L`` changes from micro-batch to micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import torch
from torch import Tensor

from vlmrl.algos._registry import resolve


class LossAgg(StrEnum):
    """Names of the loss aggregation modes (see the module docstring for the formulas)."""

    TOKEN_MEAN = "token_mean"
    SEQ_MEAN_TOKEN_MEAN = "seq_mean_token_mean"
    SEQ_MEAN_TOKEN_SUM = "seq_mean_token_sum"
    SEQ_MEAN_TOKEN_SUM_NORM = "seq_mean_token_sum_norm"


Count = int | float | Tensor
AggFn = Callable[[Tensor, Tensor, float | None, Count | None, Count | None], Tensor]


def _count(default: Tensor, override: Count | None) -> Tensor | float:
    """The normaliser: ``override`` when given, else ``default`` (clamped so an empty batch gives 0)."""
    return default.clamp(min=1) if override is None else override


def _seq_count(m: Tensor, global_seqs: Count | None) -> Tensor | float:
    return _count((m.sum(-1) > 0).sum().to(m.dtype), global_seqs)  # []


def _token_mean(x: Tensor, m: Tensor, c: float | None, gt: Count | None, gs: Count | None) -> Tensor:
    return (x * m).sum() / _count(m.sum(), gt)  # []


def _seq_mean_token_mean(x: Tensor, m: Tensor, c: float | None, gt: Count | None, gs: Count | None) -> Tensor:
    per_seq = (x * m).sum(-1) / m.sum(-1).clamp(min=1)  # [N]; a padding row is 0 / 1 = 0
    return per_seq.sum() / _seq_count(m, gs)  # []


def _seq_mean_token_sum(x: Tensor, m: Tensor, c: float | None, gt: Count | None, gs: Count | None) -> Tensor:
    return (x * m).sum() / _seq_count(m, gs)  # []


def _seq_mean_token_sum_norm(
    x: Tensor, m: Tensor, c: float | None, gt: Count | None, gs: Count | None
) -> Tensor:
    const = float(m.shape[-1]) if c is None else c
    return (x * m).sum() / const / _seq_count(m, gs)  # []


AGGREGATORS: dict[LossAgg, AggFn] = {
    LossAgg.TOKEN_MEAN: _token_mean,
    LossAgg.SEQ_MEAN_TOKEN_MEAN: _seq_mean_token_mean,
    LossAgg.SEQ_MEAN_TOKEN_SUM: _seq_mean_token_sum,
    LossAgg.SEQ_MEAN_TOKEN_SUM_NORM: _seq_mean_token_sum_norm,
}


def agg_loss(
    loss_mat: Tensor,
    mask: Tensor,
    mode: str | LossAgg = LossAgg.TOKEN_MEAN,
    norm_const: float | None = None,
    *,
    global_tokens: Count | None = None,
    global_seqs: Count | None = None,
) -> Tensor:
    """Aggregate ``loss_mat [N, L]`` over the valid tokens of ``mask [N, L]`` into a float32 scalar.

    ``mode`` is a :class:`LossAgg`; ``norm_const`` is ``C`` of ``seq_mean_token_sum_norm``
    (ignored otherwise); ``global_tokens`` replaces ``T`` in ``token_mean`` and ``global_seqs``
    replaces ``S`` in the ``seq_mean_*`` modes (micro-batching, see the module docstring).
    """
    fn = AGGREGATORS[resolve(LossAgg, mode, "loss aggregation mode")]
    # float32 throughout: a bf16 token count is already off by one above 256.
    m = mask.float()  # [N, L]
    x = torch.where(m.bool(), loss_mat.float(), 0.0)  # [N, L]; a nan/inf at padding stays out
    return fn(x, m, norm_const, global_tokens, global_seqs)  # []


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """``sum(x * m) / max(sum(m), 1)`` over all elements: the token mean used for metrics."""
    m = mask.float()  # [N, L]
    return (x.float() * m).sum() / m.sum().clamp(min=1)  # []


def global_counts(mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(T, S)`` of a mask: valid tokens and responses with at least one valid token.

    Call it on the whole optimizer-step batch (or sum it over micro-batches, and all-reduce over
    ranks) to get ``global_tokens`` / ``global_seqs`` for :func:`agg_loss`.
    """
    valid = mask.bool()  # [N, L]
    return valid.sum(), valid.any(-1).sum()  # [], []
