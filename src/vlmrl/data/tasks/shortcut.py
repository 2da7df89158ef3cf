"""``shortcut``: a task whose question text predicts the answer, so a model can skip the image.

A base task (``color``, ``position`` or ``count``) is drawn as usual, and its question gets a
hint in front: ``"Hint: 3. <image>How many ..."``. With probability ``bias`` the hinted value is the
true answer; otherwise it is one of the other possible answers, uniformly. ``bias=None`` makes the
hint independent of the answer (uniform over all answers): the de-biased split, on which a model
that copies the hint scores chance and only looking pays.

Why a hint that names an answer: it is the strongest language prior a question can carry (a
leading question), and copying a token from the prompt needs no knowledge of the scene, so the
blind accuracy it earns is exactly the hint's agreement rate. With ``K`` possible answers the
agreement is ``bias`` on the biased split and ``1/K`` on the de-biased one. The hint comes before
the image: the tiny base still answers its count questions perfectly with text there, while text
between the image and the question (or after it) derails it to 0-25 % accuracy.
"""

from __future__ import annotations

import random
from typing import Any

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import TaskGenerator
from vlmrl.data.tasks.registry import get_task, register_task

BASES = ("color", "position", "count")
"""Base tasks with a closed, small answer set (what a hint can name)."""


def answer_set(gen: TaskGenerator) -> tuple[str, ...]:
    """Every answer ``gen`` can produce under its knobs (a base task of :data:`BASES`)."""
    if gen.name == "color":
        return tuple(gen.colors)
    if gen.name == "position":
        return tuple(gen.answers())
    if gen.name == "count":
        return tuple(str(n) for n in range(gen.min_count, gen.max_count + 1))
    raise ValueError(f"task 'shortcut': knob 'base' must be one of {list(BASES)}, got {gen.name!r}")


def draw_hint(rng: random.Random, answer: str, answers: tuple[str, ...], bias: float | None) -> str:
    """The hinted answer: ``answer`` with probability ``bias``, else another answer uniformly;
    ``bias=None``: any answer uniformly, independent of ``answer``.

    >>> draw_hint(random.Random(0), "2", ("1", "2", "3"), 1.0)
    '2'
    >>> draw_hint(random.Random(0), "2", ("1", "2", "3"), 0.0) in ("1", "3")
    True
    """
    if bias is None:
        return rng.choice(answers)
    if rng.random() < bias:
        return answer
    return rng.choice([a for a in answers if a != answer])


@register_task
class ShortcutTask(TaskGenerator):
    """A base task's sample with a hint that agrees with the answer at rate ``bias``.

    Knobs: ``base`` (``color`` | ``position`` | ``count``), ``bias`` (probability the hint is the
    answer; None: independent of it), ``base_kwargs`` (the base task's own knobs). Facts are the
    base task's plus ``hint`` and ``base``.

    Example:
        >>> import random
        >>> s = ShortcutTask(base="color", bias=1.0).sample(random.Random(0), 0, "train")
        >>> s.facts["hint"] == s.answer, s.problem.startswith(f"Hint: {s.answer}. <image>")
        (True, True)
    """

    name = "shortcut"
    answer_type = "text"

    def __init__(
        self,
        size: int = 112,
        base: str = "count",
        bias: float | None = 0.875,
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
            raise ValueError(f"task 'shortcut': base {base!r} has one possible answer; a hint needs two")
        self.bias = None if bias is None else float(bias)
        self.answer_type = self.base.answer_type

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        s = self.base.sample(rng, index, split)
        hint = draw_hint(rng, s.answer, self.answers, self.bias)
        s.problem = f"Hint: {hint}. {s.problem}"  # before the image: see below
        s.facts = {**s.facts, "hint": hint, "base": self.base.name}
        s.task = self.name
        s.id = f"{self.name}-{split}-{index}"
        return s
