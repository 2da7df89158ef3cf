"""``pope``: POPE-style yes/no existence probes ("Is there a green triangle in the image?").

POPE (Li et al., 2023, "Evaluating Object Hallucination in Large Vision-Language Models")
samples absent objects three ways; we mirror them on procedural scenes:

- ``random``: any colour/shape combination not in the scene.
- ``popular``: one of the three absent combinations that are most frequent in the scene prior. Scenes here are
  drawn from a fixed Zipf-like prior over combinations (``POPULARITY``), so some objects are
  common across the data set, as in COCO, and a model that guesses from priors says "yes".
- ``adversarial``: an absent combination that differs from a present object by one attribute
  (same shape, other colour, or same colour, other shape): the co-occurrence trap.

Facts record the probed object, whether it is present, and the negative mode used.
"""

from __future__ import annotations

import random

from PIL import ImageDraw

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import COLORS, SHAPES, TaskGenerator, article, draw_shape, obj, place_boxes
from vlmrl.data.tasks.registry import register_task

MODES = ("random", "popular", "adversarial")

#: Every colour/shape combination in a fixed, shuffled order of decreasing popularity.
POPULARITY: list[tuple[str, str]] = [(c, s) for c in COLORS for s in SHAPES]
random.Random(1234).shuffle(POPULARITY)
WEIGHTS = [1.0 / (rank + 1) for rank in range(len(POPULARITY))]  # Zipf: rank 1 is 18x rank 18


@register_task
class PopeTask(TaskGenerator):
    """A scene of ``min_objects..max_objects`` distinct objects and one existence question.

    Knobs: ``yes_ratio`` (share of probes about present objects), ``mode`` (``random``,
    ``popular``, ``adversarial`` or ``mixed`` to draw one per sample).
    """

    name = "pope"
    answer_type = "yesno"

    def __init__(
        self,
        size: int = 112,
        min_objects: int = 2,
        max_objects: int = 4,
        yes_ratio: float = 0.5,
        mode: str = "random",
    ) -> None:
        super().__init__(size)
        if mode not in (*MODES, "mixed"):
            raise ValueError(f"task 'pope': unknown mode {mode!r}; allowed: {[*MODES, 'mixed']}")
        if not 0.0 <= yes_ratio <= 1.0:
            raise ValueError(f"task 'pope': knob 'yes_ratio' must be in [0, 1], got {yes_ratio}")
        if not 1 <= min_objects <= max_objects <= 6:
            raise ValueError(
                f"task 'pope': need 1 <= min_objects <= max_objects <= 6, got {min_objects}, {max_objects}"
            )
        self.min_objects, self.max_objects = min_objects, max_objects
        self.yes_ratio, self.mode = yes_ratio, mode

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        n = rng.randint(self.min_objects, self.max_objects)
        present: list[tuple[str, str]] = []
        while len(present) < n:  # weighted sampling without replacement from the prior
            combo = rng.choices(POPULARITY, weights=WEIGHTS)[0]
            if combo not in present:
                present.append(combo)
        boxes = place_boxes(rng, n, self.size, round(self.size * 0.16), round(self.size * 0.26))
        image = self.canvas()
        draw = ImageDraw.Draw(image)
        objects = []
        for (c, s), box in zip(present, boxes, strict=True):
            draw_shape(draw, s, box, c)
            objects.append(obj(s, c, box))
        is_yes = rng.random() < self.yes_ratio
        mode = rng.choice(MODES) if self.mode == "mixed" else self.mode
        probe = rng.choice(present) if is_yes else negative(rng, present, mode)
        question = f"Is there {article(probe[0])} {probe[0]} {probe[1]} in the image? Answer yes or no."
        facts = {
            "objects": objects,
            "probe": {"color": probe[0], "shape": probe[1]},
            "present": is_yes,
            "mode": None if is_yes else mode,
        }
        return self.make(image, question, "yes" if is_yes else "no", facts, index, split)


def negative(rng: random.Random, present: list[tuple[str, str]], mode: str) -> tuple[str, str]:
    """An absent colour/shape combination chosen by POPE negative-sampling ``mode``."""
    absent = [combo for combo in POPULARITY if combo not in present]  # in popularity order
    if mode == "popular":  # one of the three most popular absent objects, so probes still vary
        return rng.choice(absent[:3])
    if mode == "adversarial":
        near = [a for a in absent if any((a[0] == p[0]) != (a[1] == p[1]) for p in present)]
        if near:  # differs from some present object in exactly one attribute
            return rng.choice(near)
    return rng.choice(absent)
