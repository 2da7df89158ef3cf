"""``sr1``: the name under which the Vision-SR1 check's result enters ``reward.weights``.

Vision-SR1 (Li et al. 2025, "Self-Rewarding Vision-Language Model via Reasoning
Decomposition") rewards a perception that is *self-contained*: the model, given only its own
description of the image and the question (no image), must still answer right. That needs the
model, which a reward function ``(completion, sample)`` does not have, so the GRPO trainer
computes it (``algo.sr1_check: true``, see ``vlmrl.vision.sr1``) and adds ``weight × score`` to
each completion's total, with part ``sr1``. This registered function only lets configs name the
weight (``reward.weights: {accuracy: 1.0, sr1: 0.5}``) and lets every other user of the reward
(SFT, ``vlmrl eval``) build it: on its own it scores 0.
"""

from __future__ import annotations

from vlmrl.data.sample import Sample
from vlmrl.rewards.registry import register_reward
from vlmrl.rewards.types import RewardBreakdown

#: The reward name the trainer looks for in ``reward.weights``.
SR1 = "sr1"


@register_reward(SR1)
def sr1_placeholder_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    """Always 0: the trainer fills in the text-only answer check (module docstring).

    >>> sr1_placeholder_reward("<look>1 red circle</look>", None).total
    0.0
    """
    return RewardBreakdown(0.0, {SR1: 0.0})
