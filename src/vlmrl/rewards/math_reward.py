r"""``math``: is the extracted answer mathematically equal to ``sample.answer``?

Order of checks, cheapest first; the first that says "equal" wins:

1. both sides read as plain numbers (``numeric.parse_number``) within relative 1e-4;
2. equal after ``normalize_text`` (case, spaces, ``$``, ``\text{}``);
3. math_verify: ``parse`` both sides (wrapped in ``$…$``, which lets it read bare LaTeX such as
   ``\frac12`` or ``2\sqrt{3}``; bare text if that finds nothing) then ``verify(gold, pred)``;
   if that says no but both parse to sympy numbers, compare their floats within 1e-4
   (math_verify itself rounds to 6 places, so ``3.4641`` ≠ ``2\sqrt{3}`` there).

How the time is bounded, in any thread (see ``timeout.py`` for the mechanism):

* an extracted answer longer than ``MAX_ANSWER_CHARS`` (1,000) scores 0 without parsing;
* answers with constructs that make sympy run long C code (``screen.is_explosive``) skip step 3;
* step 3 runs under ``call_with_timeout(MATH_TIMEOUT_S)`` (1 s for parse + verify together);
  math_verify's own ``parsing_timeout`` / ``timeout_seconds`` are passed as ``None`` because its
  ``signal.alarm`` fails outside the main thread, counts whole seconds per step, and would
  cancel our timer. (It then logs, once, that its timeout is disabled: that is expected.)
* a timeout or any exception in step 3 counts as "not equal" (0), never as an error.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from vlmrl.data.sample import Sample
from vlmrl.rewards.numeric import numbers_close, parse_number
from vlmrl.rewards.parse import extract_answer, normalize_text
from vlmrl.rewards.registry import register_reward
from vlmrl.rewards.screen import is_explosive
from vlmrl.rewards.timeout import call_with_timeout
from vlmrl.rewards.types import RewardBreakdown

#: Longer extracted answers score 0 unparsed: real answers are short, and parse cost grows with length.
MAX_ANSWER_CHARS = 1000

#: Wall-clock budget for math_verify's parse + verify of one completion.
MATH_TIMEOUT_S = 1.0

_warm_lock = threading.Lock()
_warm = False


@register_reward("math")
def math_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    r"""1.0 when the extracted answer equals ``sample.answer`` as mathematics, else 0.0.

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="", answer="0.5")
    >>> [math_reward(f"<answer>{a}</answer>", s).total for a in ("1/2", "\\frac{1}{2}", "0.6")]
    [1.0, 1.0, 0.0]
    """
    score = 1.0 if math_equal(extract_answer(completion), str(sample.answer)) else 0.0
    return RewardBreakdown(score, {"math": score})


def math_equal(pred: str | None, gold: str) -> bool:
    r"""Whether ``pred`` equals ``gold`` by the checks in the module docstring; never raises.

    >>> math_equal("\\dfrac{1}{2}", "0.5"), math_equal("0.49999", "0.5"), math_equal(None, "1")
    (True, True, False)
    """
    if not isinstance(pred, str) or not pred.strip() or len(pred) > MAX_ANSWER_CHARS:
        return False
    a, b = parse_number(pred), parse_number(gold)
    if a is not None and b is not None and numbers_close(a, b):
        return True
    if normalize_text(gold) and normalize_text(pred) == normalize_text(gold):
        return True
    if is_explosive(pred) or is_explosive(gold):
        return False
    _warm_up()
    return call_with_timeout(lambda: _verify(pred, gold), MATH_TIMEOUT_S, default=False)


def _warm_up() -> None:
    """Import math_verify and run it once *without* a clock.

    Its first call imports sympy submodules lazily; a timeout landing inside an import could
    leave a half-initialised module behind, so that first call must not be interruptible.
    """
    global _warm
    if _warm:
        return
    with _warm_lock:
        if not _warm:
            _verify("1/2", "0.5")
            _warm = True


def _verify(pred: str, gold: str) -> bool:
    try:
        from math_verify import verify

        gold_parsed, pred_parsed = _parse_gold(gold), _parse(pred)
        if not gold_parsed or not pred_parsed:
            return False
        if verify(list(gold_parsed), pred_parsed, timeout_seconds=None):
            return True
        return _floats_close(gold_parsed[0], pred_parsed[0])
    except Exception:  # math_verify / sympy can raise almost anything on odd input
        return False


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple[Any, ...]:
    """Gold answers repeat across a group of G samples: parse each once."""
    return tuple(_parse(gold))


def _parse(text: str) -> list[Any]:
    from math_verify import parse

    wrapped = text if "$" in text else f"${text}$"
    return parse(wrapped, parsing_timeout=None) or parse(text, parsing_timeout=None)


def _floats_close(gold: Any, pred: Any) -> bool:
    """Numeric fallback: both sympy numbers whose floats agree within ``numbers_close``."""
    if not (getattr(gold, "is_number", False) and getattr(pred, "is_number", False)):
        return False
    try:
        return numbers_close(float(gold.evalf()), float(pred.evalf()))
    except (TypeError, ValueError, OverflowError, AttributeError):
        return False
