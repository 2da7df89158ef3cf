"""Image pairs for "who is the spy": a procedural scene and a copy that differs in one fact.

The civilians' image A is a sample of an existing procedural task, untouched; the spy's image B is
made from A's *pixels* (never re-rendered), so it differs in exactly one fact and in nothing else:

* ``count``: one target object more (a copy of an existing target's pixels pasted into an empty
  spot) or, with two or more targets, one fewer (its box painted with the background);
* ``position``: the circle's pixels moved to the horizontally mirrored quadrant;
* ``color``: the square repainted in another palette colour.

:func:`make_pair` keeps both values of the fact (``fact_a``, ``fact_b``) for transcripts and for
the one rule that needs them (the spy naming its own fact, :mod:`vlmrl.envs.spy.game`); no reward
reads either image's answer as a label.

Example:
    >>> import random
    >>> from vlmrl.data.tasks import generate
    >>> s = generate("count", 1, seed=3, distractor_colors=("green", "yellow"), max_count=6)[0]
    >>> p = make_pair(s, random.Random(0))
    >>> p.kind, abs(int(p.fact_b) - int(p.fact_a)), p.image_a.size == p.image_b.size
    ('count', 1, True)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import BACKGROUND, COLORS, draw_shape
from vlmrl.data.tasks.simple import position_of

#: The procedural tasks a pair can be made from, and the fact that differs (one source: the game
#: and its config check read this).
PAIR_KINDS: dict[str, str] = {
    "count": "one target object more or fewer",
    "position": "the circle in the mirrored quadrant",
    "color": "the square in another colour",
}


@dataclass(frozen=True)
class ImagePair:
    """Image A (civilians), image B (spy) and the one fact in which they differ."""

    image_a: Image.Image
    image_b: Image.Image
    question: str
    """The task's question (without the image placeholder): what a clue answers."""
    kind: str
    fact_a: str
    fact_b: str

    @property
    def difference(self) -> str:
        """``"count: 3 -> 4"``: what the spy's image changes, for transcripts."""
        return f"{self.kind}: {self.fact_a} -> {self.fact_b}"


def _overlaps(a: list[int], b: list[int], gap: int) -> bool:
    return not (a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1])


def _free_spot(
    rng: random.Random, boxes: list[list[int]], side: int, size: tuple[int, int]
) -> list[int] | None:
    """A ``side``-pixel box clear of every box in ``boxes`` (3 px apart), or ``None``."""
    step = max(2, side // 3)
    spots = [
        [x, y, x + side, y + side]
        for y in range(2, size[1] - side - 2, step)
        for x in range(2, size[0] - side - 2, step)
    ]
    rng.shuffle(spots)
    return next((s for s in spots if not any(_overlaps(s, b, 3) for b in boxes)), None)


COUNT_CHANGES = ("both", "more")
"""``count`` pairs: B has one target more or fewer (``both``), or always one more (``more``)."""


def check_count_change(count_change: str) -> None:
    """``ValueError`` naming the allowed values unless ``count_change`` is one of :data:`COUNT_CHANGES`."""
    if count_change not in COUNT_CHANGES:
        raise ValueError(f"spy game: count_change must be one of {list(COUNT_CHANGES)}, got {count_change!r}")


def _count_pair(s: Sample, rng: random.Random, change: str = "both") -> tuple[Image.Image, str, str]:
    asked = s.facts["asked"]
    objects = s.facts["objects"]
    targets = [o for o in objects if o["color"] == asked["color"] and o["shape"] == asked["shape"]]
    n = len(targets)
    image = s.images[0].copy()
    remove = n >= 2 and rng.random() < 0.5 and change == "both"
    if not remove:
        src = rng.choice(targets)["box"] if targets else None
        side = src[2] - src[0] if src else image.width // 7
        spot = _free_spot(rng, [o["box"] for o in objects], side + 1, image.size)
        if spot is None:  # no room for one more: take one away instead (n >= 1 then)
            remove = n >= 1  # (also with change="more": the scene is full, the only change left)
        elif src is not None:
            patch = s.images[0].crop((src[0], src[1], src[2] + 1, src[3] + 1))
            image.paste(patch, (spot[0], spot[1]))
        else:
            draw_shape(
                ImageDraw.Draw(image),
                asked["shape"],
                [*spot[:2], spot[0] + side, spot[1] + side],
                asked["color"],
            )
    if remove:
        box = rng.choice(targets)["box"]
        ImageDraw.Draw(image).rectangle(box, fill=BACKGROUND)
        return image, str(n), str(n - 1)
    return image, str(n), str(n + 1)


def _position_pair(s: Sample, rng: random.Random, change: str = "both") -> tuple[Image.Image, str, str]:
    box = s.facts["objects"][0]["box"]
    w = s.images[0].width
    image = s.images[0].copy()
    patch = s.images[0].crop((box[0], box[1], box[2] + 1, box[3] + 1))
    ImageDraw.Draw(image).rectangle(box, fill=BACKGROUND)
    x1 = w - 1 - box[2]  # mirrored left-right: the quadrant's left/right flips, top/bottom stays
    image.paste(patch, (x1, box[1]))
    mirrored = [x1, box[1], x1 + box[2] - box[0], box[3]]
    return image, position_of(box, image.size), position_of(mirrored, image.size)


def _color_pair(s: Sample, rng: random.Random, change: str = "both") -> tuple[Image.Image, str, str]:
    o = s.facts["objects"][0]
    other = rng.choice([c for c in COLORS if c != o["color"]])
    image = s.images[0].copy()
    draw_shape(ImageDraw.Draw(image), o["shape"], o["box"], other)
    return image, o["color"], other


_MAKERS = {"count": _count_pair, "position": _position_pair, "color": _color_pair}


def make_pair(sample: Sample, rng: random.Random, count_change: str = "both") -> ImagePair:
    """Image A = ``sample``'s image; image B = A with one fact changed (see the module docstring).
    ``count_change`` (:data:`COUNT_CHANGES`) says which way a ``count`` pair may change.

    ``sample.task`` must be one of :data:`PAIR_KINDS` with one image; ``ValueError`` otherwise.
    """
    if sample.task not in _MAKERS or len(sample.images) != 1:
        raise ValueError(
            f"spy game: cannot make an image pair from task {sample.task!r} with {len(sample.images)} "
            f"image(s); allowed tasks (one image each): {list(PAIR_KINDS)}"
        )
    check_count_change(count_change)
    image_b, fact_a, fact_b = _MAKERS[sample.task](sample, rng, count_change)
    question = sample.problem.replace("<image>", "").strip()
    return ImagePair(sample.images[0], image_b, question, sample.task, fact_a, fact_b)
