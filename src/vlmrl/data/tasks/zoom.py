"""``zoom``: a tiny patterned tile in a large image — readable only after zooming in.

A ``size``-px image (448 by default, four times the tiny model's 112-px view) holds one small
square tile inside a red frame. The tile is filled with one of three patterns — ``horizontal``
stripes, ``vertical`` stripes or a ``checker`` board — of ``stripe``-px black and white bands.
Every pattern is half black, the tile is aligned to the ``2·stripe`` period and its contrast
fades to grey at the rim (see :func:`tile_pixels`), so when the image is shrunk to the 112-px
view each pattern averages to the same flat grey: the frame (and so the tile's grid region)
stays visible, the pattern does not (the three renderings of one scene differ there by at most
a few grey levels, so a perfect reader of the 112-px view is at chance; ``tests/test_envs.py``
measures it). ``zoom_in`` on the tile's region of a
``grid × grid`` split (3×3: the crop is 3× enlarged) makes the bands plain.

``distractors`` adds tiles with blue frames in other regions, so the model must find the red
one. ``facts`` holds the tile's box (frame included), its region, the grid and the pattern.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import PALETTE, TaskGenerator, obj, one_of
from vlmrl.data.tasks.registry import register_task

PATTERNS = ("horizontal", "vertical", "checker")
#: Region names of a grid, row-major (the same names the ``zoom_in`` tool accepts).
GRID_REGIONS: dict[int, tuple[str, ...]] = {
    3: ("top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right"),
    2: ("top-left", "top-right", "bottom-left", "bottom-right"),
}


def tile_pixels(pattern: str, tile: int, stripe: int, ramp: int) -> np.ndarray:
    """The tile as a ``[tile, tile, 3]`` uint8 array: black/white bands faded to 50% grey at the rim.

    The contrast is multiplied by a raised-cosine window that rises over ``ramp`` px from each
    edge: without it, the bands' phase at the tile's edge (a dark row along the top for
    horizontal stripes, alternating pixels for vertical ones) survives downsampling and gives
    the pattern away; with it, what tells the patterns apart is only the band frequency, which
    the 4x smaller view cannot carry.
    """
    idx = np.arange(tile)
    # bands centred in each 2·stripe period (dark, light, light, dark for stripe 2): a block's
    # ink is then symmetric about its centre, so the window's slope cancels out of its average
    band = ((idx + stripe // 2) // stripe) % 2 == 0  # [tile] dark bands along one axis
    if pattern == "horizontal":
        dark = np.broadcast_to(band[:, None], (tile, tile))
    elif pattern == "vertical":
        dark = np.broadcast_to(band[None, :], (tile, tile))
    else:
        dark = band[:, None] ^ ~band[None, :]
    edge = np.minimum(idx + 0.5, tile - idx - 0.5)  # distance of each pixel centre to the rim
    win1 = 0.5 - 0.5 * np.cos(np.pi * np.clip(edge / max(ramp, 1e-9), 0.0, 1.0))  # [tile] 0 at rim → 1
    win = win1[:, None] * win1[None, :]  # [tile, tile]
    level = 0.5 + (np.where(dark, 0.5, -0.5)) * win  # ink fraction
    grey = np.round(255 * (1 - level)).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


@register_task
class ZoomTask(TaskGenerator):
    """Which pattern fills the small red-framed tile? -> ``horizontal|vertical|checker``.

    Example:
        >>> import random
        >>> s = ZoomTask().sample(random.Random(0), 0, "train")
        >>> s.answer == s.facts["pattern"], s.facts["region"] in GRID_REGIONS[3], s.images[0].size
        (True, True, (448, 448))
    """

    name = "zoom"
    answer_type = "text"

    def __init__(
        self,
        size: int = 448,
        grid: int = 3,
        tile: int = 40,
        stripe: int = 2,
        frame: int = 4,
        ramp: int = 12,
        patterns: tuple[str, ...] = PATTERNS,
        distractors: int = 0,
        view: int = 112,
        say_region: bool = False,
    ) -> None:
        """Knobs: ``size`` image side; ``grid`` 3 or 2 (region names); ``tile`` pattern side,
        ``stripe`` band width, ``frame`` frame width, ``ramp`` fade width (px); ``patterns`` the
        answer set; ``distractors`` blue-framed tiles; ``say_region`` names the tile's region in the
        question (the model must still zoom to read it: *where* is told, *what* must be seen);
        ``view`` the side the model's processor
        shows (112 for the tiny model), which the checks below use: a full-view pixel must hold
        whole pattern periods (``size/view`` a multiple of ``2·stripe``) and a band must stay
        ``>= 1.5`` px in the zoomed crop (or the crop be shown at its own pixels, ``size = grid·view``).
        """
        super().__init__(size)
        if grid not in GRID_REGIONS:
            raise ValueError(f"task 'zoom': knob 'grid' must be one of {sorted(GRID_REGIONS)}, got {grid}")
        if stripe < 1 or tile % (2 * stripe) or tile < 4 * stripe:
            raise ValueError(
                f"task 'zoom': knob 'tile' ({tile}) must be a multiple of 2*stripe ({2 * stripe})"
                " and >= 4*stripe"
            )
        if size % view or (size // view) % (2 * stripe):
            raise ValueError(
                f"task 'zoom': size/view ({size}/{view}) must be a whole multiple of 2*stripe ({2 * stripe}),"
                " so the view averages whole pattern periods; e.g. size=448, stripe=2 or size=224, stripe=1"
            )
        zoomed_band = stripe * view * grid / size
        if zoomed_band < 1.5 and size != grid * view:
            raise ValueError(
                f"task 'zoom': with grid {grid} a {stripe}-px band is {zoomed_band:g} px in the zoomed crop,"
                " too thin to read; use grid 3, or size = grid*view"
                " (e.g. size=224, grid=2, stripe=1, tile=24, frame=3)"
            )
        if frame < 1 or tile + 2 * frame + 8 > size // grid:
            raise ValueError(
                f"task 'zoom': tile {tile} + frame {frame} does not fit a grid cell of {size // grid} px"
            )
        if not 0 <= ramp <= tile // 2:
            raise ValueError(f"task 'zoom': knob 'ramp' must be in 0..tile/2 ({tile // 2}), got {ramp}")
        bad = [p for p in patterns if p not in PATTERNS]
        if bad or len(set(patterns)) < 2:
            raise ValueError(
                f"task 'zoom': knob 'patterns' needs >= 2 of {list(PATTERNS)}, got {list(patterns)}"
            )
        if not 0 <= distractors < grid * grid:
            raise ValueError(
                f"task 'zoom': knob 'distractors' must be in 0..{grid * grid - 1}, got {distractors}"
            )
        self.grid, self.tile, self.stripe, self.frame, self.ramp = grid, tile, stripe, frame, ramp
        self.patterns, self.distractors = tuple(patterns), distractors
        self.say_region = bool(say_region)

    def layout(self, rng: random.Random) -> list[dict]:
        """Where the tiles go: the target first, then distractors, each in its own grid cell."""
        regions = GRID_REGIONS[self.grid]
        cells = rng.sample(range(len(regions)), 1 + self.distractors)
        period, cell = 2 * self.stripe, self.size / self.grid
        out = []
        for k, c in enumerate(cells):
            row, col = divmod(c, self.grid)
            # inner tile origin on the pattern period, with the frame and 4 px margin inside the cell
            lo_x, hi_x = col * cell + self.frame + 4, (col + 1) * cell - self.frame - 4 - self.tile
            lo_y, hi_y = row * cell + self.frame + 4, (row + 1) * cell - self.frame - 4 - self.tile
            x = period * rng.randint(-(-int(lo_x) // period), int(hi_x) // period)
            y = period * rng.randint(-(-int(lo_y) // period), int(hi_y) // period)
            out.append({"region": regions[c], "xy": (x, y), "frame_color": "red" if k == 0 else "blue"})
        return out

    def render(self, layout: list[dict], patterns: list[str]) -> tuple[Image.Image, list[dict]]:
        """Draw the tiles of ``layout`` with the given patterns; returns the image and object facts."""
        image = self.canvas()
        draw = ImageDraw.Draw(image)
        objects = []
        t, f, s = self.tile, self.frame, self.stripe
        for place, pattern in zip(layout, patterns, strict=True):
            x, y = place["xy"]
            outer = [x - f, y - f, x + t + f - 1, y + t + f - 1]
            draw.rectangle(outer, fill=PALETTE[place["frame_color"]])
            image.paste(Image.fromarray(tile_pixels(pattern, t, s, self.ramp)), (x, y))
            box = [outer[0], outer[1], outer[2] + 1, outer[3] + 1]  # exclusive corner, as crops use
            objects.append(obj("tile", place["frame_color"], box, pattern=pattern, region=place["region"]))
        return image, objects

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        layout = self.layout(rng)
        patterns = [rng.choice(self.patterns) for _ in layout]
        image, objects = self.render(layout, patterns)
        target = objects[0]
        where = f" in the {target['region']} region" if self.say_region else ""
        question = (
            f"What pattern fills the small square inside the red frame{where}?"
            f" Answer {one_of(self.patterns)}."
        )
        facts = {
            "objects": objects,
            "pattern": target["pattern"],
            "region": target["region"],
            "grid": self.grid,
            "target_box": target["box"],
            "choices": list(self.patterns),
        }
        return self.make(image, question, target["pattern"], facts, index, split)
