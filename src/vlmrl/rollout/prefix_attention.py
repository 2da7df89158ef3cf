"""Decode attention over a prompt shared by a group: the prompt's keys are read once per prompt.

The sampler prefills each of the B prompts once and then decodes ``n`` completions of each. A
plain KV cache repeats the prompt's keys and values ``n`` times and grows by concatenation
(every step copies the whole cache); each decode step then reads ``n`` identical copies. Here
the cache keeps two parts per layer (:class:`PrefixCache`):

- the prompt's ``K_p, V_p`` once per prompt, ``[B, H_kv, P, D]``, with its padding mask;
- the completions' own ``K_g, V_g`` in a preallocated ``[B·n, H_kv, T_max, D]`` buffer written
  in place (no concatenation).

For the query ``q`` of completion ``j`` of prompt ``b`` (one new token, every head),

    s_p = q · K_p[b]ᵀ · scale + mask_p[b]        (the n queries of a prompt in one matmul)
    s_g = q · K_g[j, :t]ᵀ · scale
    w   = softmax([s_p, s_g])                   (one softmax over both parts)
    out = w_p · V_p[b] + w_g · V_g[j, :t]

which is exactly the attention of that token over ``prompt + its own completion``: the same
keys, values, mask and scale as the repeated cache, only not copied (equal to float rounding;
the tests hold sampled tokens and log-probs equal). Grouped-query heads (``H_q = g · H_kv``) are
handled by viewing the query heads as ``[H_kv, g]``.

It plugs into transformers as an attention function (:data:`ATTENTION_NAME`, registered with
``AttentionInterface``) that the sampler switches on for the decode steps only
(:func:`prefix_decoding`); the prompt pass and the training forward keep the model's own.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: The attention implementation name the decode steps run under.
ATTENTION_NAME = "vlmrl_shared_prefix"


class PrefixCache:
    """The decode cache: each layer's prompt part (once per prompt) and completion part (per row).

    Duck-types what a transformers text model asks of its cache during decoding
    (``update``, ``get_seq_length``); the attention function reads the prompt part.
    """

    def __init__(self, prompt_cache, mask: torch.Tensor, n: int, max_new_tokens: int):
        """``prompt_cache``: the prefill's cache (per-layer ``keys``/``values`` ``[B, H, P, D]``);
        ``mask``: the prompt's attention mask ``[B, P]`` (1 = token, 0 = left padding)."""
        layers = prompt_cache.layers
        self.prompt_keys = [x.keys for x in layers]  # [B, H, P, D] each
        self.prompt_values = [x.values for x in layers]
        k0 = self.prompt_keys[0]
        self.n = n
        bias = torch.zeros(mask.shape, dtype=k0.dtype, device=k0.device)
        bias = bias.masked_fill(mask.to(k0.device) == 0, float("-inf"))
        self.prompt_bias = bias[:, None, None, :]  # [B, 1, 1, P]: 0 on tokens, -inf on padding
        rows, heads = k0.shape[0] * n, k0.shape[1]
        dk, dv = k0.shape[3], self.prompt_values[0].shape[3]
        self.keys = [k0.new_empty(rows, heads, max_new_tokens, dk) for _ in layers]  # [N, H, T, D]
        self.values = [k0.new_empty(rows, heads, max_new_tokens, dv) for _ in layers]
        self.lengths = [0] * len(layers)
        self.prompt_len = k0.shape[2]

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write the new token's ``[N, H, 1, D]`` keys/values in place; return the completion part so far."""
        t = self.lengths[layer_idx]
        self.keys[layer_idx][:, :, t : t + key.shape[2]] = key
        self.values[layer_idx][:, :, t : t + key.shape[2]] = value
        self.lengths[layer_idx] = t = t + key.shape[2]
        return self.keys[layer_idx][:, :, :t], self.values[layer_idx][:, :, :t]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.prompt_len + self.lengths[layer_idx]


def prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    prefix_cache: PrefixCache | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of one new token per row over its prompt (shared) and its own completion.

    ``query [N, H_q, 1, D]``; ``key``/``value``: the completion part ``[N, H_kv, t, D]`` from
    :meth:`PrefixCache.update`. Returns ``([N, 1, H_q, D], None)`` as transformers' functions do.
    """
    if prefix_cache is None or query.shape[2] != 1:
        raise RuntimeError(f"{ATTENTION_NAME} is for decode steps with a PrefixCache (one query per row)")
    idx = module.layer_idx
    kp, vp = prefix_cache.prompt_keys[idx], prefix_cache.prompt_values[idx]  # [B, Hk, P, D]
    b, hk, p, d = kp.shape
    rows, hq = query.shape[0], query.shape[1]
    n, g = prefix_cache.n, hq // hk
    scale = d**-0.5 if scaling is None else scaling
    q = query.view(b, n, hk, g, d).transpose(1, 2).reshape(b, hk, n * g, d)  # [B, Hk, n·g, D]
    s_p = torch.matmul(q, kp.transpose(-1, -2)) * scale + prefix_cache.prompt_bias  # [B, Hk, n·g, P]
    s_p = s_p.view(b, hk, n, g, p).transpose(1, 2).reshape(rows, hk, g, p)  # [N, Hk, g, P]
    s_g = torch.matmul(query.view(rows, hk, g, d), key.transpose(-1, -2)) * scale  # [N, Hk, g, t]
    w = torch.cat([s_p, s_g], dim=-1).softmax(-1)  # [N, Hk, g, P + t]
    w_p, w_g = w[..., :p], w[..., p:]
    w_p = w_p.reshape(b, n, hk, g, p).transpose(1, 2).reshape(b, hk, n * g, p)  # [B, Hk, n·g, P]
    out_p = torch.matmul(w_p, vp).view(b, hk, n, g, -1).transpose(1, 2).reshape(rows, hk, g, -1)
    out = out_p + torch.matmul(w_g, value)  # [N, Hk, g, D]
    return out.reshape(rows, 1, hq, -1), None


@functools.cache
def _register() -> None:
    """Register the attention function (and its no-op mask) with transformers, once per process."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, prefix_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, lambda *args, **kwargs: None)  # the bias is ours


@contextmanager
def prefix_decoding(model) -> Iterator[None]:
    """Inside the block, ``model``'s text attention runs :func:`prefix_attention`; restored after."""
    _register()
    config = model.config.get_text_config(decoder=True)
    before = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = before
