r"""Programmatic rewards for generated images of coloured circles (GenEval-style partial credit).

A prompt asks for ``count`` circles of one ``colour`` on the ``left`` or ``right`` half of a white
image. The verifiers read a uint8 ``[H, W, 3]`` image (numpy; torch tensors go through
``to_uint8`` first) in three steps:

1. **Ink.** A pixel is ink when its darkest channel is at least ``INK_MIN`` = 80 below white:
   ``255 - min(r, g, b) >= 80``. Anti-aliased edges are blends ``a·c + (1 - a)·white`` of a
   palette colour ``c`` and the background; for red, green and blue the darkest channel sits
   215–225 below white, so 80 keeps every pixel at least ~37 % covered and drops the faint halo
   and the near-white haze of a blurry sample.
2. **Colour.** An ink pixel has colour ``c`` when its HSV saturation is ``>= SAT_MIN`` = 0.15 and
   ``c`` is the nearest of the prompt colours (``CANDIDATES``: red, green, blue) in hue, within
   ``HUE_TOL`` = 35°. Hue is *unchanged* by blending with white (every channel moves toward 255
   by the same factor), so edge pixels keep their colour's hue exactly; saturation of those
   blends is ≥ 0.2 at the ink threshold, while greys (and black) have saturation ~0 and stay
   uncoloured ink. The candidate hues are 0°, 134° and 224°, ≥ 90° apart, so 35° leaves room
   for a sample's colour drift without ever reaching a neighbour.
3. **Objects.** Connected components (8-connectivity: a diagonal step stays in the same blob;
   rendered circles are ≥ 2 px apart, so they never merge) of one colour's mask, dropping specks
   smaller than ``MIN_AREA`` = 3 px. Touching circles are one object, as a detector would see them.

Scores, each in ``[0, 1]``:

* ``count``: ``max(0, 1 - |n - k| / k)`` with ``n`` objects of the prompt's colour, ``k`` asked;
* ``colour``: share of the ink that has the prompt's colour (0 without ink);
* ``position``: share of the prompt colour's objects whose centroid lies in the asked half
  (0 without objects); a centroid exactly on the midline is in neither half;
* ``total``: the mean of the three (partial credit);
* ``strict``: 1 when count and position are exactly 1 and ``colour >= STRICT_COLOUR`` = 0.9, else
  0. (The colour share is allowed 10 % stray ink: one off-hue edge pixel of a blurry sample
  should not fail an image a person would call right.)

Known hack, caught by :mod:`vlmrl.gen.watch` (``watch/ink``): an image filled with the prompt's
colour is one object (count 1 for a one-circle prompt) of pure colour, with its centroid on the
midline (position 0), so it scores 2/3.

Every function takes any uint8 image of shape ``[H, W, 3]`` (noise, one colour, black) without
raising; another shape or dtype — floats included, convert with ``to_uint8`` — is a
``ValueError`` naming what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from scipy import ndimage

from vlmrl.data.tasks.base import PALETTE

CANDIDATES: tuple[str, ...] = ("red", "green", "blue")
"""The colours a prompt may ask for (``vlmrl.gen.prompts.COLOURS``); pixels are classified among them."""
SIDES: tuple[str, ...] = ("left", "right")
INK_MIN = 80
"""A pixel is ink when ``255 - min(r, g, b) >= INK_MIN`` (see the module docstring)."""
SAT_MIN = 0.15
"""An ink pixel needs HSV saturation ``>= SAT_MIN`` to have a colour; greys and black stay uncoloured."""
HUE_TOL = 35.0
"""Largest hue distance, in degrees, from a candidate colour's hue."""
MIN_AREA = 3
"""Components smaller than this many pixels are specks, not objects."""
STRICT_COLOUR = 0.9
"""``strict`` needs at least this colour share."""
KEYS: tuple[str, ...] = ("count", "colour", "position", "total", "strict")

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity for ndimage.label


class PromptLike(Protocol):
    """What the rewards read from a prompt (``vlmrl.gen.prompts.GenPrompt`` fits)."""

    @property
    def colour(self) -> str: ...

    @property
    def count(self) -> int: ...

    @property
    def side(self) -> str: ...


Object = tuple[int, tuple[float, float]]  # (area in px, (cy, cx) centroid in pixel indices)


# --------------------------------------------------------------------------- checks
def check_image(img: np.ndarray) -> np.ndarray:
    """Return ``img`` if it is a uint8 ``[H, W, 3]`` array with ``H, W >= 1``, else raise ``ValueError``."""
    if not isinstance(img, np.ndarray):
        raise ValueError(f"reward image: expected a numpy uint8 array [H, W, 3], got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(
            f"reward image: expected dtype uint8 in [0, 255] (convert floats with to_uint8), got {img.dtype}"
        )
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"reward image: expected shape [H, W, 3] with H, W >= 1, got {list(img.shape)}")
    return img


def check_prompt(prompt: PromptLike) -> None:
    """Raise ``ValueError`` unless the prompt's colour, count and side are ones the rewards know."""
    if prompt.colour not in CANDIDATES:
        raise ValueError(f"prompt colour {prompt.colour!r}: allowed {list(CANDIDATES)}")
    if isinstance(prompt.count, bool) or not isinstance(prompt.count, int | np.integer) or prompt.count < 1:
        raise ValueError(f"prompt count {prompt.count!r}: expected an int >= 1")
    if prompt.side not in SIDES:
        raise ValueError(f"prompt side {prompt.side!r}: allowed {list(SIDES)}")


# --------------------------------------------------------------------------- pixels
def hsv(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HSV of a uint8 ``[..., 3]`` array: hue in degrees ``[0, 360)``, saturation and value in ``[0, 1]``.

    ``s = (max - min) / max`` (0 for black), ``v = max / 255``, hue 0 where ``max == min``.

    >>> h, s, v = hsv(np.array([[220, 40, 40], [128, 128, 128], [0, 0, 0]], np.uint8))
    >>> h.round(1).tolist(), s.round(3).tolist(), v.round(3).tolist()
    ([0.0, 0.0, 0.0], [0.818, 0.0, 0.0], [0.863, 0.502, 0.0])
    """
    x = img.astype(np.float64)  # [..., 3]
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx, mn = x.max(-1), x.min(-1)  # [...]
    chroma = mx - mn
    c = np.where(chroma > 0, chroma, 1.0)  # no 0/0; masked below
    h = np.where(mx == r, ((g - b) / c) % 6.0, np.where(mx == g, (b - r) / c + 2.0, (r - g) / c + 4.0))
    h = np.where(chroma > 0, h * 60.0, 0.0) % 360.0
    s = np.where(mx > 0, chroma / np.maximum(mx, 1.0), 0.0)
    return h, s, mx / 255.0


def _hue_gap(h: np.ndarray, ref: float) -> np.ndarray:
    """Circular distance in degrees between hues ``h`` and ``ref``."""
    d = np.abs(h - ref) % 360.0
    return np.minimum(d, 360.0 - d)


_CANDIDATE_HUES = np.array([float(hsv(np.array(PALETTE[c], np.uint8))[0]) for c in CANDIDATES])


def ink_mask(img: np.ndarray) -> np.ndarray:
    """Bool ``[H, W]``: pixels at least ``INK_MIN`` below white in their darkest channel."""
    check_image(img)
    return (255 - img.min(-1).astype(np.int16)) >= INK_MIN


def colour_mask(img: np.ndarray, colour: str, tol: float = HUE_TOL) -> np.ndarray:
    """Bool ``[H, W]``: ink pixels whose nearest candidate colour (by hue, within ``tol``°) is ``colour``.

    Also requires saturation ``>= SAT_MIN``, so greys and black are never a colour.

    >>> img = np.full((2, 3, 3), 255, np.uint8); img[0, 0] = PALETTE["red"]; img[0, 1] = (238, 148, 148)
    >>> img[0, 2] = (90, 90, 90); img[1, 0] = PALETTE["blue"]
    >>> colour_mask(img, "red").astype(int).tolist()
    [[1, 1, 0], [0, 0, 0]]
    """
    check_image(img)
    if colour not in CANDIDATES:
        raise ValueError(f"colour {colour!r}: allowed {list(CANDIDATES)}")
    h, s, _ = hsv(img)
    gaps = np.stack([_hue_gap(h, ref) for ref in _CANDIDATE_HUES])  # [C, H, W]
    i = CANDIDATES.index(colour)
    nearest = gaps.argmin(0) == i
    return ink_mask(img) & (s >= SAT_MIN) & nearest & (gaps[i] <= tol)


def mask_objects(mask: np.ndarray, min_area: int = MIN_AREA) -> list[Object]:
    """Connected components (8-connectivity) of a bool ``[H, W]`` mask with at least ``min_area`` pixels.

    Returns ``(area, (cy, cx))`` per component in raster order of their first pixel; centroids are
    means of pixel indices.

    >>> m = np.zeros((5, 6), bool); m[0:2, 0:2] = True; m[2, 2] = True; m[4, 5] = True
    >>> mask_objects(m)
    [(5, (0.8, 0.8))]
    """
    labels, n = ndimage.label(mask, structure=_EIGHT)  # [H, W] int, 0 = background
    if n == 0:
        return []
    flat = labels.ravel()
    ys, xs = np.indices(mask.shape)
    area = np.bincount(flat, minlength=n + 1)  # [n + 1]
    cy = np.bincount(flat, weights=ys.ravel(), minlength=n + 1) / np.maximum(area, 1)
    cx = np.bincount(flat, weights=xs.ravel(), minlength=n + 1) / np.maximum(area, 1)
    return [(int(area[j]), (float(cy[j]), float(cx[j]))) for j in range(1, n + 1) if area[j] >= min_area]


def objects(img: np.ndarray, colour: str, min_area: int = MIN_AREA) -> list[Object]:
    """The ``colour`` objects of an image: :func:`mask_objects` of :func:`colour_mask`."""
    return mask_objects(colour_mask(img, colour), min_area)


# --------------------------------------------------------------------------- credits (pure formulas)
def count_credit(n: int, k: int) -> float:
    """``max(0, 1 - |n - k| / k)``: 1 for the asked count ``k``, linear partial credit, 0 at ``n = 0``.

    >>> [round(count_credit(n, 3), 3) for n in range(7)]
    [0.0, 0.333, 0.667, 1.0, 0.667, 0.333, 0.0]
    """
    return max(0.0, 1.0 - abs(n - k) / k)


def in_half(cx: float, width: int, side: str) -> bool:
    """Whether a centroid column index ``cx`` lies in the ``side`` half of an image ``width`` wide.

    Pixel ``j`` covers ``[j, j + 1)``, so its centre is ``j + 0.5``; the midline is ``width / 2``.

    >>> [in_half(cx, 32, "left") for cx in (15.0, 15.5)], [in_half(cx, 32, "right") for cx in (15.5, 16.0)]
    ([True, False], [False, True])
    """
    x = cx + 0.5
    return x < width / 2 if side == "left" else x > width / 2


def position_credit(objs: Sequence[Object], width: int, side: str) -> float:
    """Share of ``objs`` whose centroid is in the ``side`` half; 0 without objects.

    >>> position_credit([(9, (4.0, 3.0)), (9, (4.0, 12.0))], 16, "left")
    0.5
    """
    if not objs:
        return 0.0
    return sum(in_half(cx, width, side) for _, (_, cx) in objs) / len(objs)


def composite(count: float, colour: float, position: float) -> tuple[float, float]:
    """``(total, strict)``: the mean of the three credits, and 1.0 iff all pass (see ``STRICT_COLOUR``).

    >>> composite(1.0, 0.95, 1.0)
    (0.9833333333333334, 1.0)
    >>> composite(2 / 3, 1.0, 1.0)[1]
    0.0
    """
    total = (count + colour + position) / 3.0
    strict = float(count == 1.0 and position == 1.0 and colour >= STRICT_COLOUR)
    return total, strict


# --------------------------------------------------------------------------- rewards on images
def count_reward(img: np.ndarray, prompt: PromptLike, min_area: int = MIN_AREA) -> float:
    """:func:`count_credit` of the number of ``prompt.colour`` objects against ``prompt.count``."""
    check_prompt(prompt)
    return count_credit(len(objects(img, prompt.colour, min_area)), int(prompt.count))


def colour_reward(img: np.ndarray, prompt: PromptLike) -> float:
    """Share of the ink that has ``prompt.colour``: ``|colour mask| / |ink mask|``, 0 without ink."""
    check_prompt(prompt)
    ink = int(ink_mask(img).sum())
    return float(colour_mask(img, prompt.colour).sum()) / ink if ink else 0.0


def position_reward(img: np.ndarray, prompt: PromptLike, min_area: int = MIN_AREA) -> float:
    """:func:`position_credit` of the ``prompt.colour`` objects for ``prompt.side``."""
    check_prompt(prompt)
    return position_credit(objects(img, prompt.colour, min_area), img.shape[1], prompt.side)


def score(img: np.ndarray, prompt: PromptLike, min_area: int = MIN_AREA) -> dict[str, float]:
    """All scores of one image: ``{count, colour, position, total, strict}`` (one mask pass).

    >>> from types import SimpleNamespace as P
    >>> img = np.full((16, 16, 3), 255, np.uint8); img[6:9, 2:5] = PALETTE["green"]
    >>> score(img, P(colour="green", count=1, side="left"))
    {'count': 1.0, 'colour': 1.0, 'position': 1.0, 'total': 1.0, 'strict': 1.0}
    >>> score(img, P(colour="green", count=2, side="right"))["total"]
    0.5
    """
    check_image(img)
    check_prompt(prompt)
    mask = colour_mask(img, prompt.colour)  # [H, W]
    ink = int(ink_mask(img).sum())
    objs = mask_objects(mask, min_area)
    count = count_credit(len(objs), int(prompt.count))
    colour = float(mask.sum()) / ink if ink else 0.0
    position = position_credit(objs, img.shape[1], prompt.side)
    total, strict = composite(count, colour, position)
    return {"count": count, "colour": colour, "position": position, "total": total, "strict": strict}


def score_batch(
    imgs: np.ndarray, prompts: Sequence[PromptLike], min_area: int = MIN_AREA
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Score a batch: uint8 ``[B, H, W, 3]`` and ``B`` prompts → ``(total [B], parts)``.

    ``parts`` maps every key of :func:`score` (``count, colour, position, total, strict``) to a
    float64 array ``[B]``; ``total`` is ``parts["total"]``.
    """
    if not isinstance(imgs, np.ndarray) or imgs.ndim != 4:
        shape = list(imgs.shape) if isinstance(imgs, np.ndarray) else type(imgs).__name__
        raise ValueError(f"reward batch: expected a numpy uint8 array [B, H, W, 3], got {shape}")
    if len(prompts) != imgs.shape[0]:
        raise ValueError(f"reward batch: {imgs.shape[0]} images but {len(prompts)} prompts")
    rows = [score(img, p, min_area) for img, p in zip(imgs, prompts, strict=True)]
    parts = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in KEYS}
    return parts["total"], parts
