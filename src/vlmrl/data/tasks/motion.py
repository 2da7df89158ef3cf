"""``motion`` (a video) and ``compare`` (two images): tasks whose answer needs more than one picture.

``motion``: a circle sits in one quadrant for the first half of the frames and in another for
the second half; the answer is where it is at the end (or, ``ask="start"``, at the start). Any
single frame shows *a* quadrant, so only the order of the frames tells which one is the answer:
shuffling the frames (the ``shuffled_frames`` blind condition) leaves a model that reads order
no better than a guess between the two quadrants, which is what the temporal blind gap
measures. The answers are the ``position`` task's four quadrants, words the tiny base writes.

Why ``wording="base"`` exists: the tiny base, pretrained on images only, answers a position
question in its own words ("Where is the circle in the image? Answer …") and falls apart on any
other wording (asked "at the end of the video", it wrote no position at all when we probed it).
``base`` asks in those words (which moment is meant is then the task's convention, ``ask``);
``plain`` says it.

``compare``: two images of red circles (different counts); "which image has more?" ->
``first`` / ``second``.
"""

from __future__ import annotations

import random

from PIL import ImageDraw

from vlmrl.data.sample import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, Sample, Video
from vlmrl.data.tasks.base import TaskGenerator, check_colors, draw_shape, grid_boxes, obj, one_of
from vlmrl.data.tasks.registry import register_task
from vlmrl.data.tasks.simple import QUADRANTS

#: ``motion``'s question, by its ``wording`` knob.
WORDINGS = {
    "plain": "Where is the circle at the {moment} of the video?",
    "base": "Where is the circle in the image?",
}


@register_task
class MotionTask(TaskGenerator):
    """A circle jumps from one quadrant to another; where is it at the end? -> ``"top-left"``.

    Knobs: ``frames`` (even, ≥ 2: frames enter Qwen2.5-VL's tower in pairs, so each half is whole
    temporal patches when ``frames`` is a multiple of 4), ``fps`` (the video's rate: Qwen2.5-VL
    places temporal patch k at M-RoPE time ``k · tokens_per_second · 2 / fps``; the default 8 makes
    that step 1 for the tiny base's ``tokens_per_second`` = 4, the nearest to an image's 0), the
    circle's ``color`` and ``radius`` (fractions of the side, as ``position``), the moment asked
    about (``ask``: ``end`` | ``start``) and the question's ``wording`` (``plain`` | ``base``, see
    the module docstring).

    Example:
        >>> import random
        >>> s = MotionTask().sample(random.Random(0), 0, "train")
        >>> len(s.videos[0].frames), s.answer == s.facts["path"][-1], s.facts["path"][0] != s.answer
        (4, True, True)
        >>> MotionTask(ask="start").sample(random.Random(0), 0, "train").answer == s.facts["path"][0]
        True
    """

    name = "motion"
    answer_type = "text"

    def __init__(
        self,
        size: int = 112,
        frames: int = 4,
        fps: float = 8.0,
        color: str = "blue",
        radius: tuple[float, float] = (0.09, 0.15),
        ask: str = "end",
        wording: str = "plain",
    ) -> None:
        super().__init__(size)
        if frames < 2 or frames % 2:
            raise ValueError(f"task 'motion': knob 'frames' must be even and >= 2, got {frames}")
        if not fps > 0:
            raise ValueError(f"task 'motion': knob 'fps' must be > 0, got {fps}")
        if ask not in ("end", "start"):
            raise ValueError(f"task 'motion': knob 'ask' must be 'end' or 'start', got {ask!r}")
        if wording not in WORDINGS:
            raise ValueError(
                f"task 'motion': knob 'wording' must be one of {list(WORDINGS)}, got {wording!r}"
            )
        lo, hi = (float(x) for x in radius)
        if not 0.02 <= lo <= hi <= 0.2:
            raise ValueError(
                f"task 'motion': knob 'radius' must satisfy 0.02 <= lo <= hi <= 0.2, got {radius}"
            )
        self.frames, self.fps, self.radius = frames, float(fps), (lo, hi)
        self.ask, self.wording = ask, wording
        self.color = check_colors(self.name, "color", (color,))[0]

    def _circle(self, rng: random.Random, quadrant: str) -> list[int]:
        half, gap = self.size // 2, max(3, self.size // 28)
        r = rng.randint(max(2, int(self.size * self.radius[0])), max(2, int(self.size * self.radius[1])))
        cx = rng.randint(r + gap, half - r - gap) + (half if "right" in quadrant else 0)
        cy = rng.randint(r + gap, half - r - gap) + (half if quadrant.startswith("bottom") else 0)
        return [cx - r, cy - r, cx + r, cy + r]

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        start = rng.choice(QUADRANTS)
        end = rng.choice([q for q in QUADRANTS if q != start])
        boxes = {start: self._circle(rng, start), end: self._circle(rng, end)}
        path = [start] * (self.frames // 2) + [end] * (self.frames // 2)
        frames = []
        for q in path:
            image = self.canvas()
            draw_shape(ImageDraw.Draw(image), "circle", boxes[q], self.color)
            frames.append(image)
        question = f"{WORDINGS[self.wording].format(moment=self.ask)} Answer {one_of(QUADRANTS)}."
        facts = {
            "path": path,
            "objects": [obj("circle", self.color, boxes[q], frame=i) for i, q in enumerate(path)],
            "fps": self.fps,
            "image_size": [self.size, self.size],
        }
        return Sample(
            id=f"{self.name}-{split}-{index}",
            images=[],
            problem=f"{VIDEO_PLACEHOLDER}{question}",
            answer=end if self.ask == "end" else start,
            task=self.name,
            answer_type=self.answer_type,
            facts=facts,
            split=split,
            videos=[Video(frames, fps=self.fps)],
        )


@register_task
class CompareTask(TaskGenerator):
    """Two images of red circles: "Which image has more red circles?" -> ``first`` | ``second``.

    Knobs: counts ``1..max_count`` per image (never equal), on a ``grid x grid`` layout, in ``color``.

    Example:
        >>> import random
        >>> s = CompareTask().sample(random.Random(0), 0, "train")
        >>> a, b = s.facts["counts"]
        >>> len(s.images), s.answer == ("first" if a > b else "second")
        (2, True)
    """

    name = "compare"
    answer_type = "text"

    def __init__(self, size: int = 112, max_count: int = 6, grid: int = 4, color: str = "red") -> None:
        super().__init__(size)
        if not 2 <= max_count <= grid * grid:
            raise ValueError(
                f"task 'compare': need 2 <= max_count <= grid*grid, got {max_count}, grid {grid}"
            )
        self.max_count, self.grid = max_count, grid
        self.color = check_colors(self.name, "color", (color,))[0]

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        a, b = rng.sample(range(1, self.max_count + 1), 2)
        images, objects = [], []
        for i, n in enumerate((a, b)):
            image = self.canvas()
            draw = ImageDraw.Draw(image)
            for box in grid_boxes(rng, n, self.size, self.grid):
                draw_shape(draw, "circle", box, self.color)
                objects.append(obj("circle", self.color, box, image=i))
            images.append(image)
        question = f"Which image has more {self.color} circles? Answer first or second."
        return Sample(
            id=f"{self.name}-{split}-{index}",
            images=images,
            problem=f"{IMAGE_PLACEHOLDER}{IMAGE_PLACEHOLDER}{question}",
            answer="first" if a > b else "second",
            task=self.name,
            answer_type=self.answer_type,
            facts={"counts": [a, b], "objects": objects, "image_size": [self.size, self.size]},
            split=split,
        )
