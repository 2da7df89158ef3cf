"""Counterfactual accuracy reward: pay a right answer only when the model needs the image for it.

``reward.counterfactual: blank | noise | shuffled`` (``none``: off). Each step, after the group's
completions are scored, one greedy pass answers the same prompts with the image replaced
(:func:`vlmrl.eval.blind.with_condition`): the policy's *blind answer* to each prompt. A right
sampled answer that the model also gives blind is one the question text alone produces, so its
accuracy is withheld:

    r'_i = r_i − w_acc · acc_i · blind_right_{g(i)}

where ``acc_i`` is completion ``i``'s accuracy part, ``w_acc`` the accuracy weight in
``reward.weights`` and ``blind_right_g`` is 1 when prompt ``g``'s blind answer is right. All
right answers to a prompt are the same answer (the gold one), so "right and equal to the blind
answer" is exactly "right while the blind answer is right": the accuracy reward itself decides
equality, with the same normalisation as the reward (no second answer parser).

What it does to learning: a prompt whose blind answer is right pays no accuracy to any
completion (its group has no accuracy spread, so no accuracy advantage); a prompt whose blind
answer is wrong pays as usual. Under a prior that is right most of the time, only the prompts
where the prior fails teach — and there they teach looking. Cost: one greedy generate over the
step's B prompts (not B × G), at ``rollout.max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vlmrl.data import Sample
from vlmrl.eval.blind import with_condition
from vlmrl.rewards.registry import RewardFn, get_reward
from vlmrl.rollout.batch import encode_samples

OFF = "none"
ACCURACY = "accuracy"


def withhold_blind_right(
    rewards: torch.Tensor,  # [N]
    accuracy: torch.Tensor,  # [N] accuracy part of each completion (0..1)
    blind_right: torch.Tensor,  # [P] 1.0 where prompt g's blind answer is right
    prompt_index: torch.Tensor,  # [N] long, completion i's prompt g(i)
    weight: float,
) -> torch.Tensor:
    """``rewards − weight · accuracy · blind_right[prompt_index]`` (the module docstring's r').

    >>> withhold_blind_right(torch.tensor([1.0, 0.1, 1.0]), torch.tensor([1.0, 0.0, 1.0]),
    ...                      torch.tensor([1.0, 0.0]), torch.tensor([0, 0, 1]), 0.9)
    tensor([0.1000, 0.1000, 1.0000])
    """
    return rewards - weight * accuracy * blind_right[prompt_index]  # [N]


@torch.no_grad()
def blind_right(
    engine,
    processor,
    template: str,
    samples: Sequence[Sample],
    condition: str,
    judge: RewardFn | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """``[P]``: 1.0 where the greedy answer to ``samples[g]`` under ``condition`` is right."""
    judge = judge or get_reward(ACCURACY)
    blind = with_condition(samples, condition, seed)
    enc = encode_samples(processor, blind, template)
    out = engine.generate(enc, 1, greedy=True)
    return torch.tensor([float(judge(t, s).total) for t, s in zip(out.texts, blind, strict=True)])


def pay_if_looking(ro, engine, processor, template: str, reward_cfg):
    """The scored round ``ro`` (a ``Rollouts``) with blind-right accuracy withheld from its rewards
    and the metrics ``reward/blind_right`` (share of prompts answered right blind) and
    ``reward/withheld`` (share of completions whose accuracy was withheld); unchanged when
    ``reward_cfg.counterfactual`` is ``none``."""
    if reward_cfg.counterfactual == OFF:
        return ro
    right = blind_right(engine, processor, template, ro.samples, reward_cfg.counterfactual)  # [P]
    acc = ro.parts.get(ACCURACY, torch.zeros_like(ro.rewards))  # [N]
    idx = ro.batch.prompt_index.to(torch.long)  # [N]
    weight = float(reward_cfg.weights.get(ACCURACY, 0.0))
    withheld = acc * right[idx]  # [N]
    metrics = {
        "reward/blind_right": float(right.mean()) if len(right) else 0.0,
        "reward/withheld": float((withheld > 0).float().mean()) if len(withheld) else 0.0,
    }
    ro.rewards = withhold_blind_right(ro.rewards, acc, right, idx, weight)
    ro.metrics |= metrics
    return ro
