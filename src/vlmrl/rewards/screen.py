r"""Refuse math answers that would make sympy do unbounded work in C.

The clock in ``timeout.py`` stops slow *Python* in any thread, but outside the main thread it
cannot stop one long C call, and sympy makes those: ``9^{9^{9}}`` becomes the single big-int
power ``9**387420489`` (minutes), ``(99!)!`` a factorial of a 156-digit number. So before an
answer reaches math_verify we check it for the constructs that do this, and send the ones that
have them to the pure comparison (number / normalised string) instead. Real answers (``2\sqrt{3}``,
``\frac{\pi}{4}``, ``x^2+1``, ``1.5\times10^{8}``, ``5!``) pass.

Refused:

* an exponent (after ``^``, ``**`` or ``\exp``) that itself holds one of those or ``!``, or is
  followed by another (``9**9**9``): towers;
* an integer of more than 4 digits in an exponent, or numeric exponents whose product passes
  ``MAX_EXPONENT_PRODUCT`` (nesting multiplies exponents: ``((9^{99})^{99})^{99}``);
* ``!`` after anything but a name or an integer of at most 4 digits (``(99!)!``, ``5!!``);
* sums, products, integrals, limits, binomials and Gamma, which sympy evaluates by looping.
"""

from __future__ import annotations

import re

#: Largest allowed product of all numeric exponents in one answer (``x^{2}y^{3}`` → 6).
MAX_EXPONENT_PRODUCT = 10_000

#: Most digits of an integer inside an exponent, or in front of ``!``.
MAX_OPERAND_DIGITS = 4

_COMMANDS = re.compile(
    r"\\(?:sum|prod|int|iint|iiint|oint|lim|binom|dbinom|tbinom|choose|Gamma|coprod|bigcup|bigcap)"
    r"(?![A-Za-z])"
)
#: Power signs; ``\exp`` counts as one (``\exp(\exp(99))`` is the tower ``e^{e^{99}}``).
_POWER = re.compile(r"\^|\*\*|\\exp(?![A-Za-z])")
_DIGITS = re.compile(r"\d+")
_ATOM = re.compile(r"\\[A-Za-z]+|[+-]?\d+(?:\.\d+)?|.", re.DOTALL)


def is_explosive(text: str) -> bool:
    r"""True when ``text`` holds a construct that can make sympy run unbounded C code.

    >>> is_explosive("2\\sqrt{3} + x^{2}"), is_explosive("5!"), is_explosive("9^{9^{9}}")
    (False, False, True)
    >>> is_explosive("(99!)!"), is_explosive("10^{100000}"), is_explosive("\\sum_{i=1}^{n} i")
    (True, True, True)
    >>> is_explosive("9**9**9"), is_explosive("\\exp(\\exp(99))"), is_explosive("\\rfloor!")
    (True, True, True)
    """
    if _COMMANDS.search(text):
        return True
    product = 1
    for m in _POWER.finditer(text):
        exponent, end = _operand(text, m.end())
        chained = m.group(0) != "\\exp" and _POWER.match(text[end:].lstrip())
        if _POWER.search(exponent) or "!" in exponent or chained:
            return True  # a tower: a power inside the exponent, or chained ``a**b**c``
        for run in _DIGITS.findall(exponent):
            if len(run) > MAX_OPERAND_DIGITS:
                return True
            product *= max(int(run), 1)
            if product > MAX_EXPONENT_PRODUCT:
                return True
    return any(_bad_factorial(text, i) for i, ch in enumerate(text) if ch == "!")


def _operand(text: str, start: int) -> tuple[str, int]:
    """The operand after a power sign and where it ends.

    A ``{…}`` or ``(…)`` group (to the end of ``text`` if unclosed), a command, a number, or a
    single character.
    """
    i = start
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        return "", i
    closer = {"{": "}", "(": ")"}.get(text[i])
    if closer is not None:
        end = _group_end(text, i, text[i], closer)
        return text[i + 1 : end], end + 1
    m = _ATOM.match(text, i)
    return (m.group(0), m.end()) if m else ("", i)


def _group_end(text: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one at ``i``, or ``len(text)`` if it is never closed."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == open_ch:
            depth += 1
        elif text[j] == close_ch:
            depth -= 1
            if depth == 0:
                return j
    return len(text)


def _bad_factorial(text: str, i: int) -> bool:
    """``!`` at ``i`` is safe only after a plain name (``n!``) or a short integer (``5!``)."""
    if text[i + 1 : i + 2] == "=":  # ``!=`` is not a factorial
        return False
    j = i
    while j > 0 and text[j - 1].isspace():
        j -= 1
    k = j
    while k > 0 and text[k - 1].isdigit():
        k -= 1
    if k < j:
        return j - k > MAX_OPERAND_DIGITS
    while k > 0 and text[k - 1].isalpha():
        k -= 1
    # No name at all (``)!``, ``}!``, ``!!``), or a command's name (``\rfloor!``).
    return k == j or (k > 0 and text[k - 1] == "\\")
