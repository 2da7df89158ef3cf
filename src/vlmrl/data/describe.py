"""A canonical text description of a procedural scene, from ``facts["objects"]``.

``describe_scene`` is the gold content of the ``<look>`` span (template ``look``): SFT teaches
it, and the ``perception`` reward (``vlmrl.rewards.perception``) reads a model's span back into
the same ``(colour, shape)`` counts that :func:`scene_counts` takes from the facts, so the gold
description of every task scores F1 = 1.

Form: ``"<n> <colour> <shape or plural>"`` groups joined by ``", "``, one group per
(colour, shape), counts as digits (every digit is one token in the tiny tokenizer). Order is
fixed, not the drawing order, so the same scene always reads the same: palette colours in
palette order (red, green, blue, yellow, purple, orange), then any other colour alphabetically;
within a colour, shapes in ``SHAPES`` order (circle, square, triangle), then others
alphabetically. A scene with no objects is ``"nothing"``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from vlmrl.data.tasks.base import COLORS, SHAPES

#: What an empty scene's description says (the perception parser reads no object in it).
EMPTY_SCENE = "nothing"

#: More objects than this in ``facts`` are not counted (facts from files are not trusted to be small).
MAX_OBJECTS = 1000


def scene_counts(facts: Mapping[str, Any] | None) -> Counter[tuple[str, str]]:
    """How many objects of each ``(colour, shape)`` the facts list (lower-cased names).

    Entries without a string ``color`` and ``shape`` are skipped; anything that is not a list of
    mappings counts as no objects, so malformed facts never raise.

    >>> scene_counts({"objects": [{"shape": "circle", "color": "red"}, {"shape": "circle", "color": "Red"}]})
    Counter({('red', 'circle'): 2})
    """
    objects = facts.get("objects") if isinstance(facts, Mapping) else None
    counts: Counter[tuple[str, str]] = Counter()
    if not isinstance(objects, list):
        return counts
    for o in objects[:MAX_OBJECTS]:
        if not isinstance(o, Mapping):
            continue
        color, shape = o.get("color"), o.get("shape")
        if isinstance(color, str) and isinstance(shape, str) and color.strip() and shape.strip():
            counts[(color.strip().lower(), shape.strip().lower())] += 1
    return counts


def _order(key: tuple[str, str]) -> tuple[int, str, int, str]:
    color, shape = key
    ci = COLORS.index(color) if color in COLORS else len(COLORS)
    si = SHAPES.index(shape) if shape in SHAPES else len(SHAPES)
    return ci, color, si, shape


def describe_scene(facts: Mapping[str, Any] | None) -> str:
    """The canonical description of the scene in ``facts`` (see the module docstring).

    >>> describe_scene({"objects": [
    ...     {"shape": "square", "color": "blue"}, {"shape": "circle", "color": "red"},
    ...     {"shape": "circle", "color": "red"}]})
    '2 red circles, 1 blue square'
    >>> describe_scene({"objects": []})
    'nothing'
    """
    counts = scene_counts(facts)
    if not counts:
        return EMPTY_SCENE
    groups = []
    for color, shape in sorted(counts, key=_order):
        n = counts[(color, shape)]
        groups.append(f"{n} {color} {shape if n == 1 else shape + 's'}")
    return ", ".join(groups)
