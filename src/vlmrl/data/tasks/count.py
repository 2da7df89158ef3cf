"""``count``: how many objects of one colour (and shape) are in the image.

Objects sit in distinct cells of a ``grid x grid`` layout with jitter, so they never overlap
and a person can count them at a glance; distractors differ from the target in colour (or in
shape when several shapes are allowed), which is what makes counting need perception.
"""

from __future__ import annotations

import random

from PIL import ImageDraw

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import (
    TaskGenerator,
    check_colors,
    check_shapes,
    draw_shape,
    grid_boxes,
    obj,
    plural,
)
from vlmrl.data.tasks.registry import register_task


@register_task
class CountTask(TaskGenerator):
    """Question "How many red circles are there?" -> answer ``"3"``; facts list every object drawn.

    Knobs: ``min_count..max_count`` targets, ``0..distractors`` distractors, a ``grid`` of cells,
    the asked ``color``, the ``distractor_colors`` and the ``shapes`` to draw from.

    Example:
        >>> import random
        >>> s = CountTask().sample(random.Random(1), 0, "train")
        >>> want = s.facts["asked"]
        >>> int(s.answer) == sum(o["color"] == want["color"] and o["shape"] == want["shape"]
        ...                      for o in s.facts["objects"])
        True
    """

    name = "count"
    answer_type = "number"

    def __init__(
        self,
        size: int = 112,
        max_count: int = 4,
        min_count: int = 1,
        distractors: int = 3,
        grid: int = 4,
        color: str = "red",
        distractor_colors: tuple[str, ...] = ("blue",),
        shapes: tuple[str, ...] = ("circle",),
    ) -> None:
        super().__init__(size)
        if not 0 <= min_count <= max_count:
            raise ValueError(f"task 'count': need 0 <= min_count <= max_count, got {min_count}, {max_count}")
        if distractors < 0 or max_count + distractors > grid * grid:
            raise ValueError(
                f"task 'count': max_count + distractors = {max_count + distractors} must fit the "
                f"{grid}x{grid} grid ({grid * grid} cells) and distractors must be >= 0"
            )
        self.min_count, self.max_count, self.distractors, self.grid = min_count, max_count, distractors, grid
        self.color = check_colors(self.name, "color", (color,))[0]
        self.distractor_colors = check_colors(self.name, "distractor_colors", distractor_colors)
        self.shapes = check_shapes(self.name, "shapes", shapes)
        if distractors and len(self.shapes) == 1 and set(self.distractor_colors) <= {self.color}:
            raise ValueError("task 'count': distractor_colors must contain a colour other than the asked one")

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        shape = rng.choice(self.shapes)
        n = rng.randint(self.min_count, self.max_count)
        k = rng.randint(0, self.distractors)
        kinds = [
            (c, s)
            for c in dict.fromkeys((self.color, *self.distractor_colors))
            for s in self.shapes
            if (c, s) != (self.color, shape)
        ]
        looks = [(self.color, shape)] * n + [rng.choice(kinds) for _ in range(k)]
        boxes = grid_boxes(rng, n + k, self.size, self.grid)
        image = self.canvas()
        draw = ImageDraw.Draw(image)
        objects = []
        for (c, s), box in zip(looks, boxes, strict=True):
            draw_shape(draw, s, box, c)
            objects.append(obj(s, c, box))
        objects.sort(key=lambda o: (o["box"][1], o["box"][0]))  # reading order, independent of draw order
        question = f"How many {self.color} {plural(shape)} are there? Answer with a number."
        facts = {"objects": objects, "asked": {"color": self.color, "shape": shape}, "count": n}
        return self.make(image, question, str(n), facts, index, split)
