"""``Rollouts``: one round of scored rollouts (prompts, sampled batch, rewards and their parts).

A GRPO step samples and scores one or more rounds; DAPO dynamic sampling keeps some groups of
each round (:meth:`Rollouts.select`) and joins what it kept (:meth:`Rollouts.concat`). Row ``i``
of every per-rollout field (``batch`` rows, ``rewards``, each of ``parts``, ``trajectories``)
is the same rollout; ``samples[g]`` is the prompt of group ``g`` (``batch.prompt_index == g``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vlmrl.data import Sample
from vlmrl.rewards.compose import score_all
from vlmrl.rollout.batch import RolloutBatch, concat_batches, select_prompts


def stack_parts(breakdown_parts: Sequence[Mapping[str, float]]) -> dict[str, torch.Tensor]:
    """``{name: [N]}`` from each response's ``RewardBreakdown.parts``; missing parts are 0."""
    names = dict.fromkeys(k for p in breakdown_parts for k in p)
    return {
        k: torch.tensor([float(p.get(k, 0.0)) for p in breakdown_parts], dtype=torch.float32) for k in names
    }


def concat_parts(
    chunks: Sequence[Mapping[str, torch.Tensor]], sizes: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Concatenate per-response parts of several batches (chunk ``j`` has ``sizes[j]`` responses).

    A part missing from a chunk is 0 there, as in :func:`stack_parts`.
    """
    names = dict.fromkeys(k for c in chunks for k in c)
    return {
        k: torch.cat([c[k] if k in c else torch.zeros(n) for c, n in zip(chunks, sizes, strict=True)])
        for k in names
    }


@dataclass
class Rollouts:
    """A scored rollout round: B prompts × G completions (or episodes)."""

    samples: list[Sample]
    """The B prompts; ``samples[g]`` is group ``g``."""
    batch: RolloutBatch
    """The N = B·G sampled completions (ids, masks, sampler log-probs, texts)."""
    rewards: torch.Tensor
    """``[N]`` total reward of each rollout (after every shaping the round applied)."""
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    """Named reward parts, each ``[N]`` (``accuracy``, ``format``, …; 0 where a rollout lacks one)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The round's ``reward/*`` / ``rollout/*`` / ``env/*`` means."""
    trajectories: list[Any] = field(default_factory=list)
    """Multi-turn runs: the N episodes (``rollout.trajectory.Trajectory``); empty for single-turn."""

    @classmethod
    def scored(cls, samples: list[Sample], batch: RolloutBatch, reward_fn: Callable) -> Rollouts:
        """Each completion scored by ``reward_fn(text, sample) -> RewardBreakdown`` (the whole batch
        in one call when it has ``score_batch``): totals, parts and the ``reward/<part>`` means."""
        per_rollout = [samples[i] for i in batch.prompt_index.tolist()]
        breakdowns = score_all(reward_fn, batch.texts, per_rollout, batch.completion_lengths.tolist())
        parts = stack_parts([rb.parts for rb in breakdowns])
        return cls(
            samples,
            batch,
            torch.tensor([rb.total for rb in breakdowns], dtype=torch.float32),
            parts,
            {
                f"reward/{k}": float(np.mean([rb.parts[k] for rb in breakdowns if k in rb.parts]))
                for k in parts
            },
        )

    def group_std(self) -> float:
        """Mean over groups of the rewards' (population) std within the group: 0 = nothing to learn."""
        groups = self.batch.prompt_index
        stds = [self.rewards[groups == g].std(unbiased=False) for g in groups.unique()]
        return float(torch.stack(stds).mean())

    @property
    def size(self) -> int:
        """N, the number of rollouts."""
        return self.batch.size

    def rows_of(self, groups: Sequence[int]) -> torch.Tensor:
        """The rollout rows of ``groups``, group by group (the order :func:`select_prompts` keeps)."""
        if not groups:
            return torch.zeros(0, dtype=torch.long)
        return torch.cat([(self.batch.prompt_index == g).nonzero().flatten() for g in groups])

    def select(self, groups: Sequence[int]) -> Rollouts:
        """The rollouts of ``groups`` only, renumbered ``0..len(groups)-1`` (metrics are kept)."""
        rows = self.rows_of(groups)
        r = rows.tolist()
        return Rollouts(
            samples=[self.samples[g] for g in groups],
            batch=select_prompts(self.batch, list(groups)),
            rewards=self.rewards[rows],
            parts={k: v[rows] for k, v in self.parts.items()},
            metrics=dict(self.metrics),
            trajectories=[self.trajectories[i] for i in r] if self.trajectories else [],
        )

    @staticmethod
    def concat(chunks: Sequence[Rollouts], pad_id: int) -> Rollouts:
        """One round made of several (prompts renumbered in order); metrics are the first chunk's."""
        if not chunks:
            raise ValueError("Rollouts.concat: nothing to concatenate")
        if len(chunks) == 1:
            return chunks[0]
        return Rollouts(
            samples=[s for c in chunks for s in c.samples],
            batch=concat_batches([c.batch for c in chunks], pad_id),
            rewards=torch.cat([c.rewards for c in chunks]),
            parts=concat_parts([c.parts for c in chunks], [c.size for c in chunks]),
            metrics=dict(chunks[0].metrics),
            trajectories=[t for c in chunks for t in c.trajectories],
        )
