"""Prompts of the visual-generation task and the procedural renderer that defines them.

A prompt asks for ``count`` filled circles of one ``colour`` in one ``side`` (half) of the image,
e.g. ``"2 red circles on the left"``. There are 3 colours x 3 counts x 2 sides = 18 prompts. The
renderer draws the ground-truth distribution the base generator is pretrained on; the rewards
(``gen.rewards``) verify the same three facts on generated images.

Rendering rule (the rewards rely on it): white background; ``count`` discs of radius
``r = size / 10`` (pixels whose centre lies within ``r`` of the disc centre) in the exact palette
colour; every disc lies wholly in its half (left: ``cx + floor(r) < size / 2``, right:
``cx - floor(r) >= size / 2``); disc centres are at least ``2 r + 3`` apart, so two discs' pixels
are at least 3 px apart and connected components (4- or 8-connected) never merge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vlmrl.data.tasks.base import BACKGROUND, PALETTE

COLOURS: tuple[str, ...] = ("red", "green", "blue")
COUNTS: tuple[int, ...] = (1, 2, 3)
SIDES: tuple[str, ...] = ("left", "right")

_FORMAT = "'<count> <colour> circle(s) on the <side>'"


@dataclass(frozen=True)
class GenPrompt:
    """One generation prompt: ``count`` circles of ``colour`` in the ``side`` half of the image."""

    colour: str
    count: int
    side: str

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"GenPrompt colour {self.colour!r}: allowed {COLOURS}")
        if self.count not in COUNTS or isinstance(self.count, bool):
            raise ValueError(f"GenPrompt count {self.count!r}: allowed {COUNTS}")
        if self.side not in SIDES:
            raise ValueError(f"GenPrompt side {self.side!r}: allowed {SIDES}")

    @property
    def text(self) -> str:
        """``"1 red circle on the left"`` / ``"2 blue circles on the right"``."""
        noun = "circle" if self.count == 1 else "circles"
        return f"{self.count} {self.colour} {noun} on the {self.side}"

    @property
    def ids(self) -> tuple[int, int, int]:
        """Conditioning ids ``(colour_idx, count - 1, side_idx)``."""
        return (COLOURS.index(self.colour), self.count - 1, SIDES.index(self.side))


def parse_prompt(text: str) -> GenPrompt:
    """Parse a prompt's text (surrounding whitespace and case ignored; nothing else is).

    >>> parse_prompt("2 red circles on the left")
    GenPrompt(colour='red', count=2, side='left')
    """
    words = text.strip().lower().split()

    def bad(why: str) -> ValueError:
        return ValueError(
            f"prompt {text!r}: {why}; expected {_FORMAT} with count in {COUNTS}, "
            f"colour in {COLOURS}, side in {SIDES}"
        )

    if len(words) != 6 or words[3:5] != ["on", "the"]:
        raise bad("not of the form")
    n, colour, noun, _, _, side = words
    if n not in {str(c) for c in COUNTS}:
        raise bad(f"count {n!r} not allowed")
    if colour not in COLOURS:
        raise bad(f"colour {colour!r} not allowed")
    if side not in SIDES:
        raise bad(f"side {side!r} not allowed")
    want = "circle" if n == "1" else "circles"
    if noun != want:
        raise bad(f"noun {noun!r} should be {want!r} for count {n}")
    return GenPrompt(colour, int(n), side)


#: All 18 prompts in a fixed order: colour-major, then count, then side.
ALL_PROMPTS: tuple[GenPrompt, ...] = tuple(GenPrompt(c, n, s) for c in COLOURS for n in COUNTS for s in SIDES)

# Held out from RL training: every colour, every count and both sides appear among them, and (as
# each value occurs 6 times in ALL_PROMPTS) each still occurs at least 4 times in the train split,
# so a held-out prompt is a new *combination* of words the policy was trained on.
_HELD_OUT: tuple[GenPrompt, ...] = (
    GenPrompt("red", 1, "right"),
    GenPrompt("green", 2, "left"),
    GenPrompt("blue", 3, "right"),
    GenPrompt("blue", 1, "left"),
)


def split_prompts() -> tuple[tuple[GenPrompt, ...], tuple[GenPrompt, ...]]:
    """The fixed ``(train, held_out)`` split of ``ALL_PROMPTS`` (14 / 4), both in ALL_PROMPTS order."""
    held = tuple(p for p in ALL_PROMPTS if p in _HELD_OUT)
    train = tuple(p for p in ALL_PROMPTS if p not in _HELD_OUT)
    return train, held


def prompt_ids(prompts: Sequence[GenPrompt]) -> torch.Tensor:
    """Conditioning ids of a batch of prompts: LongTensor ``[B, 3]`` of ``(colour, count-1, side)``."""
    return torch.tensor([p.ids for p in prompts], dtype=torch.long).reshape(len(prompts), 3)


def radius(size: int) -> float:
    """Disc radius in pixels for an image side of ``size`` (``size / 10``)."""
    return size / 10


def _centres(prompt: GenPrompt, rng: np.random.Generator, size: int) -> list[tuple[int, int]]:
    """Integer disc centres ``(cy, cx)`` by rejection sampling (uniform over valid placements)."""
    r = radius(size)
    e = math.floor(r)  # pixel extent of a disc from its centre
    half = size // 2
    x_lo, x_hi = (e, half - 1 - e) if prompt.side == "left" else (half + e, size - 1 - e)
    y_lo, y_hi = e, size - 1 - e
    min_d2 = (2 * r + 3) ** 2
    if x_hi < x_lo:
        raise ValueError(f"render: size {size} too small for a disc of radius {r:g} in one half")
    for _ in range(200):  # restarts; each placement has up to 50 tries
        centres: list[tuple[int, int]] = []
        for _ in range(prompt.count):
            for _ in range(50):
                cy, cx = int(rng.integers(y_lo, y_hi + 1)), int(rng.integers(x_lo, x_hi + 1))
                if all((cy - y) ** 2 + (cx - x) ** 2 >= min_d2 for y, x in centres):
                    centres.append((cy, cx))
                    break
            else:
                break
        if len(centres) == prompt.count:
            return centres
    raise ValueError(f"render: size {size} too small to place {prompt.count} separate discs in one half")


def render(prompt: GenPrompt, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Draw one ground-truth image of ``prompt``: uint8 ``[size, size, 3]`` (see module docstring)."""
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    r2 = radius(size) ** 2
    yy, xx = np.mgrid[0:size, 0:size]
    for cy, cx in _centres(prompt, rng, size):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r2] = PALETTE[prompt.colour]
    return img


def render_batch(prompts: Sequence[GenPrompt], rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """``render`` for each prompt in turn (same ``rng``): uint8 ``[B, size, size, 3]``."""
    out = np.empty((len(prompts), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(prompts):
        out[i] = render(p, rng, size)
    return out
