"""``shortcut``: a task whose question predicts its answer, so a model can skip the image.

VQA-CP's construction (Agrawal et al. 2018, "Don't Just Assume; Look and Answer"): the same
question type gets a different answer distribution in training and in test. Here a base task
(``color``, ``position`` or ``count``) is drawn as usual, but each sample is redrawn until its
answer is a *target* chosen first: the ``prior`` answer with probability ``bias``, otherwise
one of the other possible answers uniformly. With ``bias=None`` the target is uniform over all
answers: the de-biased split, where the question says nothing about the answer.

So on the biased split the question alone ("How many red circles are there?") is right
``bias`` of the time by answering ``prior``; on the de-biased split that scores ``1/K`` (``K``
possible answers) and only looking pays. The question text is the base task's own, so the model
meets no new wording: what changes between the splits is only which answer the question predicts.
"""

from __future__ import annotations

import random
from typing import Any

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import TaskGenerator
from vlmrl.data.tasks.registry import get_task, register_task

BASES = ("color", "position", "count")
"""Base tasks with a closed, small answer set (what a prior can favour)."""
MAX_REDRAWS = 10_000
"""Base samples drawn at most to meet a target answer (each draw hits it with probability ~1/K)."""


def answer_set(gen: TaskGenerator) -> tuple[str, ...]:
    """Every answer ``gen`` can produce under its knobs (a base task of :data:`BASES`)."""
    if gen.name == "color":
        return tuple(gen.colors)
    if gen.name == "position":
        return tuple(gen.answers())
    if gen.name == "count":
        return tuple(str(n) for n in range(gen.min_count, gen.max_count + 1))
    raise ValueError(f"task 'shortcut': knob 'base' must be one of {list(BASES)}, got {gen.name!r}")


def draw_target(rng: random.Random, prior: str, answers: tuple[str, ...], bias: float | None) -> str:
    """The answer a sample must have: ``prior`` with probability ``bias``, else another answer
    uniformly; ``bias=None``: any answer uniformly.

    >>> draw_target(random.Random(0), "2", ("1", "2", "3"), 1.0)
    '2'
    >>> draw_target(random.Random(0), "2", ("1", "2", "3"), 0.0) in ("1", "3")
    True
    """
    if bias is None:
        return rng.choice(answers)
    if rng.random() < bias:
        return prior
    return rng.choice([a for a in answers if a != prior])


@register_task
class ShortcutTask(TaskGenerator):
    """A base task whose answer is ``prior`` at rate ``bias`` (see the module docstring).

    Knobs: ``base`` (``color`` | ``position`` | ``count``), ``bias`` (share of samples whose
    answer is ``prior``; None: answers uniform), ``prior`` (the favoured answer; None: the middle
    one of the base's answers), ``base_kwargs`` (the base task's own knobs). Facts are the base
    task's plus ``prior``.

    Example:
        >>> import random
        >>> t = ShortcutTask(base="color", bias=1.0, prior="blue")
        >>> s = t.sample(random.Random(0), 0, "train")
        >>> s.answer, s.facts["objects"][0]["color"], s.problem.endswith("What color is the square?"
        ...                                                              " Answer with one word.")
        ('blue', 'blue', True)
    """

    name = "shortcut"
    answer_type = "text"

    def __init__(
        self,
        size: int = 112,
        base: str = "count",
        bias: float | None = 0.9,
        prior: str | None = None,
        base_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(size)
        if base not in BASES:
            raise ValueError(f"task 'shortcut': knob 'base' must be one of {list(BASES)}, got {base!r}")
        if bias is not None and not 0.0 <= float(bias) <= 1.0:
            raise ValueError(f"task 'shortcut': knob 'bias' must be in [0, 1] or null, got {bias}")
        self.base = get_task(base, size=size, **(base_kwargs or {}))
        self.answers = answer_set(self.base)
        if len(self.answers) < 2:
            raise ValueError(f"task 'shortcut': base {base!r} has one possible answer; a prior needs two")
        prior = self.answers[len(self.answers) // 2] if prior is None else str(prior)
        if prior not in self.answers:
            raise ValueError(
                f"task 'shortcut': knob 'prior' must be one of {list(self.answers)}, got {prior!r}"
            )
        self.prior = prior
        self.bias = None if bias is None else float(bias)
        self.answer_type = self.base.answer_type

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        target = draw_target(rng, self.prior, self.answers, self.bias)
        for _ in range(MAX_REDRAWS):
            s = self.base.sample(rng, index, split)
            if s.answer == target:
                break
        else:  # unreachable for the bases' answer sets (each answer has probability >= 1/K)
            raise RuntimeError(f"task 'shortcut': no {self.base.name} sample with answer {target!r}")
        s.facts = {**s.facts, "prior": self.prior}
        s.task = self.name
        s.id = f"{self.name}-{split}-{index}"
        return s
