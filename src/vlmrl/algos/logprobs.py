"""Log-probability of the sampled tokens under the policy: the ``logp`` every loss consumes.

``logp_t = log softmax(z_t / T)[y_t] = z_t[y_t] / T - logsumexp(z_t / T)``: a gather and a
logsumexp, so the ``[N, L, V]`` log-softmax is never materialised. Computed in float32 from any
logits dtype (bf16 arithmetic would be off by far more than 1e-3), which is what lets the trainer
agree with the sampler's log-probs to ~1e-3. ``T`` must be the temperature the sampler's
log-probs refer to.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlmrl.algos._chunk import map_token_chunks


def token_logprobs(
    logits: Tensor, labels: Tensor, temperature: float = 1.0, chunk_size: int | None = None
) -> Tensor:
    """``log softmax(logits / temperature)`` gathered at ``labels``: ``[N, L, V], [N, L] -> [N, L]``.

    ``logits[:, t]`` must already be the prediction for ``labels[:, t]`` (shifted by the caller).
    Negative labels (e.g. ``-100`` padding) give 0. ``chunk_size`` bounds memory to that many
    tokens at a time (see :func:`vlmrl.algos._chunk.map_token_chunks`). The result is float32.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    def rows(z: Tensor, y: Tensor) -> Tensor:
        z = z.float() / temperature  # [C, V]
        picked = z.gather(-1, y.clamp(min=0)[:, None]).squeeze(-1)  # [C]
        return torch.where(y >= 0, picked - torch.logsumexp(z, -1), 0.0)  # [C]

    return map_token_chunks(rows, logits, labels, chunk_size=chunk_size)  # [N, L]
