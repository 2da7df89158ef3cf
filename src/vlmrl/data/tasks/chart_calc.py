"""``chart_calc``: read small value labels off a bar chart, then compute with them.

The chart is the ``chart`` task's drawing at 448 px with value labels printed above the bars in
a small font (unreadable in the tiny model's 112-px view, readable after ``zoom_in``). The
question asks for the total of all bars, the difference of two, or their product, so the answer
needs arithmetic (the ``calculate`` tool). ``facts["expression"]`` is that arithmetic with the
true values filled in (what an expert would pass to ``calculate``).
"""

from __future__ import annotations

import random

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import COLORS, TaskGenerator
from vlmrl.data.tasks.chart import ChartTask
from vlmrl.data.tasks.registry import register_task

KINDS = ("total", "difference", "product")


@register_task
class ChartCalcTask(TaskGenerator):
    """A bar chart with value labels; "What is bar B times bar D?" -> ``"42"``.

    Example:
        >>> import random
        >>> from vlmrl.envs.calc import calculate, format_number
        >>> s = ChartCalcTask().sample(random.Random(0), 0, "train")
        >>> format_number(calculate(s.facts["expression"])) == s.answer
        True
    """

    name = "chart_calc"
    answer_type = "number"

    def __init__(
        self,
        size: int = 448,
        min_bars: int = 3,
        max_bars: int = 5,
        max_value: int = 20,
        kinds: tuple[str, ...] = KINDS,
        font_size: int = 11,
    ) -> None:
        super().__init__(size)
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(
                f"task 'chart_calc': knob 'kinds' has unknown kinds {bad}; allowed: {list(KINDS)}"
            )
        self.kinds = tuple(kinds)
        self.min_bars, self.max_bars, self.max_value = min_bars, max_bars, max_value
        # the chart task validates bars/values and draws; we only reuse its renderer
        self.chart = ChartTask(
            size=size,
            min_bars=min_bars,
            max_bars=max_bars,
            max_value=max_value,
            value_labels=True,
            font_size=font_size,
        )

    def sample(self, rng: random.Random, index: int, split: str) -> Sample:
        n = rng.randint(self.min_bars, self.max_bars)
        labels = [chr(ord("A") + i) for i in range(n)]
        values = rng.sample(range(1, self.max_value + 1), n)
        colors = rng.sample(COLORS, n)
        image, bars = self.chart._draw(labels, values, colors)
        kind = rng.choice(self.kinds)
        value = dict(zip(labels, values, strict=True))
        if kind == "total":
            asked = labels
            expression = " + ".join(str(v) for v in values)
            question = "What is the total of all the bars' values? Answer with a number."
            answer = sum(values)
        else:
            asked = rng.sample(labels, 2)
            x, y = value[asked[0]], value[asked[1]]
            op, word = ("-", "minus") if kind == "difference" else ("*", "times")
            expression = f"{x} {op} {y}"
            question = (
                f"What is the value of bar {asked[0]} {word} the value of bar {asked[1]}?"
                " Answer with a number."
            )
            answer = x - y if kind == "difference" else x * y
        facts = {
            "kind": kind,
            "objects": bars,
            "bars": [{"label": lb, "value": v} for lb, v in zip(labels, values, strict=True)],
            "asked": asked,
            "expression": expression,
        }
        return self.make(image, question, str(answer), facts, index, split)
