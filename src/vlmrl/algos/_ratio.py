"""The importance ratio every policy loss starts from, and the ratio metrics they all report.

Shared by :mod:`vlmrl.algos.losses` (the PPO-clip family) and :mod:`vlmrl.algos.gated_losses`
(SAPO, CISPO), so the clamp and the metric definitions live in one place.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlmrl.algos.aggregate import masked_mean

LOG_RATIO_CLAMP = 20.0
"""``|log pi/pi_old|`` is clamped to this before ``exp`` (veRL does the same)."""


def clamped_log_ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """``clamp(logp - sg(old_logp), ±20)`` in float32 (bf16 log-probs are off by ~1e-2). ``[N, L]``."""
    return (logp.float() - old_logp.detach().float()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


@torch.no_grad()
def ratio_metrics(
    ratio: Tensor, tok_log_ratio: Tensor, mask: Tensor, extra: dict[str, Tensor] | None = None
) -> dict[str, float]:
    """``approx_kl`` (k3 of KL(old || new): ``r - 1 - log r``), ``ratio_mean``, ``ratio_max`` over the
    valid tokens, plus ``extra`` (scalar tensors), as python floats with one device sync."""
    valid = mask.bool()  # [N, L]
    values = {
        "approx_kl": masked_mean(tok_log_ratio.exp() - 1.0 - tok_log_ratio, valid),
        "ratio_mean": masked_mean(ratio, valid),
        "ratio_max": torch.where(valid, ratio, torch.zeros_like(ratio)).max(),
    } | (extra or {})
    return dict(zip(values, torch.stack(list(values.values())).float().tolist(), strict=True))
