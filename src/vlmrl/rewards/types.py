"""The value every reward returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RewardBreakdown:
    """``total`` is what the advantage sees; ``parts`` are logged one by one.

    ``spans`` optionally carries segment rewards for credit assignment, keyed by segment name
    (e.g. ``{"perception": 0.5, "answer": 1.0}``).
    """

    total: float
    parts: dict[str, float] = field(default_factory=dict)
    spans: dict[str, float] = field(default_factory=dict)
