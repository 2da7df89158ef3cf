r"""Format rewards: does the completion have the shape the prompt asked for?

``format`` (reasoning format, the EasyR1/R1 convention plus our perception span)::

    [<look>…</look>]  <think>…</think>  ( <answer>…</answer> | text with \boxed{…} )

with only whitespace between the blocks and around them, no other ``look``/``think``/``answer``
tag anywhere (so no nesting, no repeats, no unclosed tag), and a non-empty answer. The think
block may be empty. In the ``\boxed`` form the text after ``</think>`` is free but must hold a
``\boxed{…}`` with balanced braces and non-empty content.

``format_answer_only`` (for tiny models that answer without thinking): the completion is
exactly one ``<answer>…</answer>`` with non-empty content, plus surrounding whitespace.

Both scan the tags once, so time is linear in the completion's length.
"""

from __future__ import annotations

import re

from vlmrl.data.sample import Sample
from vlmrl.rewards.parse import last_boxed
from vlmrl.rewards.registry import register_reward
from vlmrl.rewards.types import RewardBreakdown

_TAG_RE = re.compile(r"<(/?)(look|think|answer)>")

#: Tag sequences ``format`` accepts; the optional boxed tail is checked separately.
_WITH_ANSWER = (
    ("look", "/look", "think", "/think", "answer", "/answer"),
    ("think", "/think", "answer", "/answer"),
)
_BOXED_ONLY = (("look", "/look", "think", "/think"), ("think", "/think"))


@register_reward("format")
def format_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    r"""1.0 for ``[<look>…</look>] <think>…</think>`` then ``<answer>…</answer>`` or ``\boxed{…}``.

    >>> format_reward("<think>2+1</think> <answer>3</answer>", None).total
    1.0
    >>> format_reward("<look>3 dots</look><think>count</think> so \\boxed{3}.", None).total
    1.0
    >>> format_reward("<think>2+1 <answer>3</answer>", None).total
    0.0
    """
    score = 1.0 if _is_reasoning_format(completion) else 0.0
    return RewardBreakdown(score, {"format": score})


@register_reward("format_answer_only")
def format_answer_only_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    """1.0 when the completion is exactly one non-empty ``<answer>…</answer>`` (whitespace around).

    >>> format_answer_only_reward(" <answer>3</answer>\\n", None).total
    1.0
    >>> format_answer_only_reward("<answer>3</answer><answer>4</answer>", None).total
    0.0
    """
    ok = False
    if isinstance(completion, str):
        tags = _tags(completion)
        ok = _names(tags) == ("answer", "/answer") and _blank_between(completion, tags, [0, 2])
        ok = ok and bool(completion[tags[0][2] : tags[1][1]].strip())
    score = 1.0 if ok else 0.0
    return RewardBreakdown(score, {"format_answer_only": score})


def _tags(text: str) -> list[tuple[str, int, int]]:
    """Every ``look``/``think``/``answer`` tag as ``(name, start, end)``; close tags as ``/name``."""
    return [(m.group(1) + m.group(2), m.start(), m.end()) for m in _TAG_RE.finditer(text)]


def _names(tags: list[tuple[str, int, int]]) -> tuple[str, ...]:
    return tuple(name for name, _, _ in tags)


def _blank_between(text: str, tags: list[tuple[str, int, int]], gaps: list[int]) -> bool:
    """Whether the text before tag ``g`` (after tag ``g-1``; ``len(tags)`` = the tail) is blank."""
    for g in gaps:
        start = tags[g - 1][2] if g > 0 else 0
        end = tags[g][1] if g < len(tags) else len(text)
        if text[start:end].strip():
            return False
    return True


def _is_reasoning_format(text: str | None) -> bool:
    if not isinstance(text, str):
        return False
    tags = _tags(text)
    names = _names(tags)
    if names in _WITH_ANSWER:
        # Blank before each opening tag (and the tail); the answer itself must say something.
        openers = [i for i, name in enumerate(names) if not name.startswith("/")]
        answer = text[tags[-2][2] : tags[-1][1]]
        return _blank_between(text, tags, [*openers, len(tags)]) and bool(answer.strip())
    if names in _BOXED_ONLY:
        openers = [i for i, name in enumerate(names) if not name.startswith("/")]
        boxed = last_boxed(text[tags[-1][2] :])
        return _blank_between(text, tags, openers) and bool(boxed and boxed.strip())
    return False
