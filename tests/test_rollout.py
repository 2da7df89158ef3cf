"""Rollouts: sampler log-probs equal the training forward's; vision tokens never reach training."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlmrl.data import build_messages, generate
from vlmrl.rollout.batch import completion_logprobs, encode_prompts, training_inputs
from vlmrl.rollout.hf_engine import HFEngine


def _mixed_prompts():
    """Three prompts of different lengths; the second has two images of different sizes."""
    a, b, c = (
        generate("count", 1, seed=0)[0],
        generate("chart", 1, seed=1)[0],
        generate("color", 1, seed=2)[0],
    )
    b.images = [b.images[0], Image.new("RGB", (112, 224), (200, 30, 30))]
    b.problem = b.problem + " Compare with <image> too, and explain at length please."
    return [a, b, c]


def _sample(policy, n=4, temperature=0.9, max_new_tokens=10):
    samples = _mixed_prompts()
    enc = encode_prompts(
        policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )
    torch.manual_seed(0)
    batch = HFEngine(policy, max_new_tokens=max_new_tokens, temperature=temperature).generate(enc, n)
    return enc, batch


def test_prompts_are_left_padded_with_mixed_lengths(tiny_policy):
    enc, _ = _sample(tiny_policy, n=1)
    mask = enc["attention_mask"]
    lengths = mask.sum(1)
    assert len(set(lengths.tolist())) == 3  # mixed prompt lengths
    assert (mask[:, -1] == 1).all()  # left padding: every prompt ends at the right edge
    assert int(enc["images_per_prompt"].sum()) == 4


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_policy_ratio_is_one_before_the_first_update(tiny_policy, temperature):
    _, batch = _sample(tiny_policy, temperature=temperature)
    inputs, _ = training_inputs(batch, list(range(batch.size)))
    assert "mm_token_type_ids" in inputs  # every processor output reaches the training forward
    with torch.no_grad():
        logp, _ = completion_logprobs(tiny_policy.model.eval(), inputs, batch.completion_ids, temperature)
    diff = ((logp - batch.sampler_logprobs).abs() * batch.completion_mask).max().item()
    assert diff < 1e-3
    ratio = torch.exp(logp - batch.sampler_logprobs)[batch.completion_mask.bool()]
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3)


def test_dropping_mm_token_type_ids_would_break_the_match(tiny_policy):
    """The guard above is not vacuous: without mm_token_type_ids the log-probs differ."""
    _, batch = _sample(tiny_policy)
    inputs, _ = training_inputs(batch, list(range(batch.size)))
    inputs.pop("mm_token_type_ids")
    with torch.no_grad():
        logp, _ = completion_logprobs(tiny_policy.model.eval(), inputs, batch.completion_ids, 0.9)
    assert ((logp - batch.sampler_logprobs).abs() * batch.completion_mask).max().item() > 1e-3


def test_microbatch_inputs_give_the_same_logprobs(tiny_policy):
    _, batch = _sample(tiny_policy)
    full, _ = training_inputs(batch, list(range(batch.size)))
    with torch.no_grad():
        lp_full, _ = completion_logprobs(tiny_policy.model.eval(), full, batch.completion_ids, 0.9)
        for rows in ([0, 5], [11], [3, 7, 8]):
            inp, _ = training_inputs(batch, rows)
            lp, _ = completion_logprobs(tiny_policy.model, inp, batch.completion_ids[rows], 0.9)
            m = batch.completion_mask[rows]
            assert ((lp - lp_full[rows]).abs() * m).max() < 1e-4


def test_sampling_never_emits_vision_tokens(tiny_policy):
    """Bias the output layer towards <|image_pad|>: sampling must still avoid every vision token."""
    model = tiny_policy.model
    head = model.lm_head if hasattr(model, "lm_head") else model.get_output_embeddings()
    banned = tiny_policy.banned_token_ids
    with torch.no_grad():
        saved = head.weight[banned].clone()
        head.weight[banned] = head.weight[banned] * 0 + 5.0 * model.model.language_model.norm.weight.sign()
    try:
        _, batch = _sample(tiny_policy, n=4, temperature=1.0)
    finally:
        with torch.no_grad():
            head.weight[banned] = saved
    assert not torch.isin(batch.completion_ids, torch.tensor(banned)).any()


def test_completions_with_vision_tokens_are_masked_not_trained(tiny_policy):
    engine = HFEngine(tiny_policy, max_new_tokens=4)
    enc, _ = _sample(tiny_policy, n=1)
    image_pad = tiny_policy.model.config.image_token_id
    seqs = torch.tensor([[50, 60, image_pad, 70], [50, 60, 70, 80], [90, 90, 90, 90]])
    batch = engine._finish(enc, seqs, torch.zeros(3, 4), 1)
    assert batch.finish_reasons[0] == "invalid_vision_token"
    assert batch.completion_mask[0].sum() == 0
    assert image_pad not in batch.completion_ids.tolist()[0]
    inputs, _ = training_inputs(batch, [0, 1, 2])
    with torch.no_grad():  # the training forward no longer crashes on a token/feature mismatch
        tiny_policy.model(**inputs)


def test_stop_token_ends_the_completion_and_is_trained(tiny_policy):
    engine = HFEngine(tiny_policy, max_new_tokens=5)
    enc, _ = _sample(tiny_policy, n=1)
    stop = tiny_policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    seqs = torch.tensor([[50, stop, 60, 60, 60], [50, 60, 70, 80, 90], [stop, 100, 100, 100, 100]])
    batch = engine._finish(enc, seqs, torch.zeros(3, 5), 1)
    assert batch.completion_lengths.tolist() == [2, 5, 1]
    assert batch.completion_mask.tolist()[0] == [1, 1, 0, 0, 0]
    assert batch.finish_reasons == ["stop", "length", "stop"]


def test_select_and_concat_keep_logprobs(tiny_policy):
    """DAPO refill regroups prompts from several rounds: log-probs must not change."""
    from vlmrl.rollout.batch import concat_batches, select_prompts

    _, batch = _sample(tiny_policy)
    merged = concat_batches(
        [select_prompts(batch, [2]), select_prompts(batch, [0, 1])], tiny_policy.tokenizer.pad_token_id
    )
    order = torch.cat([(batch.prompt_index == p).nonzero().flatten() for p in (2, 0, 1)])
    assert torch.equal(merged.completion_ids, batch.completion_ids[order])
    assert merged.prompt_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    with torch.no_grad():
        model = tiny_policy.model.eval()
        inp, _ = training_inputs(merged, list(range(merged.size)))
        lp, _ = completion_logprobs(model, inp, merged.completion_ids, 0.9)
    diff = ((lp - batch.sampler_logprobs[order]).abs() * merged.completion_mask).max().item()
    assert diff < 1e-3
