"""The environment API: what a multi-turn visual environment says and what it is told.

One :class:`VisualEnv` instance runs one trajectory: ``reset(sample)`` gives the first user turn
(question + image), then ``step(model_text)`` takes one assistant turn and answers with a
:class:`StepResult` until ``done``; ``reward()`` scores the whole trajectory. Nothing here
imports model code (``envs`` sits beside ``rewards`` below ``train``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from vlmrl.data.sample import Sample
from vlmrl.rewards.types import RewardBreakdown

#: ``info["kind"]`` of a step: a tool call, a final answer, a turn that is neither, a budget stop.
STEP_KINDS = ("tool", "answer", "invalid", "budget")


@dataclass
class Observation:
    """What the environment says to the model: a user turn (text with ``<image>`` placeholders,
    one per image in ``images``, in order)."""

    text: str
    images: list[Image.Image] = field(default_factory=list)


@dataclass
class ToolCall:
    """One parsed ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``."""

    name: str
    arguments: dict[str, Any]


@dataclass
class ToolCallError:
    """Why a tool call could not be parsed or run; ``message`` is shown to the model as is.

    ``name`` is the tool's name when it could be read (so a log can count errors per tool).
    """

    message: str
    name: str | None = None


@dataclass
class StepResult:
    """The environment's answer to one assistant turn.

    ``info`` always holds ``kind`` (one of :data:`STEP_KINDS`), ``tool`` (name or ``None``),
    ``valid`` (the turn was well formed and, for a tool call, the tool ran), ``error`` (the
    message or ``None``) and ``latency_s`` (time spent in the environment); ``ToolEnv`` adds
    ``turn``, ``tool_calls`` and, on a budget stop, ``budget`` (which budget ran out).
    """

    observation: Observation | None  # None when done
    done: bool
    info: dict[str, Any]


def step_info(
    kind: str, tool: str | None, valid: bool, error: str | None, start: float, **extra: Any
) -> dict[str, Any]:
    """A :class:`StepResult`'s ``info``: the keys every env gives, ``latency_s`` since ``start``
    (a ``time.perf_counter()`` reading), then the env's own ``extra`` keys."""
    return {
        "kind": kind,
        "tool": tool,
        "valid": valid,
        "error": error,
        "latency_s": time.perf_counter() - start,
        **extra,
    }


@runtime_checkable
class VisualEnv(Protocol):
    """One instance per trajectory; cheap to create."""

    max_turns: int

    def reset(self, sample: Sample) -> Observation:
        """The first user turn (question + image)."""
        ...

    def step(self, model_text: str) -> StepResult:
        """Take one assistant turn's text; never raises on any text."""
        ...

    def reward(self) -> RewardBreakdown:
        """The trajectory reward, after ``done``."""
        ...

    def system_prompt(self) -> str:
        """Tool descriptions (JSON schemas) and the call format, for the system turn."""
        ...
