"""Apply a per-token function of the logits chunk by chunk, to bound peak memory."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def map_token_chunks(
    fn: Callable[..., Tensor], logits: Tensor, *per_token: Tensor, chunk_size: int | None = None
) -> Tensor:
    """``fn(logits [C, V], *per_token [C]) -> [C]`` over the flattened tokens of ``logits [..., V]``.

    With ``chunk_size`` set, ``fn`` runs on ``chunk_size`` tokens at a time, so only one chunk's
    float32 intermediates (``[C, V]``) exist at once. When a gradient is needed each chunk is
    activation-checkpointed: backward recomputes the chunk rather than keeping every chunk's
    intermediates alive. Without ``chunk_size`` it is a single call. Returns ``logits.shape[:-1]``.
    """
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])  # [T, V]
    extras = [x.reshape(-1) for x in per_token]  # [T] each
    n = flat.shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(flat, *extras).reshape(lead)  # [...]
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    use_ckpt = torch.is_grad_enabled() and logits.requires_grad
    outs = []
    for s in range(0, n, chunk_size):
        args = (flat[s : s + chunk_size], *(x[s : s + chunk_size] for x in extras))  # [C, V], [C]...
        outs.append(checkpoint(fn, *args, use_reentrant=False) if use_ckpt else fn(*args))  # [C]
    return torch.cat(outs).reshape(lead)  # [...]
