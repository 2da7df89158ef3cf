"""Advantages of generated images: Flow-GRPO's group-relative ones, DDPO's per-prompt stat tracker.

- **Flow-GRPO:** the G images of one prompt form a group; ``A = (r - mean_g) / (std_g + ε)``
  (:func:`vlmrl.algos.compute_advantages` ``grpo``, the same estimator as for text).
- **DDPO** (Black et al. 2023, §4.3 "per-prompt stat tracking"): each prompt keeps its last
  ``buffer`` rewards across steps; ``A = (r - mean_p) / (std_p + ε)`` over that buffer (this
  step's rewards included) once it holds ``min_count`` rewards, and over the whole batch before.

Both are clipped to ``[-clip, clip]`` (Flow-GRPO's and DDPO's ``adv_clip_max``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torch import Tensor

from vlmrl.algos import compute_advantages


def group_advantages(rewards: Tensor, group_ids: Tensor, clip: float) -> Tensor:
    """Flow-GRPO: group-normalised rewards ``[N]``, clipped."""
    return compute_advantages("grpo", rewards, group_ids).clamp(-clip, clip)


class PromptStatTracker:
    """DDPO's per-prompt reward statistics; its state is JSON (``state_dict`` / ``load_state_dict``),
    saved in checkpoints so a resumed run normalises exactly as the uninterrupted one."""

    def __init__(self, buffer: int = 32, min_count: int = 16, eps: float = 1e-6) -> None:
        self.buffer, self.min_count, self.eps = buffer, min_count, eps
        self.stats: dict[str, deque[float]] = {}

    def advantages(self, prompts: list[str], rewards: Tensor, clip: float) -> Tensor:
        """``[N]`` advantages of ``rewards [N]`` for the per-image prompt texts, after adding them."""
        r = rewards.double()
        out = torch.empty_like(r)
        batch_mean, batch_std = r.mean(), r.std(unbiased=False)
        for p in dict.fromkeys(prompts):
            rows = torch.tensor([i for i, q in enumerate(prompts) if q == p])
            buf = self.stats.setdefault(p, deque(maxlen=self.buffer))
            buf.extend(r[rows].tolist())
            if len(buf) < self.min_count:
                mean, std = batch_mean, batch_std
            else:
                hist = torch.tensor(list(buf), dtype=torch.float64)
                mean, std = hist.mean(), hist.std(unbiased=False)
            out[rows] = (r[rows] - mean) / (std + self.eps)
        return out.float().clamp(-clip, clip)

    def state_dict(self) -> dict[str, Any]:
        return {
            "buffer": self.buffer,
            "min_count": self.min_count,
            "stats": {k: list(v) for k, v in self.stats.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer, self.min_count = int(state["buffer"]), int(state["min_count"])
        self.stats = {k: deque(map(float, v), maxlen=self.buffer) for k, v in state["stats"].items()}
