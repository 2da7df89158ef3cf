"""Held-out evaluation of multi-turn tool runs (``env.name`` set): greedy episodes, one per sample.

Accuracy is the mean of the trajectory reward's ``accuracy`` part (``env.reward()``), beside the
mean reward and the ``env/*`` episode metrics (tool calls per episode, ...), overall and per task.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from vlmrl.config import TrainConfig
from vlmrl.data import Sample
from vlmrl.eval.accuracy import evaluate
from vlmrl.rewards import get_reward
from vlmrl.rollout.env_round import env_factory, spec_from_config
from vlmrl.rollout.hf_engine import HFEngine
from vlmrl.rollout.multiturn import multiturn_rollout
from vlmrl.rollout.seats import is_game
from vlmrl.rollout.trajectory import episode_metrics


def evaluate_multiturn(
    policy, samples: list[Sample], cfg: TrainConfig, batch_size: int = 50, make_env=None, return_outputs=False
) -> dict[str, Any]:
    """Greedy multi-turn episodes on ``samples``: accuracy (the reward's ``accuracy`` part), reward,
    and the ``env/*`` episode metrics (as ``tool_calls_per_episode``, ...), overall and per task."""
    make_env = make_env or env_factory(cfg)
    if is_game(make_env()):  # a self-play game has no answer: held-out perception, single-turn, greedy
        reward = get_reward("accuracy")
        max_new = cfg.eval.max_new_tokens
        return evaluate(policy, samples, cfg.data.template, reward, max_new, batch_size, return_outputs)
    engine = HFEngine(policy, max_new_tokens=cfg.env.turn_max_new_tokens)
    by_task: dict[str, list[float]] = defaultdict(list)
    rewards, outputs, all_trajs = [], [], []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        _, trajs = multiturn_rollout(
            engine, policy.processor, make_env, chunk, spec_from_config(cfg, 1, True)
        )
        for s, t in zip(chunk, trajs, strict=True):
            rb = t.env.reward()
            acc = rb.parts.get("accuracy", rb.total)
            by_task[s.task].append(acc)
            rewards.append(rb.total)
            outputs.append(
                {"id": s.id, "turns": [tu.text for tu in t.turns if tu.role == "assistant"],
                 "answer": s.answer, "accuracy": acc}
            )  # fmt: skip
        all_trajs += trajs
    accs = [a for v in by_task.values() for a in v]
    res: dict[str, Any] = {
        "accuracy": float(np.mean(accs)) if accs else 0.0,
        "reward": float(np.mean(rewards)) if rewards else 0.0,
    }
    res |= {k.removeprefix("env/"): v for k, v in episode_metrics(all_trajs).items()}
    if len(by_task) > 1:
        res |= {f"accuracy/{t}": float(np.mean(v)) for t, v in by_task.items()}
    if return_outputs:
        res["outputs"] = outputs
    return res
