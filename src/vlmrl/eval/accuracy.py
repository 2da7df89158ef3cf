"""Held-out accuracy: greedy decoding, scored by the run's reward function."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from vlmrl.data import Sample, build_messages
from vlmrl.rewards.compose import score_all
from vlmrl.rollout.batch import encode_prompts
from vlmrl.rollout.hf_engine import HFEngine


def evaluate(
    policy,
    samples: list[Sample],
    template: str,
    reward_fn,
    max_new_tokens: int = 16,
    batch_size: int = 50,
    return_outputs: bool = False,
) -> dict[str, Any]:
    """Accuracy = mean of the reward's ``accuracy`` part (1 when the answer is right), per task and overall.

    Greedy decoding (one completion per prompt), so the number does not depend on sampling luck.
    """
    engine = HFEngine(policy, max_new_tokens=max_new_tokens)
    by_task: dict[str, list[float]] = defaultdict(list)
    rewards, outputs = [], []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        enc = encode_prompts(
            policy.processor, [build_messages(s, template) for s in chunk], [s.images for s in chunk]
        )
        batch = engine.generate(enc, 1, greedy=True)
        scored = score_all(reward_fn, batch.texts, chunk, batch.completion_lengths.tolist())
        for s, text, rb in zip(chunk, batch.texts, scored, strict=True):
            acc = rb.parts.get("accuracy", rb.total)
            by_task[s.task].append(acc)
            rewards.append(rb.total)
            outputs.append({"id": s.id, "completion": text, "answer": s.answer, "accuracy": acc})
    allacc = [a for v in by_task.values() for a in v]
    res: dict[str, Any] = {
        "accuracy": float(np.mean(allacc)) if allacc else 0.0,
        "reward": float(np.mean(rewards)) if rewards else 0.0,
    }
    if len(by_task) > 1:
        res |= {f"accuracy/{t}": float(np.mean(v)) for t, v in by_task.items()}
    if return_outputs:
        res["outputs"] = outputs
    return res
