"""The fast paths compute what the plain ones compute.

- shared-prompt training forward (each prompt once per micro-batch, its KV cache shared by the
  group) vs one full prompt+completion forward per rollout: same log-probs, same gradients;
- shared-prefill sampler vs ``model.generate``: same tokens from the same seed (same
  distribution, same RNG draws), same log-probs.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlmrl.data import build_messages, generate
from vlmrl.rollout.batch import encode_prompts
from vlmrl.rollout.hf_engine import HFEngine
from vlmrl.rollout.sampler import fast_sampling_supported
from vlmrl.rollout.shared_prompt import rollout_logprobs, shared_prompt_supported


def _enc(policy):
    """Three prompts of different lengths (left padding); the second has two images of different sizes."""
    a, b, c = (generate(task, 1, seed=i)[0] for i, task in enumerate(("count", "chart", "color")))
    b.images = [b.images[0], Image.new("RGB", (112, 224), (200, 30, 30))]
    b.problem = b.problem + " Compare with <image> too, and explain at length please."
    samples = [a, b, c]
    messages = [build_messages(s, "answer") for s in samples]
    return encode_prompts(policy.processor, messages, [s.images for s in samples])


def _batch(policy, n=4, shared_prefill=True, temperature=0.9, top_p=1.0, seed=0, greedy=False):
    engine = HFEngine(
        policy, max_new_tokens=8, temperature=temperature, top_p=top_p, shared_prefill=shared_prefill,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    return engine.generate(_enc(policy), n, greedy=greedy)


def _grads(model, batch, rows, shared):
    model.zero_grad(set_to_none=True)
    lp, logits = rollout_logprobs(model, batch, rows, 0.9, shared=shared)
    m = batch.completion_mask[rows]
    # a loss that touches log-probs and logits (as the policy loss + entropy do)
    ((lp * m).sum() + 1e-3 * (logits.logsumexp(-1) * m).sum()).backward()
    return lp.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "rows",
    # whole groups (cache broadcast) / uneven groups in order / mixed order (both: cache gathered)
    [list(range(8)), [0, 1, 2, 3, 5, 6, 8], [5, 0, 1, 11, 4, 7, 6]],
)
def test_shared_prompt_forward_gives_the_plain_logprobs_and_gradients(tiny_policy, rows):
    model = tiny_policy.model.train()
    batch = _batch(tiny_policy)
    assert shared_prompt_supported(model, batch)  # the comparison below is not vacuous
    lp_plain, g_plain = _grads(model, batch, rows, shared=False)
    lp_fast, g_fast = _grads(model, batch, rows, shared=True)
    m = batch.completion_mask[rows]
    assert ((lp_fast - lp_plain).abs() * m).max() < 1e-5
    assert g_plain.keys() == g_fast.keys() and len(g_plain) == len(list(model.parameters()))
    for k, g in g_plain.items():
        scale = max(1.0, g.abs().max().item())
        assert (g_fast[k] - g).abs().max().item() <= 1e-5 * scale, k


def test_shared_prompt_forward_falls_back_where_it_does_not_apply(tiny_policy):
    model = tiny_policy.model
    batch = _batch(tiny_policy, n=2)
    model.activation_checkpointing_enable()
    try:
        assert not shared_prompt_supported(model, batch)  # recomputation would update the cache twice
    finally:
        model.activation_checkpointing_disable()
    assert shared_prompt_supported(model, batch)
    # a processor output neither path knows how to place (videos are known: tests/test_video.py)
    unknown = dict(batch.prompt_inputs, pixel_values_audio=torch.zeros(1))
    batch.prompt_inputs = unknown
    assert not shared_prompt_supported(model, batch)
    assert not fast_sampling_supported(model, unknown)


def test_shared_prefill_sampler_draws_what_generate_draws(tiny_policy):
    assert fast_sampling_supported(tiny_policy.model, _enc(tiny_policy))
    for kw in ({}, {"top_p": 0.8}, {"greedy": True, "n": 1}):
        fast = _batch(tiny_policy, shared_prefill=True, seed=3, **kw)
        slow = _batch(tiny_policy, shared_prefill=False, seed=3, **kw)
        assert torch.equal(fast.completion_ids, slow.completion_ids), kw
        assert fast.finish_reasons == slow.finish_reasons
        m = fast.completion_mask
        assert ((fast.sampler_logprobs - slow.sampler_logprobs).abs() * m).max() < 1e-5, kw
