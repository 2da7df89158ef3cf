"""Decode attention over a shared prompt equals attention over the prompt repeated per completion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from vlmrl.rollout.prefix_attention import ATTENTION_NAME, PrefixCache, prefix_attention, prefix_decoding


class _Layer(torch.nn.Module):
    def __init__(self, idx: int):
        super().__init__()
        self.layer_idx = idx


@pytest.mark.parametrize("heads_q,heads_kv", [(4, 4), (8, 2)])
def test_prefix_attention_equals_sdpa_over_the_repeated_cache(heads_q, heads_kv):
    g = torch.Generator().manual_seed(0)
    b, n, p, d, steps = 3, 4, 7, 16, 5
    cache = DynamicCache()
    pk = [torch.randn(b, heads_kv, p, d, generator=g) for _ in range(2)]
    pv = [torch.randn(b, heads_kv, p, d, generator=g) for _ in range(2)]
    for i in range(2):
        cache.update(pk[i], pv[i], i)
    mask = torch.ones(b, p, dtype=torch.long)
    mask[0, :3] = 0  # left padding on two prompts
    mask[2, :1] = 0
    pc = PrefixCache(cache, mask, n, max_new_tokens=steps)
    rows = b * n
    gen_k = [[] for _ in range(2)]
    gen_v = [[] for _ in range(2)]
    for t in range(steps):
        for i in range(2):
            q = torch.randn(rows, heads_q, 1, d, generator=g)
            k = torch.randn(rows, heads_kv, 1, d, generator=g)
            v = torch.randn(rows, heads_kv, 1, d, generator=g)
            gen_k[i].append(k)
            gen_v[i].append(v)
            kg, vg = pc.update(k, v, i)
            assert kg.shape[2] == t + 1 and pc.get_seq_length(i) == p + t + 1
            out, _ = prefix_attention(_Layer(i), q, kg, vg, None, scaling=d**-0.5, prefix_cache=pc)
            # the plain way: the prompt repeated n times, concatenated with the row's own tokens
            full_k = torch.cat([pk[i].repeat_interleave(n, 0), *gen_k[i]], 2)
            full_v = torch.cat([pv[i].repeat_interleave(n, 0), *gen_v[i]], 2)
            keep = torch.cat([mask.repeat_interleave(n, 0), torch.ones(rows, t + 1, dtype=torch.long)], 1)
            rep = heads_q // heads_kv
            keep = keep.bool()[:, None, None, :]
            ref = F.scaled_dot_product_attention(
                q, full_k.repeat_interleave(rep, 1), full_v.repeat_interleave(rep, 1), attn_mask=keep
            )
            torch.testing.assert_close(out, ref.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_prefix_attention_refuses_a_prompt_pass():
    with pytest.raises(RuntimeError, match=ATTENTION_NAME):
        x = torch.zeros(2, 4, 3, 8)  # three query positions: a prompt pass, not a decode step
        prefix_attention(_Layer(0), x, x, x, None)


def test_prefix_decoding_restores_the_models_attention_even_on_error(tiny_policy):
    model = tiny_policy.model
    config = model.config.get_text_config(decoder=True)
    before = config._attn_implementation
    with pytest.raises(ValueError), prefix_decoding(model):
        assert config._attn_implementation == ATTENTION_NAME
        raise ValueError("boom")
    assert config._attn_implementation == before
