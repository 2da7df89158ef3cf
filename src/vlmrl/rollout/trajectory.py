"""One episode's record and its summaries.

A :class:`Trajectory` holds the turns as logged and replayed (text, images, the env's step info)
and the completion they became, token for token: ids after the initial prompt, ``mask`` = 1
exactly on model tokens, the sampler's log-probs there, ``mm_token_type_ids`` (1 on the tool
images' tokens) and those images' pixel rows / grids in order. The answer is read from the last
model turn (:func:`final_text`); :func:`episode_metrics` gives the ``env/*`` means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image


@dataclass
class Turn:
    """One turn of a trajectory, as logged and replayed."""

    role: str  # "assistant" | "user"
    text: str
    images: list[Image.Image] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # assistant turns: the env's step info


@dataclass
class Trajectory:
    """One episode: its env, turns and the completion it became (ids, mask, log-probs, token types)."""

    env: Any
    group: int
    turns: list[Turn] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)  # chat messages so far (for the template)
    ids: list[int] = field(default_factory=list)  # completion tokens (after the initial prompt)
    mask: list[float] = field(default_factory=list)  # 1 on model tokens
    logp: list[float] = field(default_factory=list)
    mm: list[int] = field(default_factory=list)  # mm_token_type_ids over the completion
    pixel_values: list[torch.Tensor] = field(default_factory=list)  # tool images' rows, in order
    grids: list[torch.Tensor] = field(default_factory=list)
    done: bool = False
    finish: str = "stop"  # "stop" | "length" (turn/token budget) | "invalid_vision_token"
    budget_hit: bool = False
    latency_s: float = 0.0  # time spent in env.step
    gen_s: float = 0.0  # wall time of the generation rounds this episode waited on (one per model turn)

    @property
    def model_turns(self) -> int:
        return sum(t.role == "assistant" for t in self.turns)


def final_text(t: Trajectory) -> str:
    """The last model turn's text (what the answer is read from)."""
    for turn in reversed(t.turns):
        if turn.role == "assistant":
            return turn.text
    return ""


def _tool_attempt(text: str, info: dict) -> bool:
    return info.get("kind") == "tool" or "<tool_call>" in text


def episode_metrics(trajs: list[Trajectory]) -> dict[str, float]:
    """``env/*`` means over episodes: tool calls, validity of attempted calls, turns, budget hits, latency.

    ``valid_call_rate`` = valid tool calls / attempted ones (a turn whose env info says ``tool``
    or whose text holds ``<tool_call>``); 0 when nothing was attempted. Per action (model turn):
    ``tokens_per_action`` = model tokens / model turns and ``wall_s_per_action`` = (generation
    rounds waited on + env time) / model turns, over all episodes. Environments with a safety
    cost (``env.cost()``, e.g. the GUI world) add ``cost`` (mean episode cost) and
    ``unsafe_rate`` (fraction of episodes with a cost > 0).
    """
    calls = valid = attempts = 0
    for t in trajs:
        for turn in t.turns:
            if turn.role != "assistant":
                continue
            if _tool_attempt(turn.text, turn.info):
                attempts += 1
                if turn.info.get("kind") == "tool" and turn.info.get("valid", False):
                    valid += 1
            if turn.info.get("kind") == "tool":
                calls += 1
    n = max(len(trajs), 1)
    actions = max(sum(t.model_turns for t in trajs), 1)
    out = {
        "env/tool_calls_per_episode": calls / n,
        "env/valid_call_rate": valid / attempts if attempts else 0.0,
        "env/turns": sum(t.model_turns for t in trajs) / n,
        "env/budget_hit_rate": sum(t.budget_hit for t in trajs) / n,
        "env/latency_s": sum(t.latency_s for t in trajs) / n,
        "env/tokens_per_action": sum(sum(t.mask) for t in trajs) / actions,
        "env/wall_s_per_action": sum(t.gen_s + t.latency_s for t in trajs) / actions,
    }
    costs = [float(t.env.cost()) for t in trajs if callable(getattr(t.env, "cost", None))]
    if costs:
        out["env/cost"] = sum(costs) / len(costs)
        out["env/unsafe_rate"] = sum(c > 0 for c in costs) / len(costs)
    return out
