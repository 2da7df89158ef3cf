"""Token log-probs and entropy from logits: hand values, agreement with torch, chunking."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from vlmrl.algos import entropy_from_logits, entropy_from_logits_chunked, token_logprobs


def logits_and_labels(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(2, 5, 11, generator=gen), torch.randint(0, 11, (2, 5), generator=gen)


def test_entropy_uniform_is_log_v() -> None:
    assert_close(entropy_from_logits(torch.full((2, 3, 7), 1.5)), torch.full((2, 3), math.log(7)))


def test_entropy_by_hand_and_peaked() -> None:
    # p = (1/2, 1/4, 1/4): H = 0.5 log 2 + 2 * 0.25 log 4 = 1.5 log 2 = 1.039721.
    p = torch.tensor([[[0.5, 0.25, 0.25]]])
    assert entropy_from_logits(p.log()).item() == pytest.approx(1.5 * math.log(2))
    # A near one-hot distribution: H -> 0 without nan, even with huge logits.
    peaked = torch.tensor([[[1000.0, 0.0, -1000.0]]])
    assert entropy_from_logits(peaked).item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_chunked_matches_values_and_gradients() -> None:
    logits, _ = logits_and_labels()
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ha, hb = entropy_from_logits(a), entropy_from_logits_chunked(b, chunk_size=3)  # 10 tokens: 3+3+3+1
    assert_close(hb, ha)
    ha.sum().backward()
    hb.sum().backward()
    assert_close(b.grad, a.grad)


def test_bf16_logits_give_float32() -> None:
    logits, labels = logits_and_labels()
    bf = logits.bfloat16()
    assert entropy_from_logits(bf).dtype == torch.float32
    lp = token_logprobs(bf, labels)
    assert lp.dtype == torch.float32
    # Same as the float32 computation on the (rounded) bf16 values.
    assert_close(lp, token_logprobs(bf.float(), labels))


def test_token_logprobs_by_hand() -> None:
    # logits (0, log 3): p = (1/4, 3/4); log p[1] = log 0.75 = -0.287682.
    # T = 2: logits / 2 = (0, log sqrt 3); p[1] = sqrt3 / (1 + sqrt3) = 0.633975; log = -0.455746.
    logits, label = torch.tensor([[[0.0, math.log(3)]]]), torch.tensor([[1]])
    assert token_logprobs(logits, label).item() == pytest.approx(math.log(0.75))
    s3 = math.sqrt(3)
    assert token_logprobs(logits, label, temperature=2.0).item() == pytest.approx(math.log(s3 / (1 + s3)))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_equals_log_softmax_gather(temperature: float) -> None:
    logits, labels = logits_and_labels()
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ref = (a / temperature).log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1)
    out = token_logprobs(b, labels, temperature=temperature, chunk_size=4)
    assert_close(out, ref)
    ref.sum().backward()
    out.sum().backward()
    assert_close(b.grad, a.grad)


def test_negative_labels_give_zero() -> None:
    logits, labels = logits_and_labels()
    labels[1, 3:] = -100
    out = token_logprobs(logits, labels)
    assert (out[1, 3:] == 0).all() and (out[0] < 0).all()


def test_bad_arguments() -> None:
    logits, labels = logits_and_labels()
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(logits, labels, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        entropy_from_logits_chunked(logits, chunk_size=0)
