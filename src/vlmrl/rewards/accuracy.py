r"""Accuracy rewards for the non-math answer types, and ``auto``, which picks one per sample.

All compare the extracted answer (``parse.extract_answer``) with ``sample.answer``, read the
same way, and score 1.0 or 0.0:

* ``number``: both read by ``numeric.parse_number`` and within relative 1e-4;
* ``choice``: both read as one option letter A–E (``B``, ``(B)``, ``B.``, ``B) 12 cm``,
  ``Option B``, any case); a gold answer that is no letter falls back to ``text`` equality;
* ``yesno``: both read as yes/no (``Yes``, ``no.``, ``Yes, because…``);
* ``text``: equal after ``parse.normalize_text`` (case, spaces, LaTeX text wrappers, end
  punctuation);
* ``auto`` (alias ``accuracy``): dispatch on ``sample.answer_type`` — math, number, choice,
  yesno, box (→ ``iou``), text; an unknown type scores 0.
"""

from __future__ import annotations

import re

from vlmrl.data.sample import Sample
from vlmrl.rewards.box import iou_reward
from vlmrl.rewards.math_reward import MAX_ANSWER_CHARS, math_reward
from vlmrl.rewards.numeric import numbers_close, parse_number
from vlmrl.rewards.parse import extract_answer, normalize_text, strip_latex_style
from vlmrl.rewards.registry import RewardFn, register_reward
from vlmrl.rewards.types import RewardBreakdown

_CI = re.IGNORECASE | re.DOTALL
_CHOICE_RES = (
    re.compile(r"\(?([A-E])\)?\.?", _CI),  # B, (B), B., (B).
    re.compile(r"\(?([A-E])[).:]\s+\S.*", _CI),  # B) text, B. text, B: text
    re.compile(r"\(([A-E])\)\s*\S.*", _CI),  # (B)text
    re.compile(r"(?:the\s+)?(?:answer|option|choice)\s*(?:is)?\s*:?\s*\(?([A-E])\)?\.?", _CI),
)
_YESNO_RE = re.compile(r"(yes|no)(?:[\s.!]*|[,.;:!]\s.*)", re.DOTALL)


def _answer(completion: str | None) -> str | None:
    """The extracted answer, or ``None`` when missing or longer than ``MAX_ANSWER_CHARS``."""
    answer = extract_answer(completion)
    return answer if answer is not None and len(answer) <= MAX_ANSWER_CHARS else None


def _result(name: str, ok: bool) -> RewardBreakdown:
    score = 1.0 if ok else 0.0
    return RewardBreakdown(score, {name: score})


def parse_choice(text: str | None) -> str | None:
    """The option letter ``text`` names, upper-cased, or ``None``.

    >>> [parse_choice(t) for t in ("b", "(B)", "B.", "C) 12 cm", "Option d", "E.g. B", "Both")]
    ['B', 'B', 'B', 'C', 'D', None, None]
    """
    if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
        return None
    body = strip_latex_style(text)
    for pattern in _CHOICE_RES:
        m = pattern.fullmatch(body)
        if m is not None:
            return m.group(1).upper()
    return None


def parse_yesno(text: str | None) -> str | None:
    """``"yes"``, ``"no"`` or ``None``.

    >>> [parse_yesno(t) for t in ("Yes.", "NO", "yes, it is red", "No doubt", "maybe")]
    ['yes', 'no', 'yes', None, None]
    """
    if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
        return None
    m = _YESNO_RE.fullmatch(strip_latex_style(text).casefold())
    return m.group(1) if m else None


@register_reward("number")
def number_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    """1.0 when the answer and ``sample.answer`` are the same number (relative 1e-4).

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="", answer="1200")
    >>> number_reward("<answer>1,200 cm</answer>", s).total, number_reward("<answer>12</answer>", s).total
    (1.0, 0.0)
    """
    pred, gold = parse_number(_answer(completion)), parse_number(str(sample.answer))
    return _result("number", pred is not None and gold is not None and numbers_close(pred, gold))


@register_reward("choice")
def choice_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    """1.0 when the answer names the gold option letter.

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="", answer="B")
    >>> [choice_reward(f"<answer>{a}</answer>", s).total for a in ("(b)", "B) 12 cm", "C")]
    [1.0, 1.0, 0.0]
    """
    answer, gold = _answer(completion), str(sample.answer)
    gold_letter = parse_choice(gold)
    if gold_letter is None:
        return _result("choice", answer is not None and normalize_text(answer) == normalize_text(gold))
    return _result("choice", parse_choice(answer) == gold_letter)


@register_reward("yesno")
def yesno_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    """1.0 when the answer's yes/no matches the gold one.

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="", answer="yes")
    >>> yesno_reward("<answer>Yes.</answer>", s).total, yesno_reward("<answer>no</answer>", s).total
    (1.0, 0.0)
    """
    pred, gold = parse_yesno(_answer(completion)), parse_yesno(str(sample.answer))
    return _result("yesno", pred is not None and pred == gold)


@register_reward("text")
def text_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    """1.0 when the answer equals ``sample.answer`` after ``normalize_text``.

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="", answer="red cube")
    >>> text_reward("<answer> Red  Cube.</answer>", s).total
    1.0
    """
    answer = _answer(completion)
    gold = normalize_text(str(sample.answer))
    return _result("text", answer is not None and bool(gold) and normalize_text(answer) == gold)


#: ``sample.answer_type`` → the reward that checks it.
BY_ANSWER_TYPE: dict[str, RewardFn] = {
    "math": math_reward,
    "number": number_reward,
    "choice": choice_reward,
    "yesno": yesno_reward,
    "box": iou_reward,
    "text": text_reward,
}


@register_reward("auto", "accuracy")
def accuracy_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    """The reward for ``sample.answer_type``; its parts are kept, with ``accuracy`` = total.

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="", answer="A", answer_type="choice")
    >>> accuracy_reward("<answer>(A)</answer>", s)
    RewardBreakdown(total=1.0, parts={'accuracy': 1.0, 'choice': 1.0}, spans={})
    """
    fn = BY_ANSWER_TYPE.get(str(getattr(sample, "answer_type", "")))
    if fn is None:
        return RewardBreakdown(0.0, {"accuracy": 0.0})
    result = fn(completion, sample)
    return RewardBreakdown(result.total, {"accuracy": result.total, **result.parts}, dict(result.spans))
