"""Temporal-contrast reward after Video-R1's T-GRPO: pay for answers that need the frames' order.

``reward.temporal_contrast: α`` (0: off), ``reward.temporal_mu: μ``. Each step, every prompt with
a video is also sampled G times with its frames shuffled (the ``shuffled_frames`` condition of
:func:`vlmrl.eval.blind.with_condition`: same frames, no frame in its place). With ``p_g`` the
group's accuracy on the ordered video and ``p̃_g`` on the shuffled one::

    r'_i = r_i + α · acc_i · 1[p_g ≥ μ · p̃_g]            (prompts with a video)
    r'_i = r_i                                          (prompts without)

so a right answer earns the bonus only when the group does at least μ times as well with the
frames in order as without it (Feng et al. 2025, "Video-R1: Reinforcing Video Reasoning in
MLLMs", whose T-GRPO uses α = 0.3, μ = 0.8). ``acc_i`` is the accuracy part of the
reward (0..1), so wrong answers never get it. Where a model answers as well from shuffled frames
(it ignores time), the bonus goes away and the group's ranking is the plain reward's.

Cost: a second G-sample generation over the step's video prompts; the shuffled completions only
score the groups and are never trained on. The logged ``reward/temporal_ordered`` and
``reward/temporal_shuffled`` (mean p and p̃) and ``reward/temporal_bonus_frac`` (share of video
groups paid) show how much the order matters to the policy during training.
"""

from __future__ import annotations

import torch

from vlmrl.eval.blind import with_condition
from vlmrl.eval.counterfactual import pay_if_looking
from vlmrl.rewards.registry import get_reward
from vlmrl.rollout.batch import encode_samples

ACCURACY = "accuracy"


def temporal_bonus(
    accuracy: torch.Tensor,  # [N] accuracy part of each ordered completion (0..1)
    prompt_index: torch.Tensor,  # [N] long, completion i's group g(i)
    ordered: torch.Tensor,  # [P] p_g, group accuracy with the frames in order
    shuffled: torch.Tensor,  # [P] p̃_g, group accuracy with the frames shuffled
    has_video: torch.Tensor,  # [P] bool
    alpha: float,
    mu: float,
) -> torch.Tensor:
    """``[N]``: ``α · acc_i · 1[p_g ≥ μ p̃_g]`` for video groups, 0 elsewhere (module docstring).

    >>> temporal_bonus(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0, 0, 1, 1]),
    ...                torch.tensor([0.5, 1.0]), torch.tensor([0.5, 1.0]), torch.tensor([True, True]),
    ...                alpha=0.3, mu=1.1)  # 0.5 < 1.1·0.5 and 1.0 < 1.1·1.0: nobody is paid
    tensor([0., 0., 0., 0.])
    >>> temporal_bonus(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0, 0, 1, 1]),
    ...                torch.tensor([0.5, 1.0]), torch.tensor([0.5, 0.0]), torch.tensor([True, False]),
    ...                alpha=0.3, mu=0.8)  # group 0: 0.5 ≥ 0.4, right answers paid; group 1: no video
    tensor([0.3000, 0.0000, 0.0000, 0.0000])
    """
    paid = has_video & (ordered >= mu * shuffled)  # [P]
    return alpha * accuracy * paid[prompt_index].float()  # [N]


def shape_round(ro, engine, processor, template: str, reward_cfg):
    """A scored round's reward shaping, in order: ``reward.counterfactual`` (blind-right accuracy
    withheld, :mod:`vlmrl.eval.counterfactual`), then ``reward.temporal_contrast`` (this module)."""
    ro = pay_if_looking(ro, engine, processor, template, reward_cfg)
    return reward_temporal_contrast(ro, engine, processor, template, reward_cfg)


@torch.no_grad()
def reward_temporal_contrast(ro, engine, processor, template: str, reward_cfg, seed: int = 0):
    """The scored round ``ro`` with the temporal bonus added to its rewards, and its metrics;
    unchanged when ``reward_cfg.temporal_contrast`` is 0 or no prompt has a video. The shuffled
    groups have the ordered groups' size G."""
    alpha = float(reward_cfg.temporal_contrast)
    video = [g for g, s in enumerate(ro.samples) if s.videos]
    if alpha == 0 or not video:
        return ro
    judge = get_reward(ACCURACY)
    n = ro.batch.size // len(ro.samples)  # G
    shuffled = with_condition([ro.samples[g] for g in video], "shuffled_frames", seed)
    enc = encode_samples(processor, shuffled, template)
    out = engine.generate(enc, n)
    right = torch.tensor(
        [float(judge(t, shuffled[int(i)]).total) for t, i in zip(out.texts, out.prompt_index, strict=True)]
    )
    p = len(ro.samples)
    idx = ro.batch.prompt_index.to(torch.long)  # [N]
    acc = ro.parts.get(ACCURACY, torch.zeros_like(ro.rewards))  # [N]
    ordered = torch.zeros(p).index_add_(0, idx, acc) / torch.bincount(idx, minlength=p).clamp(min=1)  # [P]
    p_shuf = torch.zeros(p)
    p_shuf[video] = torch.zeros(len(video)).index_add_(0, out.prompt_index, right) / n  # [P]
    has_video = torch.zeros(p, dtype=torch.bool)
    has_video[video] = True
    bonus = temporal_bonus(acc, idx, ordered, p_shuf, has_video, alpha, float(reward_cfg.temporal_mu))
    ro.rewards = ro.rewards + bonus
    paid = has_video & (ordered >= reward_cfg.temporal_mu * p_shuf)
    ro.metrics |= {
        "reward/temporal_ordered": float(ordered[video].mean()),
        "reward/temporal_shuffled": float(p_shuf[video].mean()),
        "reward/temporal_bonus_frac": float(paid[video].float().mean()),
    }
    return ro
