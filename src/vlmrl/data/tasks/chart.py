"""``chart``: read a bar chart — one bar's value, the largest/smallest bar, or a sum of two.

Values are whole numbers drawn as bar heights against a y axis with a gridline at every unit
and a tick label at every other one, so each value is readable exactly without value labels
(``value_labels=True`` prints them on the bars, an easier variant). Values within a chart are
distinct, so "which is largest" always has one answer.
"""

from __future__ import annotations

import random

from PIL import ImageDraw

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import COLORS, INK, PALETTE, TaskGenerator, draw_text_centered, obj, one_of
from vlmrl.data.tasks.registry import register_task

KINDS = ("value", "largest", "smallest", "sum")
GRID = (215, 215, 215)


@register_task
class ChartTask(TaskGenerator):
    """A bar chart of ``min_bars..max_bars`` bars labelled A, B, C...; values ``1..max_value``.

    ``value`` and ``sum`` questions have a number answer; ``largest``/``smallest`` ask for the
    bar's letter (answer_type ``choice``, the letters are listed in the question).
    """

    name = "chart"
    answer_type = "number"

    def __init__(
        self,
        size: int = 224,
        min_bars: int = 3,
        max_bars: int = 5,
        max_value: int = 10,
        kinds: tuple[str, ...] = KINDS,
        value_labels: bool = False,
        font_size: int | None = None,
    ) -> None:
        super().__init__(size)
        if not 2 <= min_bars <= max_bars <= len(COLORS):
            raise ValueError(
                f"task 'chart': need 2 <= min_bars <= max_bars <= {len(COLORS)}, got {min_bars}, {max_bars}"
            )
        if max_value < max_bars:
            raise ValueError(f"task 'chart': max_value ({max_value}) must be >= max_bars ({max_bars})")
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"task 'chart': knob 'kinds' has unknown kinds {bad}; allowed: {list(KINDS)}")
        self.min_bars, self.max_bars, self.max_value = min_bars, max_bars, max_value
        self.kinds, self.value_labels = tuple(kinds), value_labels
        self.font_size = font_size or max(10, round(size * 0.06))

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        n = rng.randint(self.min_bars, self.max_bars)
        labels = [chr(ord("A") + i) for i in range(n)]
        values = rng.sample(range(1, self.max_value + 1), n)
        colors = rng.sample(COLORS, n)
        image, bars = self._draw(labels, values, colors)
        kind = rng.choice(self.kinds)
        answer_type = "number"
        if kind == "value":
            asked = [rng.choice(labels)]
            question = f"What is the value of bar {asked[0]}? Answer with a number."
            answer = str(values[labels.index(asked[0])])
        elif kind == "sum":
            asked = sorted(rng.sample(labels, 2))
            question = f"What is the sum of bars {asked[0]} and {asked[1]}? Answer with a number."
            answer = str(sum(values[labels.index(a)] for a in asked))
        else:
            pick = max if kind == "largest" else min
            asked = [labels[values.index(pick(values))]]
            question = f"Which bar has the {kind} value? Answer {one_of(labels)}."
            answer, answer_type = asked[0], "choice"
        facts = {
            "kind": kind,
            "objects": bars,
            "bars": [{"label": lb, "value": v} for lb, v in zip(labels, values, strict=True)],
            "asked": asked,
            "max_value": self.max_value,
        }
        s = self.make(image, question, answer, facts, index, split)
        s.answer_type = answer_type
        return s

    def _draw(self, labels: list[str], values: list[int], colors: list[str]) -> tuple:
        """Render axes, gridlines, ticks and bars; returns the image and the bars' facts."""
        s, fs = self.size, self.font_size
        left, right, top, bottom = round(fs * 2.4), s - round(fs * 0.7), round(fs * 1.4), s - round(fs * 1.8)
        unit = (bottom - top) / self.max_value
        image = self.canvas()
        draw = ImageDraw.Draw(image)
        tick_every = 1 if self.max_value <= 6 else 2 if self.max_value <= 12 else 5
        for v in range(self.max_value + 1):
            y = round(bottom - v * unit)
            draw.line([(left, y), (right, y)], fill=GRID, width=1)
            if v % tick_every == 0:
                draw.line([(left - 4, y), (left, y)], fill=INK, width=1)
                draw_text_centered(draw, (left - 6 - fs * 0.6, y), str(v), fs)
        slot = (right - left) / len(values)
        bars = []
        for i, (lb, v, c) in enumerate(zip(labels, values, colors, strict=True)):
            x1 = round(left + slot * (i + 0.2))
            x2 = round(left + slot * (i + 0.8))
            box = [x1, round(bottom - v * unit), x2, bottom]
            draw.rectangle(box, fill=PALETTE[c])
            draw_text_centered(draw, ((x1 + x2) / 2, bottom + fs * 0.9), lb, fs)
            if self.value_labels:
                draw_text_centered(draw, ((x1 + x2) / 2, box[1] - fs * 0.6), str(v), fs)
            bars.append(obj("bar", c, box, label=lb, value=v))
        draw.line([(left, top - 4), (left, bottom)], fill=INK, width=2)
        draw.line([(left, bottom), (right, bottom)], fill=INK, width=2)
        return image, bars


def answer_from_facts(facts: dict) -> str:
    """Recompute the answer from the facts (used by tests and by perception checks)."""
    values = {b["label"]: b["value"] for b in facts["bars"]}
    if facts["kind"] == "value":
        return str(values[facts["asked"][0]])
    if facts["kind"] == "sum":
        return str(sum(values[a] for a in facts["asked"]))
    pick = max if facts["kind"] == "largest" else min
    return pick(values, key=values.__getitem__)
