"""The trainer's safety-cost control for environments with a cost (``env.cost_mode``): λ and its step.

Each episode's cost is its environment's ``cost()`` (the GUI world: the number of unsafe,
irreversible actions; environments without one cost 0). Every step the trainer calls
:meth:`CostControl.apply` once on the scored round, before KL and advantages: it shapes the
rewards to ``R − λ·C`` with the current λ, logs ``safety/lambda`` (the λ used), ``safety/episode_cost``
and ``safety/unsafe_rate``, then, in ``lagrangian`` mode, takes the multiplier's step
``λ ← min(λ_max, max(0, λ + lr_λ·(mean C − target)))`` for the next round (:mod:`vlmrl.algos.lagrangian`).
Under many processes the mean cost is all-reduced, so λ stays the same on every rank.

λ is part of the trainer's state: :meth:`CostControl.state` goes into a checkpoint's
``state.json`` (``cost_lambda``) and :meth:`CostControl.from_config` reads it back, so a resumed
run continues with the same multiplier.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vlmrl.algos.lagrangian import CostMode, lagrange_update, shaped_rewards
from vlmrl.config.schema import EnvConfig
from vlmrl.rollout.rollouts import Rollouts


class CostControl:
    """λ and how it moves; ``mode`` ``penalty`` keeps λ = ``coef``, ``lagrangian`` learns it."""

    def __init__(
        self,
        mode: str = "penalty",
        coef: float = 0.0,
        target: float = 0.0,
        lr: float = 0.0,
        lam_max: float | None = None,
    ) -> None:
        if min(coef, target, lr, 0.0 if lam_max is None else lam_max) < 0:
            raise ValueError(
                "env.cost_coef, cost_target, cost_lr and cost_lambda_max must be >= 0, "
                f"got {coef}, {target}, {lr}, {lam_max}"
            )
        self.mode = CostMode(mode)
        self.lam, self.target, self.lr = float(coef), float(target), float(lr)
        self.lam_max = None if lam_max is None else float(lam_max)
        if self.mode is CostMode.LAGRANGIAN and self.lam_max is not None:
            self.lam = min(self.lam, self.lam_max)

    @classmethod
    def from_config(cls, env: EnvConfig, checkpoint: Path | None = None) -> CostControl:
        """From ``env.cost_*``; λ from ``checkpoint/state.json`` when resuming from one that has it."""
        ctl = cls(env.cost_mode, env.cost_coef, env.cost_target, env.cost_lr, env.cost_lambda_max)
        state = Path(checkpoint) / "state.json" if checkpoint is not None else None
        if state is not None and state.is_file():
            saved = json.loads(state.read_text()).get("cost_lambda")
            if isinstance(saved, (int, float)):
                ctl.lam = float(saved)
        return ctl

    def state(self) -> dict[str, float]:
        """What a checkpoint keeps (``state.json``)."""
        return {"cost_lambda": self.lam}

    def apply(self, ro: Rollouts) -> torch.Tensor:
        """Shape the round in place: ``ro.rewards ← R − λ·C`` (``[N]``, returned too), the
        ``safety/*`` metrics into ``ro.metrics``; then move λ for the next round."""
        rewards, trajectories, metrics = ro.rewards, ro.trajectories, ro.metrics
        if not any(callable(getattr(t.env, "cost", None)) for t in trajectories):
            return rewards  # single-turn rounds, or environments without a cost
        costs = torch.tensor(
            [float(t.env.cost()) if callable(getattr(t.env, "cost", None)) else 0.0 for t in trajectories]
        )  # [N]
        total = torch.stack([costs.sum(), (costs > 0).float().sum(), torch.tensor(float(costs.numel()))])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)  # the batch-wide mean: one λ on every rank
        mean_cost, unsafe_rate = (
            float(total[0] / total[2].clamp(min=1)),
            float(total[1] / total[2].clamp(min=1)),
        )
        metrics |= {
            "safety/lambda": self.lam,
            "safety/episode_cost": mean_cost,
            "safety/unsafe_rate": unsafe_rate,
        }
        shaped = shaped_rewards(rewards, costs.to(rewards.device), self.lam) if self.lam else rewards
        if self.mode is CostMode.LAGRANGIAN:
            self.lam = lagrange_update(self.lam, mean_cost, self.target, self.lr, self.lam_max)
        ro.rewards = shaped
        return shaped
