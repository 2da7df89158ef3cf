r"""``iou``: intersection-over-union of a predicted box with the ground-truth box.

``sample.answer`` is ``[x1, y1, x2, y2]`` in pixels (any brackets or separators; exactly four
numbers). The predicted box is read the same way from the extracted answer (so JSON such as
``{"bbox_2d": [10, 20, 30, 40]}`` works too) and brought to pixels by ``scale``:

* ``"auto"`` (reward ``iou``): all four values in [0, 1] → normalised, multiplied by the image
  width/height; otherwise pixels;
* ``"1000"`` (reward ``iou_1000``): values on Qwen2-VL's 0–1000 grid → ``v / 1000 * size``;
* ``"unit"`` / ``"pixel"``: always normalised / always pixels.

Image size is ``sample.images[0].size`` (PIL's ``(width, height)``), else
``sample.facts["image_size"]`` in the same order. A malformed box (not four numbers, NaN or
infinite, ``x2 <= x1`` or ``y2 <= y1``), or a normalised one with no known image size, scores 0.

total = IoU = area(A ∩ B) / area(A ∪ B); part ``iou_at_0.5`` = 1 if IoU ≥ 0.5 (the usual
"correct detection" threshold).
"""

from __future__ import annotations

import math
import re
from typing import Literal

from vlmrl.data.sample import Sample
from vlmrl.rewards.parse import extract_answer
from vlmrl.rewards.registry import register_reward
from vlmrl.rewards.types import RewardBreakdown

Box = tuple[float, float, float, float]
Scale = Literal["auto", "pixel", "unit", "1000"]

#: Box answers are short; longer ones score 0 before any parsing.
MAX_BOX_CHARS = 1000

#: A number not glued to a name, so the ``2`` of ``bbox_2d`` or the ``1`` of ``x1`` is not read.
_NUMBER_RE = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_box(text: str | None) -> Box | None:
    """The four numbers of a box ``x1, y1, x2, y2`` in ``text``, or ``None`` if malformed.

    >>> parse_box("[0, 0, 10.5, 10]"), parse_box('{"bbox_2d": [1, 2, 3, 4]}')
    ((0.0, 0.0, 10.5, 10.0), (1.0, 2.0, 3.0, 4.0))
    >>> parse_box("(3, 1, 2, 5)"), parse_box("[1, 2, 3]"), parse_box("[0, 0, nan, 1]")
    (None, None, None)
    """
    if not isinstance(text, str) or len(text) > MAX_BOX_CHARS:
        return None
    values = [float(v) for v in _NUMBER_RE.findall(text)]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return None
    x1, y1, x2, y2 = values
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def box_iou(a: Box, b: Box) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes.

    >>> box_iou((0, 0, 10, 10), (5, 0, 15, 10))  # overlap 5×10 = 50, union 100 + 100 − 50
    0.3333333333333333
    """
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou = inter / union if union > 0 else 0.0
    return min(max(iou, 0.0), 1.0) if math.isfinite(iou) else 0.0


def image_size(sample: Sample) -> tuple[float, float] | None:
    """``(width, height)`` from the first image, else from ``facts["image_size"]``, else ``None``."""
    candidates = []
    images = getattr(sample, "images", None) or []
    if images:
        candidates.append(getattr(images[0], "size", None))
    candidates.append((getattr(sample, "facts", None) or {}).get("image_size"))
    for size in candidates:
        try:
            w, h = (float(v) for v in size)
        except (TypeError, ValueError):
            continue
        if math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0:
            return w, h
    return None


def to_pixels(box: Box, scale: Scale, size: tuple[float, float] | None) -> Box | None:
    """Bring a predicted box to pixels by ``scale`` (see the module docstring)."""
    if scale == "auto":
        scale = "unit" if all(0.0 <= v <= 1.0 for v in box) else "pixel"
    if scale == "pixel":
        return box
    if size is None:
        return None
    div = 1.0 if scale == "unit" else 1000.0
    w, h = size
    return (box[0] / div * w, box[1] / div * h, box[2] / div * w, box[3] / div * h)


def iou_score(completion: str | None, sample: Sample, scale: Scale = "auto") -> RewardBreakdown:
    """IoU reward with an explicit ``scale``; the registered ``iou``/``iou_1000`` fix it.

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="", answer="[0, 0, 10, 10]", facts={"image_size": (20, 10)})
    >>> iou_score("<answer>[0.25, 0, 0.75, 1]</answer>", s).parts  # = [5, 0, 15, 10] in pixels
    {'iou': 0.3333333333333333, 'iou_at_0.5': 0.0}
    """
    gold = parse_box(str(sample.answer))
    pred = parse_box(extract_answer(completion))
    pred = to_pixels(pred, scale, image_size(sample)) if pred is not None else None
    iou = box_iou(pred, gold) if pred is not None and gold is not None else 0.0
    return RewardBreakdown(iou, {"iou": iou, "iou_at_0.5": 1.0 if iou >= 0.5 else 0.0})


@register_reward("iou")
def iou_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    """IoU with the ``auto`` scale: [0, 1] values are normalised, anything else is pixels.

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="", answer="[0, 0, 10, 10]")
    >>> iou_reward("<answer>[5, 0, 15, 10]</answer>", s).total
    0.3333333333333333
    """
    return iou_score(completion, sample, "auto")


@register_reward("iou_1000")
def iou_1000_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    """IoU for boxes on Qwen2-VL's 0–1000 grid.

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="", answer="[0, 0, 10, 10]", facts={"image_size": (20, 10)})
    >>> iou_1000_reward("<answer>[0, 0, 500, 1000]</answer>", s).total
    1.0
    """
    return iou_score(completion, sample, "1000")
