"""``count_probe``: yes/no questions about a counting scene ("Are there 3 red circles?").

POPE's colour × shape existence probes are beyond the tiny base (it answers "yes" to all of
them), but counting red circles among blue/purple distractors is a skill it has (1.000 on its
card). These probes ask about that same scene, so a "no" can be grounded in what the model
already sees:

- ``kind="count"``: "Are there N red circles?" A yes-probe asks the true count; a no-probe asks
  a near miss, the true count ± 1 (kept within ``min_count..max_count`` where it can be).
- ``kind="color"``: "Is there a C circle?" A yes-probe asks a colour drawn in the scene; a
  no-probe asks one of ``probe_colors`` that is not.

``yes_ratio`` is the share of yes-probes: a training set with ``yes_ratio: 0.9`` pays a model
that answers "yes" without looking 90 % of the time ("guessing pays"); a held-out set with
``yes_ratio: 0.5`` is balanced. Facts hold every object drawn, the probe and ``present``.
"""

from __future__ import annotations

import random

from PIL import ImageDraw

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import (
    TaskGenerator,
    article,
    check_colors,
    draw_shape,
    grid_boxes,
    obj,
    plural,
)
from vlmrl.data.tasks.registry import register_task

KINDS = ("count", "color")


@register_task
class CountProbeTask(TaskGenerator):
    """A count scene and one yes/no probe about it; ``answer`` is ``"yes"`` or ``"no"``.

    Example:
        >>> import random
        >>> s = CountProbeTask(yes_ratio=0.0).sample(random.Random(3), 0, "test")
        >>> reds = sum(o["color"] == "red" for o in s.facts["objects"])
        >>> s.answer, s.facts["present"], s.facts["probe"]["count"] != reds
        ('no', False, True)
    """

    name = "count_probe"
    answer_type = "yesno"

    def __init__(
        self,
        size: int = 112,
        kind: str = "count",
        yes_ratio: float = 0.5,
        min_count: int = 1,
        max_count: int = 6,
        distractors: int = 3,
        grid: int = 4,
        color: str = "red",
        distractor_colors: tuple[str, ...] = ("blue", "purple"),
        probe_colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange"),
    ) -> None:
        super().__init__(size)
        if kind not in KINDS:
            raise ValueError(f"task 'count_probe': knob 'kind' must be one of {list(KINDS)}, got {kind!r}")
        if not 0.0 <= yes_ratio <= 1.0:
            raise ValueError(f"task 'count_probe': knob 'yes_ratio' must be in [0, 1], got {yes_ratio}")
        if not 1 <= min_count < max_count:
            raise ValueError(
                f"task 'count_probe': need 1 <= min_count < max_count (a near miss needs two counts), "
                f"got {min_count}, {max_count}"
            )
        if distractors < 0 or max_count + distractors > grid * grid:
            raise ValueError(
                f"task 'count_probe': max_count + distractors = {max_count + distractors} must fit the "
                f"{grid}x{grid} grid and distractors must be >= 0"
            )
        self.kind, self.yes_ratio = kind, yes_ratio
        self.min_count, self.max_count, self.distractors, self.grid = min_count, max_count, distractors, grid
        self.color = check_colors(self.name, "color", (color,))[0]
        self.distractor_colors = check_colors(self.name, "distractor_colors", distractor_colors)
        self.probe_colors = check_colors(self.name, "probe_colors", probe_colors)
        if self.color in self.distractor_colors:
            raise ValueError("task 'count_probe': distractor_colors must not contain the counted colour")
        if kind == "color" and set(self.probe_colors) <= {self.color, *self.distractor_colors}:
            raise ValueError(
                "task 'count_probe': probe_colors needs a colour that is never drawn (no-probes)"
            )

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        n = rng.randint(self.min_count, self.max_count)
        k = rng.randint(0, self.distractors)
        looks = [self.color] * n + [rng.choice(self.distractor_colors) for _ in range(k)]
        boxes = grid_boxes(rng, n + k, self.size, self.grid)
        image = self.canvas()
        draw = ImageDraw.Draw(image)
        objects = []
        for c, box in zip(looks, boxes, strict=True):
            draw_shape(draw, "circle", box, c)
            objects.append(obj("circle", c, box))
        objects.sort(key=lambda o: (o["box"][1], o["box"][0]))  # reading order
        is_yes = rng.random() < self.yes_ratio
        if self.kind == "count":
            asked = n if is_yes else near_miss(rng, n, self.min_count, self.max_count)
            question = f"Are there {asked} {self.color} {plural('circle')}? Answer yes or no."
            probe = {"color": self.color, "shape": "circle", "count": asked}
        else:
            drawn = sorted(set(looks))
            absent = [c for c in self.probe_colors if c not in drawn]
            asked_color = rng.choice(drawn) if is_yes else rng.choice(absent)
            question = f"Is there {article(asked_color)} {asked_color} circle in the image? Answer yes or no."
            probe = {"color": asked_color, "shape": "circle"}
        facts = {"objects": objects, "count": n, "probe": probe, "present": is_yes, "kind": self.kind}
        return self.make(image, question, "yes" if is_yes else "no", facts, index, split)


def near_miss(rng: random.Random, n: int, lo: int, hi: int) -> int:
    """``n ± 1``, the side chosen by ``rng`` among those inside ``lo..hi`` (``lo < hi``, so one is).

    >>> near_miss(random.Random(0), 1, 1, 6), near_miss(random.Random(0), 6, 1, 6)
    (2, 5)
    """
    options = [m for m in (n - 1, n + 1) if lo <= m <= hi]
    return rng.choice(options)
