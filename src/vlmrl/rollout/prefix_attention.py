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

The training forward's completion pass (:mod:`vlmrl.rollout.shared_prompt`) uses the same
function with all ``L`` completion tokens at once (causal among them, completion padding hidden);
there the prompt's keys carry gradients, so each completion's gradient sums into the one prompt pass.

It plugs into transformers as an attention function (:data:`ATTENTION_NAME`, registered with
``AttentionInterface``) that is switched on only around those calls (:func:`prefix_attention_on`);
the prompt pass keeps the model's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: The attention implementation name the decode steps run under.
ATTENTION_NAME = "vlmrl_shared_prefix"


class PrefixCache:
    """Each layer's prompt part (once per prompt) and completion part (per row).

    Duck-types what a transformers text model asks of its cache (``update``, ``get_seq_length``);
    the attention function reads the prompt part. Rows are grouped by prompt: row ``b·n + j`` is
    completion ``j`` of prompt ``b``.
    """

    def __init__(
        self,
        prompt_cache,
        mask: torch.Tensor,
        n: int,
        max_new_tokens: int | None = None,
        completion_mask: torch.Tensor | None = None,
    ):
        """``prompt_cache``: the prompt pass's cache (per-layer ``keys``/``values`` ``[B, H, P, D]``);
        ``mask``: the prompt's attention mask ``[B, P]`` (1 = token, 0 = left padding).

        Decoding: ``max_new_tokens`` sizes the in-place buffer the completions' keys go to.
        Training (``None``): the completion's tokens come in one pass and are used as given, so the
        gradient flows through them; ``completion_mask [B·n, L]`` hides padding keys there.
        """
        layers = prompt_cache.layers
        self.prompt_keys = [x.keys for x in layers]  # [B, H, P, D] each
        self.prompt_values = [x.values for x in layers]
        k0 = self.prompt_keys[0]
        self.n = n
        self.prompt_bias = _bias(mask, k0)[:, None, None, :]  # [B, 1, 1, P]: 0 on tokens, -inf on padding
        self.completion_bias = None if completion_mask is None else _bias(completion_mask, k0)
        self.prompt_len = k0.shape[2]
        self.lengths = [0] * len(layers)
        self.keys: list[torch.Tensor] | None = None
        self.values: list[torch.Tensor] | None = None
        if max_new_tokens is not None:
            rows, heads = k0.shape[0] * n, k0.shape[1]
            dk, dv = k0.shape[3], self.prompt_values[0].shape[3]
            self.keys = [k0.new_empty(rows, heads, max_new_tokens, dk) for _ in layers]  # [N, H, T, D]
            self.values = [k0.new_empty(rows, heads, max_new_tokens, dv) for _ in layers]

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Take the new tokens' ``[N, H, L, D]`` keys/values; return the completion part so far."""
        t = self.lengths[layer_idx]
        self.lengths[layer_idx] = t + key.shape[2]
        if self.keys is None or self.values is None:
            if t:
                raise RuntimeError("a training PrefixCache takes the whole completion in one pass")
            return key, value
        self.keys[layer_idx][:, :, t : t + key.shape[2]] = key
        self.values[layer_idx][:, :, t : t + key.shape[2]] = value
        t += key.shape[2]
        return self.keys[layer_idx][:, :, :t], self.values[layer_idx][:, :, :t]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.prompt_len + self.lengths[layer_idx]


def _bias(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``0`` where ``mask`` is 1, ``-inf`` where it is 0, in ``like``'s dtype and device."""
    zero = torch.zeros(mask.shape, dtype=like.dtype, device=like.device)
    return zero.masked_fill(mask.to(like.device) == 0, float("-inf"))


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
    """Attention of each row's ``L`` newest tokens over its prompt (shared) and its own completion.

    ``query [N, H_q, L, D]``; ``key``/``value``: the completion part ``[N, H_kv, t, D]`` from
    :meth:`PrefixCache.update`, whose last ``L`` are the queries' own (causal among them).
    Returns ``([N, L, H_q, D], None)`` as transformers' attention functions do.
    """
    if prefix_cache is None:
        raise RuntimeError(f"{ATTENTION_NAME} needs the PrefixCache passed as prefix_cache=")
    idx = module.layer_idx
    kp, vp = prefix_cache.prompt_keys[idx], prefix_cache.prompt_values[idx]  # [B, Hk, P, D]
    b, hk, p, d = kp.shape
    rows, hq, q_len = query.shape[:3]
    t = key.shape[2]
    n, g = prefix_cache.n, hq // hk
    scale = d**-0.5 if scaling is None else scaling

    def by_prompt(x: torch.Tensor) -> torch.Tensor:  # [N, Hk, g, L, X] -> [B, Hk, n·g·L, X]
        return x.reshape(b, n, hk, g * q_len, x.shape[-1]).transpose(1, 2).reshape(b, hk, n * g * q_len, -1)

    def by_row(x: torch.Tensor) -> torch.Tensor:  # [B, Hk, n·g·L, X] -> [N, Hk, g, L, X]
        return x.reshape(b, hk, n, g * q_len, x.shape[-1]).transpose(1, 2).reshape(rows, hk, g, q_len, -1)

    q = query.reshape(rows, hk, g, q_len, d)
    s_p = by_row(torch.matmul(by_prompt(q), kp.transpose(-1, -2)) * scale + prefix_cache.prompt_bias)
    s_g = torch.matmul(q, key[:, :, None].transpose(-1, -2)) * scale  # [N, Hk, g, L, t]
    if q_len > 1:  # query i is completion token t - L + i: it sees keys 0 .. t - L + i
        keys_at = torch.arange(t, device=query.device)
        queries_at = torch.arange(t - q_len, t, device=query.device)
        s_g = s_g.masked_fill(keys_at[None, :] > queries_at[:, None], float("-inf"))
    if prefix_cache.completion_bias is not None:
        s_g = s_g + prefix_cache.completion_bias[:, None, None, None, :t]
    w = torch.cat([s_p, s_g], dim=-1).softmax(-1)  # [N, Hk, g, L, P + t]
    out = by_row(torch.matmul(by_prompt(w[..., :p]), vp)) + torch.matmul(w[..., p:], value[:, :, None])
    return out.reshape(rows, hq, q_len, -1).transpose(1, 2), None  # [N, L, H_q, D]


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, prefix_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, lambda *args, **kwargs: None)  # the bias is ours


@contextmanager
def prefix_attention_on(model) -> Iterator[None]:
    """Inside the block, ``model``'s text attention runs :func:`prefix_attention`; restored after."""
    _register()
    config = model.config.get_text_config(decoder=True)
    before = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = before
