"""The two simplest tasks: ``color`` and ``position``.

They exist so a tiny model can show that it learns from pixels at all: the answer is one word
that depends only on the image (the blind-gap and learnability tests rely on this).
"""

from __future__ import annotations

import random

from PIL import ImageDraw

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import TaskGenerator, check_colors, draw_shape, obj, one_of
from vlmrl.data.tasks.registry import register_task


@register_task
class ColorTask(TaskGenerator):
    """One big square of one colour: "What color is the square?" -> ``"red"``.

    Example:
        >>> import random
        >>> s = ColorTask().sample(random.Random(0), 0, "train")
        >>> s.answer in ("red", "green", "blue"), s.facts["objects"][0]["color"] == s.answer
        (True, True)
    """

    name = "color"
    answer_type = "text"

    def __init__(self, size: int = 112, colors: tuple[str, ...] = ("red", "green", "blue")) -> None:
        super().__init__(size)
        self.colors = check_colors(self.name, "colors", colors)

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        color = rng.choice(self.colors)
        side = rng.randint(int(self.size * 0.45), int(self.size * 0.7))
        x1 = rng.randint(4, self.size - 4 - side)
        y1 = rng.randint(4, self.size - 4 - side)
        box = [x1, y1, x1 + side, y1 + side]
        image = self.canvas()
        draw_shape(ImageDraw.Draw(image), "square", box, color)
        question = "What color is the square? Answer with one word."
        return self.make(image, question, color, {"objects": [obj("square", color, box)]}, index, split)


QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


@register_task
class PositionTask(TaskGenerator):
    """One circle in one quadrant: answer ``top-left|top-right|bottom-left|bottom-right``.

    ``classes=2`` asks only ``left|right`` (the circle may then sit at any height). ``radius`` is
    the circle's radius range as fractions of the image side and ``contrast`` how far its colour
    stands out from the white background (1: the palette colour; 0.2: a pale tint, see
    :func:`~vlmrl.data.tasks.base.faded`): distribution-shift knobs, since a model trained on big,
    saturated circles may miss small or faint ones.
    """

    name = "position"
    answer_type = "text"

    def __init__(
        self,
        size: int = 112,
        classes: int = 4,
        color: str = "blue",
        radius: tuple[float, float] = (0.09, 0.15),
        contrast: float = 1.0,
    ) -> None:
        super().__init__(size)
        if classes not in (2, 4):
            raise ValueError(f"task 'position': knob 'classes' must be 2 or 4, got {classes}")
        lo, hi = (float(x) for x in radius)
        if not 0.02 <= lo <= hi <= 0.2:
            raise ValueError(
                f"task 'position': knob 'radius' must satisfy 0.02 <= lo <= hi <= 0.2, got {radius}"
            )
        if not 0.0 < float(contrast) <= 1.0:
            raise ValueError(
                f"task 'position': knob 'contrast' must satisfy 0 < contrast <= 1, got {contrast}"
            )
        self.radius = (lo, hi)
        self.contrast = float(contrast)
        self.classes = classes
        self.color = check_colors(self.name, "color", (color,))[0]

    def answers(self) -> tuple[str, ...]:
        """All possible answers under the current knobs."""
        return ("left", "right") if self.classes == 2 else QUADRANTS

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        answer = rng.choice(self.answers())
        half, gap = self.size // 2, max(3, self.size // 28)  # keep the circle clear of the midlines
        r = rng.randint(max(2, int(self.size * self.radius[0])), max(2, int(self.size * self.radius[1])))
        lo, hi = r + gap, half - r - gap  # centre range inside one half
        cx = rng.randint(lo, hi) + (half if "right" in answer else 0)
        if self.classes == 2:
            cy = rng.randint(r + gap, self.size - r - gap)
        else:
            cy = rng.randint(lo, hi) + (half if answer.startswith("bottom") else 0)
        box = [cx - r, cy - r, cx + r, cy + r]
        image = self.canvas()
        draw_shape(ImageDraw.Draw(image), "circle", box, self.color, self.contrast)
        question = f"Where is the circle in the image? Answer {one_of(self.answers())}."
        extra = {} if self.contrast == 1.0 else {"contrast": self.contrast}
        facts = {"objects": [obj("circle", self.color, box, **extra)], "classes": self.classes}
        return self.make(image, question, answer, facts, index, split)


def position_of(box: list[int], size: tuple[int, int], classes: int = 4) -> str:
    """The position answer implied by a box's centre (used to check facts against answers)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    horiz = "left" if cx < size[0] / 2 else "right"
    if classes == 2:
        return horiz
    return f"{'top' if cy < size[1] / 2 else 'bottom'}-{horiz}"
