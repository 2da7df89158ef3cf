"""The challenges by name: one module per experiment, each exposing ``CHALLENGE`` (a :class:`Challenge`).

The names live here (a ``StrEnum``) so the command line checks a name before torch loads; the
module is imported only when its experiment runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from vlmrl.errors import UserError


class ExperimentName(StrEnum):
    ENCODER_BLIND = "encoder_blind"
    """An aggressive vision-encoder update during RL on an image-free reward degrades perception."""
    ENCODER_FROZEN = "encoder_frozen"
    """A visual shift that needs new features cannot be learned with the vision tower frozen."""
    CREDIT = "credit"
    """A scalar reward pays "right for the wrong reason" (right answer from a wrong look) like a success."""
    HALLUCINATION = "hallucination"
    """When guessing "yes" usually pays, RL teaches false-yes answers and false mentions."""
    SHORTCUT = "shortcut"
    """When the question text predicts the answer, RL learns the prior instead of looking."""
    ACTION = "action"
    """A GUI agent takes an unsafe shortcut unless safety is a constraint of training."""
    SELFPLAY = "selfplay"
    """Visual self-play ("who is the spy") with no labels: does perception improve?"""


@dataclass(frozen=True)
class ArmResult:
    """One arm × seed: the metric after training, its curve over steps, and context numbers."""

    value: float
    curve: list[tuple[int, float]]
    """``(step, metric)`` during training (the last point is ``value``)."""
    extra: dict[str, float] = field(default_factory=dict)
    """Other end-of-run numbers shown in the verdict (e.g. the training task's accuracy)."""


@dataclass(frozen=True)
class Challenge:
    """A failure-inducing baseline arm and a fix arm, run over seeds and compared on one metric."""

    name: str
    question: str
    """The question the experiment answers, one sentence."""
    metric: str
    """What the number is (name and how it is measured)."""
    higher_is_better: bool
    arms: dict[str, str]
    """``{"baseline": what it does, "fix": what it does}``, for the verdict."""
    run_arm: Callable[[str, int, bool, Path], ArmResult]
    """``run_arm(arm, seed, quick, workdir)``: train one arm from scratch and measure the metric."""
    side_metrics: tuple[str, ...] = ()
    """Keys of :attr:`ArmResult.extra` also written to the JSON entry as ``{key: {"baseline": [per
    seed], "fix": [per seed]}}`` beside ``failure`` (e.g. ``success`` for ``action``)."""
    write_extra: Callable[[dict[str, list[ArmResult]], list[int], Path], None] | None = None
    """``write_extra(results, seeds, out)``: the experiment's own results file(s) beside the common
    ones (e.g. ``selfplay.json``), called by the runner after they are written."""


def check_name(name: str) -> ExperimentName:
    """The name as an :class:`ExperimentName`; a :class:`UserError` lists the allowed ones."""
    try:
        return ExperimentName(name)
    except ValueError:
        allowed = ", ".join(e.value for e in ExperimentName)
        raise UserError(f"unknown experiment {name!r}; allowed: {allowed}") from None


def get_challenge(name: str) -> Challenge:
    """The challenge named ``name`` (its module is imported now)."""
    module = importlib.import_module(f"vlmrl.experiments.{check_name(name).value}")
    return module.CHALLENGE
