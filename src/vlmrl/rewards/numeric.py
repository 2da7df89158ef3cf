r"""Read one number from a short answer string, conservatively, with no sympy.

Accepted: ``12``, ``-3.5``, ``.5``, ``1e-3``, ``1,234,567.8`` (commas only as thousands
separators: ``1,2`` is refused, not guessed), fractions ``3/4`` and ``\frac{3}{4}``
(``\dfrac``/``\tfrac`` too), a leading currency sign, and one trailing unit or percent sign
(``12 cm``, ``45^\circ``, ``45°``, ``50%``, ``50\%``, ``3\text{ m}^2``). A percent sign is
*dropped*, not divided by 100: ``50%`` reads as 50, the same way the ground truth ``50%`` does.
Anything else (two numbers, words around the number, NaN, infinities) gives ``None``: a reward
must not credit an answer that it had to guess at.
"""

from __future__ import annotations

import math
import re

from vlmrl.rewards.parse import strip_latex_style

#: Inputs longer than this are not numbers anyone meant; refusing them bounds the regex work.
MAX_NUMBER_CHARS = 100

#: Default tolerance: relative 1e-4, with an absolute floor so that a gold 0 can be matched.
REL_TOL, ABS_TOL = 1e-4, 1e-9

_NUM = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][+-]?\d+)?"
_NUM_RE = re.compile(_NUM)
_FRAC_RE = re.compile(r"([+-]?)\\[dt]?frac\s*\{\s*(" + _NUM + r")\s*\}\s*\{\s*(" + _NUM + r")\s*\}")
_SLASH_RE = re.compile(r"(" + _NUM + r")\s*/\s*(" + _NUM + r")")
_CURRENCY = "$€£¥"
_UNIT_RE = re.compile(
    r"(?:%|\\%|°|\^\s*\\circ|\^\s*\{\s*\\circ\s*\}|\\circ|"
    r"[A-Za-zµ]{1,12}\.?(?:\s*\^?\s*\{?[23]\}?)?|percent|degrees?)"
)


def parse_number(text: str | None) -> float | None:
    r"""Return the one finite number ``text`` states, or ``None``.

    >>> parse_number("1,234.5 cm")
    1234.5
    >>> parse_number("\\frac{3}{4}")
    0.75
    >>> parse_number("50\\%"), parse_number("1,2"), parse_number("3 or 4")
    (50.0, None, None)
    """
    if not isinstance(text, str) or len(text) > MAX_NUMBER_CHARS:
        return None
    body = text.replace("\\text{", "\\mathrm{")
    body = strip_latex_style(body).strip().rstrip(".").strip()
    body = body.lstrip(_CURRENCY).strip()
    value = _read_value(body)
    if value is None:
        return None
    number, rest = value
    rest = rest.strip()
    if rest and not _UNIT_RE.fullmatch(rest):
        return None
    return number if math.isfinite(number) else None


def _read_value(body: str) -> tuple[float, str] | None:
    """Read a fraction or a plain number at the start of ``body``; return it and the remainder."""
    m = _FRAC_RE.match(body)
    if m is not None:
        value = _ratio(m.group(2), m.group(3))
        sign = -1.0 if m.group(1) == "-" else 1.0
        return None if value is None else (sign * value, body[m.end() :])
    m = _SLASH_RE.match(body)
    if m is not None:
        value = _ratio(m.group(1), m.group(2))
        return None if value is None else (value, body[m.end() :])
    m = _NUM_RE.match(body)
    value = _to_float(m.group(0)) if m is not None else None
    return None if value is None or m is None else (value, body[m.end() :])


def _ratio(top: str, bottom: str) -> float | None:
    num, den = _to_float(top), _to_float(bottom)
    return None if num is None or den is None or den == 0 else num / den


def _to_float(token: str) -> float | None:
    digits = token.replace(",", "")
    if not any(ch.isdigit() for ch in digits):
        return None
    try:
        return float(digits)
    except (ValueError, OverflowError):
        return None


def numbers_close(a: float, b: float, rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL) -> bool:
    """``|a - b| <= max(rel_tol * max(|a|, |b|), abs_tol)`` (``math.isclose``), finite inputs only.

    >>> numbers_close(0.5, 0.50004), numbers_close(0.5, 0.51)
    (True, False)
    """
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
