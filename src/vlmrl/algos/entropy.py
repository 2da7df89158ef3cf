"""Token entropy of the policy, ``H_t = -sum_v p_v log p_v``, computed from logits stably.

``H = logsumexp(z) - sum_v softmax(z)_v z_v`` (no ``log`` of a probability that may underflow to
0). Computed in float32 whatever the logits' dtype; the result is float32. Used as a diagnostic
(entropy collapse, DAPO §3.1) and for an optional entropy bonus.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlmrl.algos._chunk import map_token_chunks


def _entropy_rows(z: Tensor) -> Tensor:
    z = z.float()  # [C, V]
    return torch.logsumexp(z, -1) - (torch.softmax(z, -1) * z).sum(-1)  # [C]


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy ``[N, L]`` of ``softmax(logits [N, L, V])``. Uniform logits give ``log V``."""
    return map_token_chunks(_entropy_rows, logits)  # [N, L]


def entropy_from_logits_chunked(logits: Tensor, chunk_size: int = 1024) -> Tensor:
    """As :func:`entropy_from_logits`, ``chunk_size`` tokens at a time (checkpointed under grad).

    Peak extra memory is ``chunk_size * V`` floats instead of ``N * L * V``; same values.
    """
    return map_token_chunks(_entropy_rows, logits, chunk_size=chunk_size)  # [N, L]
