"""Held-out accuracy: greedy decoding, scored by the run's reward function."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from vlmrl.data import Sample
from vlmrl.rewards.compose import score_all
from vlmrl.rollout.batch import encode_samples
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
        enc = encode_samples(policy.processor, chunk, template)
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


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are right (Chen et al. 2021, "Evaluating
    Large Language Models Trained on Code", eq. 1): the chance that ``k`` of the ``n`` drawn without
    replacement hold at least one right answer,

        pass@k = 1 − C(n − c, k) / C(n, k),

    computed as the product ``∏_{i=n−c+1}^{n} (1 − k / i)`` to avoid huge binomials. ``k ≤ n``.

    >>> pass_at_k(4, 1, 2)  # 1 − C(3,2)/C(4,2) = 1 − 3/6
    0.5
    """
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k ≤ n and 0 ≤ c ≤ n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def sampled_accuracy(
    policy,
    samples: list[Sample],
    template: str,
    reward_fn,
    n: int,
    ks: list[int],
    temperature: float = 1.0,
    max_new_tokens: int = 16,
    batch_size: int = 50,
    seed: int = 0,
) -> dict[str, float]:
    """``n`` sampled completions per prompt at ``temperature``: mean accuracy of a sample
    (``sampled_accuracy``) and the unbiased :func:`pass_at_k` for each ``k`` in ``ks``, averaged
    over prompts. Greedy accuracy (:func:`evaluate`) says what the model answers; pass@k what it
    *can* answer in k tries, the room RL has to sharpen."""
    import torch

    if any(not 0 < k <= n for k in ks):
        raise ValueError(f"pass@k: every k must be in 1..{n} (the samples per prompt); got {ks}")
    gen = torch.Generator(torch.device(policy.model.device)).manual_seed(seed)
    engine = HFEngine(policy, max_new_tokens=max_new_tokens, temperature=temperature, generator=gen)
    right: list[int] = []  # right answers per prompt
    per = max(1, batch_size // n)
    for start in range(0, len(samples), per):
        chunk = samples[start : start + per]
        enc = encode_samples(policy.processor, chunk, template)
        batch = engine.generate(enc, n)
        prompts = [chunk[int(i)] for i in batch.prompt_index]
        scored = score_all(reward_fn, batch.texts, prompts, batch.completion_lengths.tolist())
        hits = [rb.parts.get("accuracy", rb.total) >= 1 for rb in scored]
        for j in range(len(chunk)):
            right.append(sum(h for h, i in zip(hits, batch.prompt_index.tolist(), strict=True) if i == j))
    res = {"samples_per_prompt": float(n), "temperature": temperature}
    res["sampled_accuracy"] = float(np.mean(right)) / n if right else 0.0
    res |= {f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for c in right])) if right else 0.0 for k in ks}
    return res
