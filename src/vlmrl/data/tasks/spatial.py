"""``spatial``: "Is the red circle left of the blue square?" -> ``yes`` / ``no``.

The two objects never overlap along the asked axis (a ``gap`` of clear pixels separates them),
so every question has an unambiguous answer; yes and no are balanced by ``yes_ratio``.
"""

from __future__ import annotations

import random

from PIL import ImageDraw

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import COLORS, SHAPES, TaskGenerator, check_colors, check_shapes, draw_shape, obj
from vlmrl.data.tasks.registry import register_task

RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}


@register_task
class SpatialTask(TaskGenerator):
    """Two named objects and a yes/no question about their relation.

    Knobs: ``relations`` (subset of ``left|right|above|below``), ``yes_ratio``, the ``colors``
    and ``shapes`` objects are drawn from.
    """

    name = "spatial"
    answer_type = "yesno"

    def __init__(
        self,
        size: int = 112,
        relations: tuple[str, ...] = tuple(RELATIONS),
        yes_ratio: float = 0.5,
        colors: tuple[str, ...] = COLORS,
        shapes: tuple[str, ...] = SHAPES,
    ) -> None:
        super().__init__(size)
        bad = [r for r in relations if r not in RELATIONS]
        if bad or not relations:
            raise ValueError(f"task 'spatial': unknown relations {bad}; allowed: {list(RELATIONS)}")
        if not 0.0 <= yes_ratio <= 1.0:
            raise ValueError(f"task 'spatial': knob 'yes_ratio' must be in [0, 1], got {yes_ratio}")
        self.relations, self.yes_ratio = tuple(relations), yes_ratio
        self.colors = check_colors(self.name, "colors", colors)
        self.shapes = check_shapes(self.name, "shapes", shapes)
        if len(self.colors) * len(self.shapes) < 2:
            raise ValueError("task 'spatial': need at least two distinct colour/shape combinations")

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        combos = [(c, s) for c in self.colors for s in self.shapes]
        (c1, s1), (c2, s2) = rng.sample(combos, 2)
        relation = rng.choice(self.relations)
        truth = rng.random() < self.yes_ratio
        size, margin, gap = self.size, max(3, self.size // 28), max(4, self.size // 14)
        sides = [rng.randint(int(size * 0.17), int(size * 0.27)) for _ in range(2)]
        # Along the asked axis: "low" (left/top) object first, then the "high" one after a gap.
        subject_low = (relation in ("left", "above")) == truth
        lo_side, hi_side = (sides[0], sides[1]) if subject_low else (sides[1], sides[0])
        lo_start = rng.randint(margin, size - margin - lo_side - gap - hi_side)
        hi_start = rng.randint(lo_start + lo_side + gap, size - margin - hi_side)
        along = (lo_start, hi_start) if subject_low else (hi_start, lo_start)
        across = [rng.randint(margin, size - margin - side) for side in sides]
        horizontal = relation in ("left", "right")
        boxes = []
        for a, b, side in zip(along, across, sides, strict=True):
            x1, y1 = (a, b) if horizontal else (b, a)
            boxes.append([x1, y1, x1 + side, y1 + side])
        image = self.canvas()
        draw = ImageDraw.Draw(image)
        for (c, s), box in zip(((c1, s1), (c2, s2)), boxes, strict=True):
            draw_shape(draw, s, box, c)
        question = f"Is the {c1} {s1} {RELATIONS[relation]} the {c2} {s2}? Answer yes or no."
        facts = {
            "objects": [obj(s1, c1, boxes[0]), obj(s2, c2, boxes[1])],
            "relation": relation,
            "subject": 0,
            "reference": 1,
        }
        return self.make(image, question, "yes" if truth else "no", facts, index, split)


def relation_holds(relation: str, subject: list[int], reference: list[int]) -> bool:
    """Whether ``subject`` box is strictly ``relation`` of ``reference`` box (y grows downward)."""
    if relation == "left":
        return subject[2] < reference[0]
    if relation == "right":
        return subject[0] > reference[2]
    if relation == "above":
        return subject[3] < reference[1]
    return subject[1] > reference[3]
