"""What the shipped tiny base is trained on, and what it never sees (the held-out shifts).

One source for the data mix of ``vlmrl pretrain-tiny``, its per-task evaluation, and the
held-out distributions that RL is measured on later (the model card lists them from here).

Why these choices:
- Every skill is a procedural task with ground truth, rendered at (or resized to) 112 px, so
  the model's 16 image tokens carry all it can know.
- Templates are mixed per sample: ``answer`` for most, ``look`` (describe the scene, then
  answer) for the object tasks, so the ``<look>`` span the perception reward scores is a skill
  the base already has.
- A curriculum: stage 0 holds the skills that are learnt fastest from scratch (colour, position,
  counting); every task joins at stage 1. From scratch, position sat at chance for ~450 steps and
  then jumped; existence probes plateaued when trained alone (docs/facts.md).
- Held out (never drawn in pretraining): counting among green or yellow distractors, counting to
  7-8, small circles for position, POPE's adversarial negatives, and charts without value labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BASE_NAME = "vlmrl-tiny-base"
"""The alias ``load_policy`` resolves to the checkpoint shipped inside the package."""


@dataclass(frozen=True)
class MixEntry:
    """One task in the pretraining mix.

    ``weight`` is the task's share of a batch once it has joined; ``stage`` is the curriculum
    stage at which it joins (0 = from the first step); ``templates`` are drawn uniformly per sample.
    """

    name: str
    task: str
    knobs: dict[str, Any] = field(default_factory=dict)
    templates: tuple[str, ...] = ("answer",)
    weight: float = 1.0
    stage: int = 0
    max_new_tokens: int = 8


COUNT_TRAIN = {"max_count": 6, "distractors": 3, "distractor_colors": ("blue", "purple")}

#: The pretraining mix, in the order the model card's table lists it.
PRETRAIN_MIX: tuple[MixEntry, ...] = (
    MixEntry("color", "color", {"colors": ("red", "green", "blue", "yellow", "purple", "orange")}),
    MixEntry("position", "position", {"radius": (0.09, 0.15)}, weight=1.5, max_new_tokens=10),
    MixEntry("count", "count", COUNT_TRAIN, weight=2.0),
    MixEntry("count_look", "count", COUNT_TRAIN, ("look",), weight=1.0, stage=1, max_new_tokens=48),
    MixEntry("spatial", "spatial", {}, weight=1.5, stage=1),
    MixEntry("pope", "pope", {"mode": "random"}, weight=2.0, stage=1),
    MixEntry("pope_popular", "pope", {"mode": "popular"}, weight=0.5, stage=1),
    MixEntry("pope_look", "pope", {"mode": "random"}, ("look",), weight=1.0, stage=1, max_new_tokens=48),
    MixEntry("chart", "chart", {"value_labels": True, "max_value": 9}, weight=1.5, stage=1),
    MixEntry("geometry", "geometry", {"kinds": ("perimeter",), "max_side": 6}, weight=1.0, stage=1),
)

#: Held-out shifts: distributions no pretraining sample is drawn from.
HELD_OUT: tuple[MixEntry, ...] = (
    MixEntry("count_new_distractors", "count", {**COUNT_TRAIN, "distractor_colors": ("green", "yellow")}),
    MixEntry("count_larger", "count", {"min_count": 7, "max_count": 8, "distractors": 3}),
    MixEntry("position_small", "position", {"radius": (0.04, 0.07)}, max_new_tokens=10),
    MixEntry("pope_adversarial", "pope", {"mode": "adversarial"}),
    MixEntry("chart_no_labels", "chart", {"value_labels": False, "max_value": 9}),
)

HELD_OUT_NOTES: dict[str, str] = {
    "count_new_distractors": "count red circles among green/yellow distractors (trained: blue/purple)",
    "count_larger": "7-8 targets (trained: 1-6)",
    "position_small": "circle radius 4-7% of the side (trained: 9-15%)",
    "pope_adversarial": "absent object differs from a present one by one attribute "
    "(trained: random, popular)",
    "chart_no_labels": "bar values read from the axis, no value labels (trained: labelled bars)",
}

CURRICULUM_STAGE1_FRACTION = 0.15
"""Share of the steps spent on stage-0 tasks before every task joins."""


def entries_at(step: int, steps: int) -> list[MixEntry]:
    """The mix entries active at ``step`` of ``steps`` (the curriculum)."""
    stage = 0 if step < CURRICULUM_STAGE1_FRACTION * steps else 1
    return [e for e in PRETRAIN_MIX if e.stage <= stage]


def find_entry(name: str) -> MixEntry:
    """A mix or held-out entry by name; ``ValueError`` lists the names when unknown."""
    for e in (*PRETRAIN_MIX, *HELD_OUT):
        if e.name == name:
            return e
    raise ValueError(
        f"unknown tiny-base task {name!r}; allowed: {[e.name for e in (*PRETRAIN_MIX, *HELD_OUT)]}"
    )
