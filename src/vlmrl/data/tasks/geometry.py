"""``geometry``: GeoQA-like figures whose numbers must be read off the image.

Two figure kinds: a triangle with two angles labelled ("50°") and the third marked ``x``
(answer ``180 - a - b``), and a rectangle with its sides labelled (answer its perimeter or
area). The numbers live only in the pixels, so the question cannot be answered blind. The
default size is 224 px because labels must stay legible; figures are not drawn to scale for
rectangles (the labels, not the pixel lengths, are the ground truth, as in GeoQA).
"""

from __future__ import annotations

import math
import random

from PIL import ImageDraw

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import INK, TaskGenerator, draw_text_centered, obj
from vlmrl.data.tasks.registry import register_task

KINDS = ("angle", "perimeter", "area")
FILL = (214, 228, 250)  # light blue inside the figure, so the outline reads clearly


@register_task
class GeometryTask(TaskGenerator):
    """Triangle angle-sum or rectangle perimeter/area; answer is a whole number.

    Knobs: ``kinds`` (subset of ``angle|perimeter|area``), ``min_angle`` (degrees, keeps
    labels clear of narrow corners), ``max_side`` (rectangle side values ``2..max_side``),
    ``font_size`` (label size, default scales with the image).
    """

    name = "geometry"
    answer_type = "number"

    def __init__(
        self,
        size: int = 224,
        kinds: tuple[str, ...] = KINDS,
        min_angle: int = 35,
        max_side: int = 12,
        font_size: int | None = None,
    ) -> None:
        super().__init__(size)
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"task 'geometry': knob 'kinds' has unknown kinds {bad}; allowed: {list(KINDS)}")
        if not 20 <= min_angle <= 60:
            raise ValueError(f"task 'geometry': knob 'min_angle' must be in [20, 60], got {min_angle}")
        if max_side < 3:
            raise ValueError(f"task 'geometry': knob 'max_side' must be >= 3, got {max_side}")
        self.kinds, self.min_angle, self.max_side = tuple(kinds), min_angle, max_side
        self.font_size = font_size or max(11, round(size * 0.07))

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        kind = rng.choice(self.kinds)
        if kind == "angle":
            return self._triangle(rng, index, split)
        return self._rectangle(rng, kind, index, split)

    def _triangle(self, rng: random.Random, index: int, split: str) -> Sample:
        lo = self.min_angle
        a = rng.randrange(lo, 180 - 2 * lo + 1, 5)
        b = rng.randrange(lo, 180 - a - lo + 1, 5)
        angles = [a, b, 180 - a - b]
        rng.shuffle(angles)  # any corner (base or apex) can hold any angle
        unknown = rng.randrange(3)
        pts = _triangle_points(angles[0], angles[1], self.size, margin=self.size * 0.08)
        image = self.canvas()
        draw = ImageDraw.Draw(image)
        draw.polygon(pts, fill=FILL, outline=INK, width=max(2, self.size // 110))
        incenter = _incenter(pts)
        labels = []
        for i, (p, ang) in enumerate(zip(pts, angles, strict=True)):
            # Along the bisector (towards the incenter), just far enough that the label clears both
            # sides of its corner, so a reader pairs each label with the nearest corner.
            to_in = math.dist(p, incenter)
            d = min(self.font_size * 1.15 / math.sin(math.radians(ang) / 2), 0.7 * to_in)
            xy = (p[0] + d / to_in * (incenter[0] - p[0]), p[1] + d / to_in * (incenter[1] - p[1]))
            text = "x" if i == unknown else f"{ang}°"
            labels.append({"text": text, "box": draw_text_centered(draw, xy, text, self.font_size)})
        box = _bbox(pts)
        question = "Two angles of the triangle are marked. What is the measure of angle x in degrees?"
        facts = {
            "kind": "angle",
            "objects": [obj("triangle", "black", box)],
            "angles": angles,
            "unknown": unknown,
            "vertices": [[round(x), round(y)] for x, y in pts],
            "labels": labels,
        }
        return self.make(image, question, str(angles[unknown]), facts, index, split)

    def _rectangle(self, rng: random.Random, kind: str, index: int, split: str) -> Sample:
        w, h = rng.randint(2, self.max_side), rng.randint(2, self.max_side)
        s, fs = self.size, self.font_size
        avail_w, avail_h = s - 2 * (fs * 3 + 4), s - 2 * (fs * 2 + 4)  # room for labels outside
        ratio = min(max(w / h, 1 / 2.5), 2.5)  # roughly to scale, never a sliver
        pw, ph = (avail_w, avail_w / ratio) if avail_w / ratio <= avail_h else (avail_h * ratio, avail_h)
        x1, y1 = (s - pw) / 2, (s - ph) / 2
        box = [round(x1), round(y1), round(x1 + pw), round(y1 + ph)]
        image = self.canvas()
        draw = ImageDraw.Draw(image)
        draw.rectangle(box, fill=FILL, outline=INK, width=max(2, s // 110))
        top = draw_text_centered(draw, ((box[0] + box[2]) / 2, box[1] - fs * 0.8), f"{w} cm", fs)
        right = draw_text_centered(draw, (box[2] + fs * 1.6, (box[1] + box[3]) / 2), f"{h} cm", fs)
        answer = 2 * (w + h) if kind == "perimeter" else w * h
        unit = "cm" if kind == "perimeter" else "square cm"
        question = f"The side lengths of the rectangle are marked. What is its {kind} in {unit}?"
        facts = {
            "kind": kind,
            "objects": [obj("rectangle", "black", box)],
            "sides": {"width": w, "height": h},
            "labels": [{"text": f"{w} cm", "box": top}, {"text": f"{h} cm", "box": right}],
        }
        return self.make(image, question, str(answer), facts, index, split)


def answer_from_facts(facts: dict) -> int:
    """Recompute the answer from the facts (the consistency tests and rewards use this)."""
    if facts["kind"] == "angle":
        known = [a for i, a in enumerate(facts["angles"]) if i != facts["unknown"]]
        return 180 - sum(known)
    w, h = facts["sides"]["width"], facts["sides"]["height"]
    return 2 * (w + h) if facts["kind"] == "perimeter" else w * h


def _triangle_points(a: float, b: float, size: int, margin: float) -> list[tuple[float, float]]:
    """Vertices (base-left, base-right, apex) with interior angles ``a``, ``b`` at the base corners,
    scaled and centred to fill the square image minus ``margin``; y grows downward."""
    ra, rb = math.radians(a), math.radians(b)
    rc = math.pi - ra - rb
    left_side = math.sin(rb) / math.sin(rc)  # law of sines with a base of length 1
    apex = (left_side * math.cos(ra), left_side * math.sin(ra))
    raw = [(0.0, 0.0), (1.0, 0.0), apex]
    xs, ys = [p[0] for p in raw], [p[1] for p in raw]
    w, h = max(xs) - min(xs), max(ys) - min(ys)
    scale = (size - 2 * margin) / max(w, h)
    ox = (size - w * scale) / 2 - min(xs) * scale
    oy = (size + h * scale) / 2  # base at the bottom of the centred figure
    return [(ox + x * scale, oy - y * scale) for x, y in raw]


def _incenter(pts: list[tuple[float, float]]) -> tuple[float, float]:
    """Incenter: each vertex weighted by the length of the opposite side."""
    (ax, ay), (bx, by), (cx, cy) = pts
    la, lb, lc = math.dist(pts[1], pts[2]), math.dist(pts[0], pts[2]), math.dist(pts[0], pts[1])
    t = la + lb + lc
    return ((la * ax + lb * bx + lc * cx) / t, (la * ay + lb * by + lc * cy) / t)


def _bbox(pts: list[tuple[float, float]]) -> list[int]:
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys))]
