"""Advantage estimators against hand-computed values (derivations in the comments)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from vlmrl.algos import (
    ADVANTAGE_ESTIMATORS,
    AdvantageEstimator,
    broadcast_advantages,
    compute_advantages,
    group_stats,
    segment_advantages,
)


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


def ids(*xs: int) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.long)


ONE_GROUP = ids(0, 0, 0, 0)


def test_registry_covers_every_name() -> None:
    assert set(ADVANTAGE_ESTIMATORS) == set(AdvantageEstimator)
    assert AdvantageEstimator("grpo") is AdvantageEstimator.GRPO


def test_grpo_one_group() -> None:
    # [1, 0, 0, 1]: mean 0.5; deviations ±0.5; unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.57735.
    # A = ±0.5 / 0.57735 = ±0.86603.
    adv = compute_advantages("grpo", t(1, 0, 0, 1), ONE_GROUP)
    assert_close(adv, t(0.86603, -0.86603, -0.86603, 0.86603), atol=1e-4, rtol=0)


def test_grpo_two_interleaved_groups() -> None:
    # Group 7 = positions 0, 2, 4 -> [1, 0, 1]; group 3 = positions 1, 3, 5 -> [0, 1, 1].
    # Each: mean 2/3, deviations (1/3, -2/3, 1/3) up to order, var = (1/9 + 4/9 + 1/9) / 2 = 1/3,
    # std = 0.57735, so a 1 gets (1/3)/0.57735 = 0.57735 and a 0 gets (-2/3)/0.57735 = -1.15470.
    adv = compute_advantages("grpo", t(1, 0, 0, 1, 1, 1), ids(7, 3, 7, 3, 7, 3))
    assert_close(adv, t(0.57735, -1.15470, -1.15470, 0.57735, 0.57735, 0.57735), atol=1e-4, rtol=0)


def test_group_ids_need_not_be_contiguous_or_equal_size() -> None:
    # Same groups under a permutation and odd ids give the same per-sample advantages.
    r, g = t(3, 1, 4, 1, 5, 9, 2), ids(-5, 10**9, -5, 10**9, -5, 42, 10**9)
    perm = torch.tensor([6, 2, 0, 5, 1, 4, 3])
    for name in AdvantageEstimator:
        a = compute_advantages(name, r, g)
        assert_close(compute_advantages(name, r[perm], g[perm]), a[perm])


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo", "grpo_passk"])
def test_size_one_group_gets_zero(name: str) -> None:
    # Group 0 = [1, 0]; group 1 = [5] alone -> 0 whatever its reward.
    adv = compute_advantages(name, t(1, 0, 5), ids(0, 0, 1))
    assert adv[2].item() == 0.0


def test_grpo_mixed_sizes() -> None:
    # Group [1, 0]: mean 0.5, unbiased std = sqrt((0.25 + 0.25) / 1) = 0.70711 -> ±0.70711.
    adv = compute_advantages("grpo", t(1, 0, 5), ids(0, 0, 1))
    assert_close(adv, t(0.70711, -0.70711, 0.0), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(AdvantageEstimator))
def test_constant_group_gets_zero(name: str) -> None:
    adv = compute_advantages(name, t(0.3, 0.3, 0.3), ids(1, 1, 1))
    assert_close(adv, torch.zeros(3))


def test_drgrpo_no_std_division() -> None:
    # [1, 0, 0, 1] - 0.5 = ±0.5; [2, 0] in another group: mean 1 -> ±1 (a GRPO std would undo this).
    adv = compute_advantages("drgrpo", t(1, 0, 0, 1, 2, 0), ids(0, 0, 0, 0, 1, 1))
    assert_close(adv, t(0.5, -0.5, -0.5, 0.5, 1.0, -1.0))


def test_rloo_hand_values() -> None:
    # [1, 0, 0]: A_0 = 1 - (0 + 0)/2 = 1; A_1 = 0 - (1 + 0)/2 = -0.5; A_2 = -0.5.
    # Check the identity: G/(G-1) (r - mean) = 3/2 * (1 - 1/3) = 1.
    adv = compute_advantages("rloo", t(1, 0, 0), ids(4, 4, 4))
    assert_close(adv, t(1.0, -0.5, -0.5))


def test_rloo_matches_explicit_leave_one_out() -> None:
    gen = torch.Generator().manual_seed(0)
    r = torch.rand(12, generator=gen)
    g = ids(0, 1, 2, 0, 1, 0, 2, 0, 1, 2, 2, 2)  # sizes 4, 3, 5
    expected = torch.stack([r[i] - r[(g == g[i]) & (torch.arange(12) != i)].mean() for i in range(12)])
    assert_close(compute_advantages("rloo", r, g), expected)


def test_reinforce_pp_whitens_over_the_batch() -> None:
    # Groups are ignored. [1, 0, 0, 0]: batch mean 0.25 -> (0.75, -0.25, -0.25, -0.25);
    # unbiased var = (0.5625 + 3 * 0.0625) / 3 = 0.25, std 0.5 -> A = (1.5, -0.5, -0.5, -0.5).
    adv = compute_advantages("reinforce_pp", t(1, 0, 0, 0), ids(0, 1, 2, 3))
    assert_close(adv, t(1.5, -0.5, -0.5, -0.5), atol=1e-5, rtol=0)


def test_reinforce_pp_baseline_subtracts_group_mean_first() -> None:
    # Groups [1, 0] and [1, 1]. Plain REINFORCE++: batch mean 0.75 -> (.25, -.75, .25, .25),
    # var = (3 * .0625 + .5625) / 3 = .25, std .5 -> (0.5, -1.5, 0.5, 0.5).
    # Baseline: group-centred (0.5, -0.5, 0, 0), batch mean 0, var = 0.5 / 3, std = 0.40825
    # -> (1.22474, -1.22474, 0, 0): the solved prompt no longer gets credit.
    r, g = t(1, 0, 1, 1), ids(0, 0, 1, 1)
    assert_close(compute_advantages("reinforce_pp", r, g), t(0.5, -1.5, 0.5, 0.5), atol=1e-5, rtol=0)
    expected = t(1.22474, -1.22474, 0.0, 0.0)
    assert_close(compute_advantages("reinforce_pp_baseline", r, g), expected, atol=1e-4, rtol=0)


def test_grpo_passk_only_best_gets_advantage() -> None:
    # Group A = [1, 0, 0.5]: max 1, second 0.5, gap 0.5; unbiased std of [1, 0, .5] = 0.5 -> 1.0.
    # Group B = [2, 2]: tie for the max, gap 0 -> everyone 0.
    adv = compute_advantages("grpo_passk", t(1, 0, 0.5, 2, 2), ids(5, 5, 5, 7, 7))
    assert_close(adv, t(1.0, 0, 0, 0, 0), atol=1e-5, rtol=0)
    adv = compute_advantages("grpo_passk", t(1, 0, 0.5), ids(5, 5, 5), normalize_std=False)
    assert_close(adv, t(0.5, 0, 0))


def test_integer_rewards_and_eps() -> None:
    # Integer rewards are promoted to float; eps enters as std + eps: 0.5 / (0.57735 + 1) = 0.31699.
    adv = compute_advantages("grpo", torch.tensor([1, 0, 0, 1]), ONE_GROUP, eps=1.0)
    assert_close(adv, t(0.31699, -0.31699, -0.31699, 0.31699), atol=1e-4, rtol=0)


def test_group_stats() -> None:
    mean, std, n = group_stats(t(1, 0, 5, 0), ids(2, 2, 9, 2))
    assert_close(mean, t(1 / 3, 1 / 3, 5, 1 / 3))
    assert_close(std, t(math.sqrt(1 / 3), math.sqrt(1 / 3), 0, math.sqrt(1 / 3)))
    assert_close(n, t(3, 3, 1, 3))


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'gpro'; allowed: grpo, drgrpo"):
        compute_advantages("gpro", t(1, 0), ids(0, 0))
    with pytest.raises(ValueError, match="same length"):
        compute_advantages("grpo", t(1, 0), ids(0, 0, 0))
    with pytest.raises(ValueError, match="integer"):
        compute_advantages("grpo", t(1, 0), t(0, 0))


def test_broadcast_advantages() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert_close(broadcast_advantages(t(2, -1), mask), torch.tensor([[2.0, 2, 0], [-1, 0, 0]]))


def test_segment_advantages() -> None:
    # Row 0: tokens 0-1 perception, token 2 answer; row 1: token 0 perception, tokens 1-2 answer.
    perception = torch.tensor([[1, 1, 0], [1, 0, 0]])
    answer = torch.tensor([[0, 0, 1], [0, 1, 1]])
    adv = {"perception": t(0.5, -0.5), "answer": t(1.0, 2.0)}
    out = segment_advantages(adv, {"perception": perception, "answer": answer})
    assert_close(out, torch.tensor([[0.5, 0.5, 1.0], [-0.5, 2.0, 2.0]]))
    # Overlapping masks add: a whole-response mask plus a perception bonus.
    masks = {"all": torch.ones(2, 3), "perception": perception}
    out = segment_advantages({"all": t(1, 1), "perception": t(0.5, 0.5)}, masks)
    assert_close(out, torch.tensor([[1.5, 1.5, 1.0], [1.5, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="segment names differ"):
        segment_advantages({"answer": t(1, 1)}, {"perception": perception})
