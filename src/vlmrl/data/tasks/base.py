"""What every procedural task shares: the generator interface, the palette, shapes and fonts.

Tasks draw with a small palette of well-separated colours on a solid white background, so that
a person (and a few-million-parameter model) can read every image at 112 px. Every drawing
helper takes its randomness from the ``random.Random`` it is handed, never from a global, so a
sample is a pure function of ``(task knobs, seed, split, index)``.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from functools import lru_cache
from typing import Any, ClassVar

from PIL import Image, ImageDraw, ImageFont

from vlmrl.data.sample import IMAGE_PLACEHOLDER, Sample

#: Colour name -> RGB. Names are what questions, answers and facts use.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (30, 160, 60),
    "blue": (40, 90, 225),
    "yellow": (235, 195, 0),
    "purple": (145, 60, 190),
    "orange": (250, 130, 20),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)

Box = list[int]  # [x1, y1, x2, y2] in pixels, inclusive, as PIL draws it


class TaskGenerator(ABC):
    """A seeded procedural task: ``sample(rng, index, split)`` returns one :class:`Sample`.

    Subclasses set ``name`` and ``answer_type`` and take their difficulty knobs as constructor
    keyword arguments, so a config can say ``get_task("count", max_count=6)``. ``sample`` must
    use only ``rng`` for randomness; ``index`` and ``split`` only name the sample.
    """

    name: ClassVar[str]
    answer_type: ClassVar[str]

    def __init__(self, size: int = 112) -> None:
        if size < 32:
            raise ValueError(f"task {self.name!r}: size must be >= 32 pixels, got {size}")
        self.size = size

    @abstractmethod
    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        """Draw one sample; all randomness must come from ``rng``."""

    # ---- helpers for subclasses -------------------------------------------------------------
    def canvas(self, width: int | None = None, height: int | None = None) -> Image.Image:
        """A blank RGB image of the task's size (or the given size)."""
        return Image.new("RGB", (width or self.size, height or self.size), BACKGROUND)

    def make(
        self, image: Image.Image, question: str, answer: str, facts: dict[str, Any], index: int, split: str
    ) -> Sample:
        """Wrap one rendered image as a Sample: placeholder first, as geometry3k prompts do."""
        facts = {"image_size": [image.width, image.height], **facts}
        return Sample(
            id=f"{self.name}-{split}-{index}",
            images=[image],
            problem=f"{IMAGE_PLACEHOLDER}{question}",
            answer=answer,
            task=self.name,
            answer_type=self.answer_type,
            facts=facts,
            split=split,
        )


def check_colors(task: str, knob: str, colors: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate colour names against the palette; errors name the knob and the allowed values."""
    bad = [c for c in colors if c not in PALETTE]
    if bad or not colors:
        raise ValueError(f"task {task!r}: knob {knob!r} has unknown colours {bad}; allowed: {list(COLORS)}")
    return tuple(colors)


def check_shapes(task: str, knob: str, shapes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate shape names; errors name the knob and the allowed values."""
    bad = [s for s in shapes if s not in SHAPES]
    if bad or not shapes:
        raise ValueError(f"task {task!r}: knob {knob!r} has unknown shapes {bad}; allowed: {list(SHAPES)}")
    return tuple(shapes)


def plural(shape: str) -> str:
    """English plural of a shape name (``"circle"`` -> ``"circles"``)."""
    return shape + "s"


def article(word: str) -> str:
    """``"a"`` or ``"an"`` before ``word`` ("an orange square")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def one_of(options: tuple[str, ...] | list[str]) -> str:
    """``"a, b or c"``: how questions list their allowed answers."""
    options = list(options)
    return options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]


def faded(rgb: tuple[int, int, int], contrast: float) -> tuple[int, int, int]:
    """``rgb`` mixed with the white background: ``round(bg + contrast · (rgb − bg))`` per channel.

    >>> faded((40, 90, 225), 1.0), faded((40, 90, 225), 0.5), faded((40, 90, 225), 0.0)
    ((40, 90, 225), (148, 172, 240), (255, 255, 255))
    """
    r, g, b = (round(bg + contrast * (c - bg)) for c, bg in zip(rgb, BACKGROUND, strict=True))
    return r, g, b


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Box, color: str, contrast: float = 1.0) -> None:
    """Fill ``shape`` inside ``box``; the shape touches all four sides of the box. ``contrast`` < 1
    draws the colour :func:`faded` toward the background."""
    x1, y1, x2, y2 = box
    fill = faded(PALETTE[color], contrast)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=fill)
    else:  # pragma: no cover - shapes are validated at construction
        raise ValueError(f"unknown shape {shape!r}; allowed: {list(SHAPES)}")


def obj(shape: str, color: str, box: Box, **extra: Any) -> dict[str, Any]:
    """One entry of ``facts["objects"]``: plain JSON types only."""
    return {"shape": shape, "color": color, "box": [int(v) for v in box], **extra}


def place_boxes(
    rng: random.Random, n: int, size: int, lo: int, hi: int, margin: int = 4, gap: int = 4
) -> list[Box]:
    """Place ``n`` square boxes with sides in ``[lo, hi]`` that do not overlap (``gap`` px apart).

    Rejection sampling keeps layouts varied; if a crowded layout keeps failing we fall back to
    a shuffled grid of cells, so the function always returns (still deterministic in ``rng``).
    """
    boxes: list[Box] = []
    for _ in range(200 * max(n, 1)):
        if len(boxes) == n:
            return boxes
        side = rng.randint(lo, hi)
        x1 = rng.randint(margin, size - margin - side)
        y1 = rng.randint(margin, size - margin - side)
        box = [x1, y1, x1 + side, y1 + side]
        if all(not _overlap(box, b, gap) for b in boxes):
            boxes.append(box)
    if len(boxes) == n:
        return boxes
    return grid_boxes(rng, n, size, cells=max(2, int(n**0.5) + 1), jitter=0.0)


def grid_boxes(rng: random.Random, n: int, size: int, cells: int, jitter: float = 0.15) -> list[Box]:
    """Pick ``n`` distinct cells of a ``cells x cells`` grid and put a jittered box in each."""
    if n > cells * cells:
        raise ValueError(f"cannot place {n} objects on a {cells}x{cells} grid")
    cell = size / cells
    side = int(cell * 0.62)
    slack = cell - side
    boxes = []
    for c in rng.sample(range(cells * cells), n):
        row, col = divmod(c, cells)
        dx = slack / 2 + rng.uniform(-jitter, jitter) * slack
        dy = slack / 2 + rng.uniform(-jitter, jitter) * slack
        x1, y1 = int(col * cell + dx), int(row * cell + dy)
        boxes.append([x1, y1, x1 + side, y1 + side])
    return boxes


def _overlap(a: Box, b: Box, gap: int) -> bool:
    return not (a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1])


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` px (needs Pillow >= 10.1 with FreeType).

    Falls back to the fixed bitmap font so a Pillow without FreeType still renders, only smaller.
    """
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # pragma: no cover - old or minimal Pillow
        return ImageFont.load_default()


def draw_text_centered(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, fill: tuple[int, int, int] = INK
) -> Box:
    """Draw ``text`` centred on ``xy`` and return its bounding box (for the facts)."""
    f = font(size)
    draw.text(xy, text, fill=fill, font=f, anchor="mm")
    return [int(v) for v in draw.textbbox(xy, text, font=f, anchor="mm")]
