"""``measure``: which of two segments is longer, or which of two angles is larger — by a few percent.

Two figures labelled A (red) and B (blue) sit in the left and right halves of the image, turned
at unrelated angles so the eye cannot line them up. Their lengths (or angles) differ by a
relative ``min_diff..max_diff`` (3–8% by default; rounding the end points to whole pixels may
move it to ``min_diff/2..1.25·max_diff``): hard to see, easy to settle with the
``measure`` tool, whose points the model reads off the end dots. ``facts["items"]`` holds each
figure's points exactly as drawn (integer pixels) and its true length/angle.
"""

from __future__ import annotations

import math
import random

from PIL import ImageDraw

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import PALETTE, TaskGenerator, draw_text_centered, obj
from vlmrl.data.tasks.registry import register_task

KINDS = ("length", "angle")
LABELS = (("A", "red"), ("B", "blue"))


def seg_length(points: list[list[int]]) -> float:
    """Length of a two-point segment in pixels."""
    (x1, y1), (x2, y2) = points
    return math.hypot(x2 - x1, y2 - y1)


def vertex_angle(points: list[list[int]]) -> float:
    """The angle at the middle of three points, in degrees."""
    (ax, ay), (vx, vy), (bx, by) = points
    u, v = (ax - vx, ay - vy), (bx - vx, by - vy)
    return abs(math.degrees(math.atan2(u[0] * v[1] - u[1] * v[0], u[0] * v[0] + u[1] * v[1])))


@register_task
class MeasureTask(TaskGenerator):
    """ "Which segment is longer, A or B?" / "Which angle is larger, A or B?" -> ``A|B``.

    Example:
        >>> import random
        >>> s = MeasureTask().sample(random.Random(0), 0, "train")
        >>> s.answer in ("A", "B"), len(s.facts["items"])
        (True, 2)
    """

    name = "measure"
    answer_type = "text"

    def __init__(
        self,
        size: int = 224,
        kinds: tuple[str, ...] = KINDS,
        min_diff: float = 0.03,
        max_diff: float = 0.08,
        line_width: int = 2,
    ) -> None:
        super().__init__(size)
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"task 'measure': knob 'kinds' has unknown kinds {bad}; allowed: {list(KINDS)}")
        if not 0.005 <= min_diff <= max_diff <= 0.3:
            raise ValueError(
                f"task 'measure': need 0.005 <= min_diff <= max_diff <= 0.3, got {min_diff}, {max_diff}"
            )
        self.kinds, self.min_diff, self.max_diff, self.line_width = (
            tuple(kinds),
            min_diff,
            max_diff,
            line_width,
        )

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        kind = rng.choice(self.kinds)
        longer = rng.randrange(2)  # which label gets the bigger value
        for _ in range(100):  # integer rounding may shrink the gap; redraw until it holds
            items = self._length_items(rng, longer) if kind == "length" else self._angle_items(rng, longer)
            values = [it["value"] for it in items]
            gap = abs(values[0] - values[1]) / min(values)
            if values[longer] > values[1 - longer] and self.min_diff / 2 <= gap <= self.max_diff * 1.25:
                break
        image = self.canvas()
        draw = ImageDraw.Draw(image)
        objects = []
        r = max(2, self.size // 75)
        fs = max(10, round(self.size * 0.06))
        for (label, color), it in zip(LABELS, items, strict=True):
            pts = [tuple(p) for p in it["points"]]
            draw.line(pts, fill=PALETTE[color], width=self.line_width, joint="curve")
            for x, y in pts:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=PALETTE[color])
            lx, ly = it["label_xy"]
            draw_text_centered(draw, (lx, ly), label, fs, fill=PALETTE[color])
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            objects.append(
                obj(
                    "segment" if kind == "length" else "angle",
                    color,
                    [min(xs), min(ys), max(xs), max(ys)],
                    label=label,
                )
            )
            it.pop("label_xy")
        answer = LABELS[longer][0]
        noun, adj = ("segment", "longer") if kind == "length" else ("angle", "larger")
        question = f"Which {noun} is {adj}, A or B? Answer A or B."
        facts = {"kind": kind, "items": items, "objects": objects}
        return self.make(image, question, answer, facts, index, split)

    def _rel(self, rng: random.Random) -> float:
        return 1.0 + rng.uniform(self.min_diff, self.max_diff)

    def _length_items(self, rng: random.Random, longer: int) -> list[dict]:
        s = self.size
        base = rng.uniform(0.25, 0.36) * s
        lengths = [base, base]
        lengths[longer] = base * self._rel(rng)
        items = []
        for k, length in enumerate(lengths):
            theta = rng.uniform(0, math.pi)
            dx, dy = length / 2 * math.cos(theta), length / 2 * math.sin(theta)
            margin = s * 0.08
            x_lo, x_hi = k * s / 2 + margin + abs(dx), (k + 1) * s / 2 - margin - abs(dx)
            cx = rng.uniform(x_lo, max(x_lo, x_hi))
            cy = rng.uniform(margin + abs(dy), s - margin - abs(dy))
            pts = [[round(cx - dx), round(cy - dy)], [round(cx + dx), round(cy + dy)]]
            nx, ny = -math.sin(theta), math.cos(theta)  # label off the middle, across the line
            label_xy = (cx + nx * s * 0.06, cy + ny * s * 0.06)
            items.append(
                {
                    "label": LABELS[k][0],
                    "points": pts,
                    "value": round(seg_length(pts), 3),
                    "label_xy": label_xy,
                }
            )
        return items

    def _angle_items(self, rng: random.Random, longer: int) -> list[dict]:
        s = self.size
        base = rng.uniform(35, 110)
        angles = [base, base]
        angles[longer] = base * self._rel(rng)
        items = []
        for k, angle in enumerate(angles):
            arm = s * rng.uniform(0.17, 0.2)
            start = rng.uniform(0, 2 * math.pi)
            vx = k * s / 2 + s / 4 + rng.uniform(-0.03, 0.03) * s
            vy = s / 2 + rng.uniform(-0.15, 0.15) * s
            a = [vx + arm * math.cos(start), vy - arm * math.sin(start)]
            end = start + math.radians(angle)
            b = [vx + arm * math.cos(end), vy - arm * math.sin(end)]
            pts = [[round(a[0]), round(a[1])], [round(vx), round(vy)], [round(b[0]), round(b[1])]]
            mid = start + math.radians(angle) / 2 + math.pi  # label opposite the opening
            label_xy = (vx + s * 0.06 * math.cos(mid), vy - s * 0.06 * math.sin(mid))
            items.append(
                {
                    "label": LABELS[k][0],
                    "points": pts,
                    "value": round(vertex_angle(pts), 3),
                    "label_xy": label_xy,
                }
            )
        return items
