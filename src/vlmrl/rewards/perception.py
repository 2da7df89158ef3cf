r"""``perception``: how well the ``<look>…</look>`` span lists the objects in the scene.

The span (the first ``<look>`` and the first ``</look>`` after it) is read into a multiset of
``(colour, shape)`` instances: each mention is ``[quantity] colour shape`` — "a red circle",
"2 blue squares", "two green triangles" — with the quantity a number (digits, or a word from
"zero"/"no" up to "ten"; "a"/"an"/"one" and no quantity mean 1). Colours and shapes are
``COLOR_WORDS`` / ``SHAPE_WORDS`` (what the tasks draw plus common names, so "a pink star" is a
false mention) and any colour or shape the scene's own facts use; singular and plural forms
("circles", "crosses") both count. Words between
a quantity and the colour, or a colour not directly followed by a shape ("3 red and 2 blue
circles"), make no mention; a shape without a colour is no mention either.

Against the scene's multiset ``S`` (:func:`vlmrl.data.describe.scene_counts`) and the mentions
``M``, with ``matched = Σ_k min(M_k, S_k)``:

* precision ``P = matched / |M|``, recall ``R = matched / |S|``, ``F1 = 2PR / (P + R)``;
* ``false_mentions = (|M| − matched) / |M|``: the share of mentioned instances not in the scene
  (hallucinated objects or over-counts);
* a ratio whose denominator is 0 is 0, except that an empty span for an empty scene is perfect
  (P = R = F1 = 1).

Reward value (``total``) = F1; 0 when the completion has no closed look span, when the span is
longer than ``MAX_LOOK_CHARS`` (a description that long is not one), or when the sample has no
``facts["objects"]``. Extra parts ``precision``, ``recall``, ``false_mentions``, which
:func:`vlmrl.rewards.compose` logs as ``perception/precision`` etc.

Work is bounded: two ``str.find`` calls on the completion, then one regex scan of at most
``MAX_LOOK_CHARS`` characters; it never raises.
"""

from __future__ import annotations

import re
from collections import Counter

from vlmrl.data.describe import scene_counts
from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import COLORS, SHAPES
from vlmrl.rewards.registry import register_reward
from vlmrl.rewards.types import RewardBreakdown

LOOK_OPEN, LOOK_CLOSE = "<look>", "</look>"

#: A longer look span scores 0 without being parsed.
MAX_LOOK_CHARS = 2000

#: A mentioned quantity above this is read as this (no multiset is ever expanded, but keep it sane).
MAX_QUANTITY = 1000

#: Colour and shape words read as mentions. Beyond what the tasks draw, common names are listed so
#: that a span naming something absent ("a pink star") counts as a false mention, not as noise.
COLOR_WORDS: frozenset[str] = frozenset((*COLORS, "black", "white", "gray", "grey", "pink", "brown", "cyan"))
SHAPE_WORDS: frozenset[str] = frozenset(
    (*SHAPES, "rectangle", "bar", "star", "heart", "diamond", "hexagon", "pentagon", "oval", "cross", "arrow")
)
NUMBER_WORDS: dict[str, int] = {
    "no": 0,
    "zero": 0,
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}

_WORD_RE = re.compile(r"[a-z]+|\d+")


def look_span(completion: str | None) -> str | None:
    """The text inside the first ``<look>…</look>`` pair, or ``None`` (linear time).

    >>> look_span("<look>1 red circle</look><think></think>"), look_span("<look>unclosed")
    ('1 red circle', None)
    """
    if not isinstance(completion, str):
        return None
    start = completion.find(LOOK_OPEN)
    if start < 0:
        return None
    start += len(LOOK_OPEN)
    end = completion.find(LOOK_CLOSE, start)
    return None if end < 0 else completion[start:end]


def _singular(word: str, vocab: frozenset[str]) -> str | None:
    if word in vocab:
        return word
    if word.endswith("s") and word[:-1] in vocab:
        return word[:-1]
    if word.endswith("es") and word[:-2] in vocab:
        return word[:-2]
    return None


def parse_mentions(
    text: str, colors: frozenset[str] = COLOR_WORDS, shapes: frozenset[str] = SHAPE_WORDS
) -> Counter[tuple[str, str]]:
    """The multiset of ``(colour, shape)`` instances ``text`` mentions (see the module docstring).

    >>> parse_mentions("2 red circles, a blue square and two green triangles")
    Counter({('red', 'circle'): 2, ('green', 'triangle'): 2, ('blue', 'square'): 1})
    """
    words = _WORD_RE.findall(text.lower())
    counts: Counter[tuple[str, str]] = Counter()
    for i in range(len(words) - 1):
        color = words[i] if words[i] in colors else None
        shape = _singular(words[i + 1], shapes) if color else None
        if shape is None:
            continue
        n = 1
        if i > 0:
            prev = words[i - 1]
            if prev.isdigit():
                n = min(int(prev), MAX_QUANTITY) if len(prev) <= 4 else MAX_QUANTITY
            elif prev in NUMBER_WORDS:
                n = NUMBER_WORDS[prev]
        if n > 0:
            counts[(color, shape)] += n
    return counts


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def perception_scores(mentioned: Counter, present: Counter) -> dict[str, float]:
    """Precision, recall, F1 and false-mention share of two multisets (module docstring).

    >>> from collections import Counter
    >>> s = perception_scores(Counter({("red", "circle"): 3}), Counter({("red", "circle"): 2}))
    >>> s["precision"], s["recall"], round(s["f1"], 4), round(s["false_mentions"], 4)
    (0.6666666666666666, 1.0, 0.8, 0.3333)
    """
    n_m, n_s = sum(mentioned.values()), sum(present.values())
    if n_m == 0 and n_s == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0, "false_mentions": 0.0}
    matched = sum(min(c, present[k]) for k, c in mentioned.items())
    p, r = _ratio(matched, n_m), _ratio(matched, n_s)
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"precision": p, "recall": r, "f1": f1, "false_mentions": _ratio(n_m - matched, n_m)}


def _zero() -> RewardBreakdown:
    return RewardBreakdown(0.0, {"perception": 0.0, "precision": 0.0, "recall": 0.0, "false_mentions": 0.0})


@register_reward("perception")
def perception_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    """F1 of the look span's mentioned objects against ``sample.facts["objects"]``.

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="", answer="2", facts={"objects": [
    ...     {"shape": "circle", "color": "red"}, {"shape": "circle", "color": "red"},
    ...     {"shape": "square", "color": "blue"}]})
    >>> perception_reward("<look>2 red circles, 1 blue square</look>", s).total
    1.0
    >>> r = perception_reward("<look>2 red circles and a green star</look>", s)  # M = 3, S = 3, 2 match
    >>> [round(r.parts[k], 4) for k in ("perception", "precision", "recall", "false_mentions")]
    [0.6667, 0.6667, 0.6667, 0.3333]
    """
    span = look_span(completion)
    facts = getattr(sample, "facts", None)
    if span is None or len(span) > MAX_LOOK_CHARS or not isinstance(facts, dict):
        return _zero()
    if not isinstance(facts.get("objects"), list):
        return _zero()
    present = scene_counts(facts)
    colors = COLOR_WORDS | {c for c, _ in present}
    shapes = SHAPE_WORDS | {s for _, s in present}
    s = perception_scores(parse_mentions(span, frozenset(colors), frozenset(shapes)), present)
    return RewardBreakdown(
        s["f1"],
        {
            "perception": s["f1"],
            "precision": s["precision"],
            "recall": s["recall"],
            "false_mentions": s["false_mentions"],
        },
    )
