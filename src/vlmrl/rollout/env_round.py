"""The trainer's multi-turn pieces (``env.name`` set): one rollout round and its log.

A round samples B prompts × G episodes with :func:`vlmrl.rollout.multiturn.multiturn_rollout`;
each episode's reward is its environment's trajectory reward (``env.reward()``: accuracy,
format, tool bonus, call cost, budget penalty, each logged as ``reward/<part>``), not the
``reward.*`` functions of single-turn runs. Held-out evaluation of such runs is
:func:`vlmrl.eval.multiturn.evaluate_multiturn`.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from vlmrl.config import TrainConfig
from vlmrl.data import Sample
from vlmrl.rollout.batch import RolloutBatch
from vlmrl.rollout.multiturn import MultiTurnSpec, multiturn_rollout
from vlmrl.rollout.rollouts import stack_parts
from vlmrl.rollout.safety import CostControl
from vlmrl.rollout.seats import is_game, seat_rollout, seat_round_metrics
from vlmrl.rollout.trajectory import Trajectory, episode_metrics

__all__ = [
    "CostControl",
    "env_factory",
    "env_rollout_round",
    "score_trajectories",
    "spec_from_config",
]


def env_factory(cfg: TrainConfig):
    """``make_env(env.name, max_turns=…, max_tool_calls=…, **env.kwargs)``: a fresh env per call."""
    from vlmrl.envs import make_env

    e = cfg.env
    return make_env(e.name, **{"max_turns": e.max_turns, "max_tool_calls": e.max_tool_calls, **e.kwargs})


def spec_from_config(cfg: TrainConfig, group_size: int, greedy: bool = False) -> MultiTurnSpec:
    e = cfg.env
    return MultiTurnSpec(group_size, e.max_turns, e.turn_max_new_tokens, e.max_total_tokens, greedy)


def score_trajectories(trajs: list[Trajectory]) -> tuple[torch.Tensor, dict, dict[str, torch.Tensor]]:
    """Totals ``[N]``, mean of each reward part (``reward/…``) and each part per episode ``[N]``."""
    rbs = [t.env.reward() for t in trajs]
    parts: dict[str, list[float]] = defaultdict(list)
    for rb in rbs:
        for k, v in rb.parts.items():
            parts[k].append(v)
    return (
        torch.tensor([rb.total for rb in rbs], dtype=torch.float32),
        {f"reward/{k}": float(np.mean(v)) for k, v in parts.items()},
        stack_parts([rb.parts for rb in rbs]),
    )


def env_rollout_round(
    engine, processor, cfg: TrainConfig, samples: list[Sample], make_env=None
) -> tuple[list[Sample], RolloutBatch, list[Trajectory], torch.Tensor, dict, dict[str, torch.Tensor]]:
    """One round: the groups' samples, the batch, its episodes, rewards ``[N]``, ``reward/*`` +
    ``env/*`` metrics, parts. A multi-seat game (``env.name: spy``) plays ``rollout.n`` games per
    sample, one row per seat, grouped by role (:mod:`vlmrl.rollout.seats`): 2 groups per sample."""
    make_env = make_env or env_factory(cfg)
    spec, extra = spec_from_config(cfg, cfg.rollout.n), {}
    if is_game(make_env()):
        samples, batch, trajs, games = seat_rollout(engine, processor, make_env, samples, spec)
        extra = seat_round_metrics(games, trajs)
    else:
        batch, trajs = multiturn_rollout(engine, processor, make_env, samples, spec)
    rewards, metrics, parts = score_trajectories(trajs)
    if cfg.algo.overlong_penalty:  # budget stops count as truncated
        rewards = rewards - cfg.algo.overlong_penalty * torch.tensor([t.budget_hit for t in trajs]).float()
    return samples, batch, trajs, rewards, metrics | episode_metrics(trajs) | extra, parts
