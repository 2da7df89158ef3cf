"""Loss aggregation modes on a ragged mask, by hand, and micro-batch invariance."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from vlmrl.algos import AGGREGATORS, LossAgg, agg_loss, global_counts

# Row 0 has 2 valid tokens (1, 2), row 1 has 1 (4); 3 and 5, 6 are padding.
LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_registry_covers_every_mode() -> None:
    assert set(AGGREGATORS) == set(LossAgg)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token_mean", 7 / 3),  # (1 + 2 + 4) / 3 tokens
        ("seq_mean_token_mean", 2.75),  # ((1 + 2) / 2 + 4 / 1) / 2 = (1.5 + 4) / 2
        ("seq_mean_token_sum", 3.5),  # ((1 + 2) + 4) / 2 sequences
        ("seq_mean_token_sum_norm", 7 / 6),  # ((1 + 2) / 3 + 4 / 3) / 2, C = L = 3
    ],
)
def test_modes_by_hand(mode: str, expected: float) -> None:
    assert agg_loss(LOSS, MASK, mode).item() == pytest.approx(expected)


def test_padding_row_counts_for_nothing() -> None:
    # A fully masked row (micro-batch padding) changes neither T nor S.
    loss = torch.cat([LOSS, torch.full((1, 3), 9.0)])
    mask = torch.cat([MASK, torch.zeros(1, 3, dtype=MASK.dtype)])
    for mode in LossAgg:
        assert agg_loss(loss, mask, mode).item() == pytest.approx(agg_loss(LOSS, MASK, mode).item())


def test_norm_const_and_global_overrides() -> None:
    # Dr. GRPO with C = 10: (3 + 4) / 10 / 2 = 0.35.
    assert agg_loss(LOSS, MASK, "seq_mean_token_sum_norm", norm_const=10).item() == pytest.approx(0.35)
    # token_mean with T = 14 (the whole step's tokens): 7 / 14 = 0.5.
    assert agg_loss(LOSS, MASK, "token_mean", global_tokens=14).item() == pytest.approx(0.5)
    # seq_mean_token_sum with S = 7: 7 / 7 = 1.
    assert agg_loss(LOSS, MASK, "seq_mean_token_sum", global_seqs=7).item() == pytest.approx(1.0)


def test_nan_at_padding_stays_out() -> None:
    loss = LOSS.clone()
    loss[1, 2] = float("nan")
    assert agg_loss(loss, MASK, "token_mean").item() == pytest.approx(7 / 3)


def test_empty_mask_gives_zero() -> None:
    for mode in LossAgg:
        assert agg_loss(LOSS, torch.zeros_like(MASK), mode).item() == 0.0


def test_global_counts() -> None:
    tokens, seqs = global_counts(torch.cat([MASK, torch.zeros(1, 3, dtype=MASK.dtype)]))
    assert (tokens.item(), seqs.item()) == (3, 2)


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown loss aggregation mode 'mean'; allowed: token_mean"):
        agg_loss(LOSS, MASK, "mean")


@pytest.mark.parametrize("mode", list(LossAgg))
def test_micro_batches_with_global_normalisers_sum_to_full_batch(mode: LossAgg) -> None:
    # 4 ragged rows split 1 + 3 (different token counts): with global T / S passed to each
    # micro-batch, sum_k agg(mb_k) == agg(full), in value and in gradient.
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 5, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    full_x = base.clone().requires_grad_(True)
    full = agg_loss(full_x, mask, mode, norm_const=8)
    full.backward()

    tokens, seqs = global_counts(mask)
    mb_x = base.clone().requires_grad_(True)
    total = sum(
        agg_loss(mb_x[rows], mask[rows], mode, norm_const=8, global_tokens=tokens, global_seqs=seqs)
        for rows in (slice(0, 1), slice(1, 4))
    )
    total.backward()
    assert_close(total, full)
    assert_close(mb_x.grad, full_x.grad)


def test_micro_batches_without_global_normaliser_differ() -> None:
    # Why the argument exists: averaging per-micro-batch token means over-weights the short rows.
    # Row a has 4 tokens of loss 1, row b 1 token of loss 3. Full token mean = (4 + 3) / 5 = 1.4;
    # mean of micro-batch means = (1 + 3) / 2 = 2.
    loss = torch.tensor([[1.0, 1, 1, 1], [3, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    naive = (agg_loss(loss[:1], mask[:1]) + agg_loss(loss[1:], mask[1:])) / 2
    assert naive.item() == pytest.approx(2.0)
    assert agg_loss(loss, mask).item() == pytest.approx(1.4)
