"""``ground``: give the pixel bounding box of one named object among distractors.

The answer is ``"[x1, y1, x2, y2]"`` in pixels of the image as given (inclusive corners, as PIL
draws), which the IoU reward parses. Every object has a distinct colour/shape combination, so
the name picks exactly one; distractors often share the target's colour or shape, so both
attributes must be seen.
"""

from __future__ import annotations

import random

from PIL import ImageDraw

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import (
    COLORS,
    SHAPES,
    TaskGenerator,
    check_colors,
    check_shapes,
    draw_shape,
    obj,
    place_boxes,
)
from vlmrl.data.tasks.registry import register_task


def format_box(box: list[int]) -> str:
    """``[12, 30, 40, 58]``: the one box format answers use."""
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


@register_task
class GroundTask(TaskGenerator):
    """Question "Give the bounding box of the red triangle" -> ``"[12, 30, 40, 58]"`` (answer_type ``box``).

    Knobs: ``distractors`` (how many other objects), ``min_scale``/``max_scale`` (object side as
    a fraction of the image), ``colors`` and ``shapes``.
    """

    name = "ground"
    answer_type = "box"

    def __init__(
        self,
        size: int = 112,
        distractors: int = 2,
        min_scale: float = 0.15,
        max_scale: float = 0.3,
        colors: tuple[str, ...] = COLORS,
        shapes: tuple[str, ...] = SHAPES,
    ) -> None:
        super().__init__(size)
        self.colors = check_colors(self.name, "colors", colors)
        self.shapes = check_shapes(self.name, "shapes", shapes)
        if not 0 <= distractors < len(self.colors) * len(self.shapes):
            raise ValueError(
                f"task 'ground': knob 'distractors' must be in [0, {len(self.colors) * len(self.shapes) - 1}]"
                f" (distinct colour/shape combinations), got {distractors}"
            )
        if not 0.05 <= min_scale <= max_scale <= 0.5:
            raise ValueError(
                f"task 'ground': need 0.05 <= min_scale <= max_scale <= 0.5, got {min_scale}, {max_scale}"
            )
        self.distractors, self.min_scale, self.max_scale = distractors, min_scale, max_scale

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        combos = rng.sample([(c, s) for c in self.colors for s in self.shapes], self.distractors + 1)
        lo, hi = round(self.size * self.min_scale), round(self.size * self.max_scale)
        boxes = place_boxes(rng, len(combos), self.size, lo, hi)
        image = self.canvas()
        draw = ImageDraw.Draw(image)
        objects = []
        for (c, s), box in zip(combos, boxes, strict=True):
            draw_shape(draw, s, box, c)
            objects.append(obj(s, c, box))
        target = rng.randrange(len(objects))
        t = objects[target]
        question = (
            f"What is the bounding box of the {t['color']} {t['shape']}? "
            f"Answer as [x1, y1, x2, y2] in pixels of this {self.size}x{self.size} image."
        )
        facts = {"objects": objects, "target": target}
        return self.make(image, question, format_box(t["box"]), facts, index, split)
