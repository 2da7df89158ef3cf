"""Vision-SR1-style check: can the model answer from its own description, without the image?

Li et al. 2025, "Self-Rewarding Vision-Language Model via Reasoning Decomposition" (Vision-SR1)
split a response into visual perception and language reasoning and reward a perception that is
*self-contained*: the same model, shown only its own perception text and the question, must
still answer right. We do the simplest honest version:

1. for each sampled completion with a closed ``<look>`` span, build a text-only prompt: the
   same question (same template) with the image placeholder replaced by
   ``"Image description: <the model's look text>"`` and no image;
2. one greedy ``generate`` over all of them (one extra call per step; prompts are short);
3. score the text-only answer with the ``accuracy`` reward against the same ground truth.

``sr1[i]`` is 1 when that answer is right, 0 otherwise (also 0 without a look span). The trainer
logs ``rollout/sr1_text_only_acc`` = mean of ``sr1`` over completions *with* a span (how often
the description alone suffices) and ``rollout/sr1_with_look_frac``; with a weight ``sr1`` in
``reward.weights`` it adds ``weight × sr1`` to each total (part ``sr1``). Departures from the
paper: no separate judge model, no "perception reward only when the answer was also right"
gating, and the text-only pass reuses the sampling policy, greedy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from vlmrl.data import IMAGE_PLACEHOLDER, Sample, build_messages
from vlmrl.rewards.perception import MAX_LOOK_CHARS, look_span
from vlmrl.rewards.registry import RewardFn, get_reward
from vlmrl.rollout.batch import encode_prompts


def text_only_sample(sample: Sample, description: str) -> Sample:
    """``sample`` without images; its first placeholder becomes the description, others vanish.

    >>> s = Sample(id="a", images=[object()], problem="<image>How many red circles?", answer="2")
    >>> t = text_only_sample(s, " 2 red circles ")
    >>> t.images, t.problem, t.answer
    ([], 'Image description: 2 red circles\\nHow many red circles?', '2')
    """
    text = f"Image description: {description.strip()[:MAX_LOOK_CHARS]}\n"
    problem = sample.problem
    at = problem.find(IMAGE_PLACEHOLDER)
    if at < 0:
        problem = text + problem
    else:
        rest = problem[at + len(IMAGE_PLACEHOLDER) :].replace(IMAGE_PLACEHOLDER, "")
        problem = problem[:at] + text + rest
    return dataclasses.replace(sample, id=f"{sample.id}-sr1", images=[], problem=problem)


@torch.no_grad()
def sr1_scores(
    engine,
    processor,
    template: str,
    samples: Sequence[Sample],
    texts: Sequence[str],
    index: Sequence[int],
    judge: RewardFn | None = None,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sr1 [N], has_look [N] bool)`` for completions ``texts`` of ``samples[index[i]]``.

    ``engine.generate(enc, 1, greedy=True)`` answers the text-only prompts in chunks of
    ``batch_size``; ``judge`` (default: the ``accuracy`` reward) scores each answer.
    """
    judge = judge or get_reward("accuracy")
    n = len(texts)
    scores = torch.zeros(n, dtype=torch.float32)
    looks = [look_span(t) for t in texts]
    has_look = torch.tensor([lk is not None for lk in looks], dtype=torch.bool)
    rows = [i for i in range(n) if looks[i] is not None]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        prompts = [text_only_sample(samples[index[i]], looks[i]) for i in chunk]
        enc = encode_prompts(processor, [build_messages(s, template) for s in prompts], [[] for _ in prompts])
        out = engine.generate(enc, 1, greedy=True)
        for i, s, answer in zip(chunk, prompts, out.texts, strict=True):
            scores[i] = float(judge(answer, s).total)
    return scores, has_look


def apply_sr1(
    engine,
    processor,
    template: str,
    samples: Sequence[Sample],
    batch,
    rewards: torch.Tensor,  # [N]
    parts: dict[str, torch.Tensor],  # name -> [N]
    weight: float,
    batch_size: int = 64,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
    """Run the check on a rollout batch: ``rewards + weight · sr1``, parts with ``sr1``, metrics."""
    scores, has_look = sr1_scores(
        engine, processor, template, samples, batch.texts, batch.prompt_index.tolist(), batch_size=batch_size
    )
    metrics = {
        "rollout/sr1_with_look_frac": float(has_look.float().mean()) if len(scores) else 0.0,
        "reward/sr1": float(scores.mean()) if len(scores) else 0.0,
    }
    if bool(has_look.any()):  # undefined (not 0) when no completion described the image
        metrics["rollout/sr1_text_only_acc"] = float(scores[has_look].mean())
    return rewards + weight * scores, {**parts, "sr1": scores}, metrics
