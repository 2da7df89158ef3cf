"""A safe arithmetic calculator: a small recursive-descent parser, no ``eval``, no ``ast``.

Grammar (``^`` and ``**`` are the same operator, right-associative; ``×``/``÷``/``−`` are read as
``*``/``/``/``-``)::

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/" | "%") unary)*
    unary  := ("+" | "-") unary | power
    power  := atom (("^" | "**") unary)?
    atom   := NUMBER | CONST | FUNC "(" expr ("," expr)* ")" | "(" expr ")"

Model text only ever reaches a tokenizer that knows digits, operators, parentheses, commas and
the names in :data:`FUNCTIONS` / :data:`CONSTANTS`; anything else (``__import__``, ``.``-access,
quotes) is a syntax error. Bounds: input length, nesting depth, exponent size and the magnitude
of every intermediate result, so no input can take long or produce a huge number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

MAX_CHARS = 200
MAX_DEPTH = 20
MAX_EXPONENT = 64.0
MAX_MAGNITUDE = 1e15

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
#: name -> (function, allowed argument counts)
FUNCTIONS: dict[str, tuple[Callable[..., float], tuple[int, ...]]] = {
    "sqrt": (math.sqrt, (1,)),
    "abs": (abs, (1,)),
    "round": (lambda x, n=0: round(x, int(n)), (1, 2)),
    "min": (min, (2, 3, 4, 5, 6, 7, 8)),
    "max": (max, (2, 3, 4, 5, 6, 7, 8)),
    "log": (math.log, (1,)),
    "log10": (math.log10, (1,)),
    "exp": (math.exp, (1,)),
    "sin": (lambda d: math.sin(math.radians(d)), (1,)),  # degrees, as the measure tool reports
    "cos": (lambda d: math.cos(math.radians(d)), (1,)),
    "tan": (lambda d: math.tan(math.radians(d)), (1,)),
}
_TOKEN_RE = re.compile(
    r"\s*(?:(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|(\*\*|[-+*/%^(),])|([a-z][a-z0-9]*))"
)
_ALIASES = str.maketrans({"×": "*", "÷": "/", "−": "-", "·": "*"})


class CalcError(ValueError):
    """A message for the model: what in the expression is wrong."""


def calculate(expression: str) -> float:
    """The value of ``expression``; raises :class:`CalcError` for anything but bounded arithmetic.

    >>> calculate("2 + 3 * (4 - 1) ^ 2"), calculate("-2^2"), calculate("sqrt(16) + max(1, 5)")
    (29.0, -4.0, 9.0)
    """
    if not isinstance(expression, str):
        raise CalcError(f"expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_CHARS:
        raise CalcError(f"expression is {len(expression)} characters long; at most {MAX_CHARS} allowed")
    tokens = _tokenize(expression.translate(_ALIASES).lower())
    if not tokens:
        raise CalcError("empty expression")
    parser = _Parser(tokens)
    value = parser.expr(0)
    if parser.pos != len(tokens):
        raise CalcError(f"unexpected {tokens[parser.pos][1]!r} at token {parser.pos + 1}")
    return value


def format_number(value: float) -> str:
    """A result as the model should read it: integers without ``.0``, else 10 significant digits.

    >>> format_number(12.0), format_number(1 / 3), format_number(-0.0)
    ('12', '0.3333333333', '0')
    """
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            bad = text[pos:].lstrip()[:1]
            raise CalcError(
                f"character {bad!r} is not allowed; use numbers, + - * / ^ ( ) and {sorted(FUNCTIONS)}"
            )
        number, op, name = m.groups()
        if number is not None:
            tokens.append(("num", number))
        elif op is not None:
            tokens.append(("op", op))
        else:
            if name not in FUNCTIONS and name not in CONSTANTS:
                raise CalcError(
                    f"unknown name {name[:20]!r}; allowed: {sorted(FUNCTIONS) + sorted(CONSTANTS)}"
                )
            tokens.append(("name", name))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens, self.pos = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise CalcError("expression ends too early" + (f"; expected {expected!r}" if expected else ""))
        tok = self.tokens[self.pos]
        if expected is not None and tok[1] != expected:
            raise CalcError(f"expected {expected!r}, got {tok[1]!r}")
        self.pos += 1
        return tok

    def expr(self, depth: int) -> float:
        if depth > MAX_DEPTH:
            raise CalcError(f"expression nests deeper than {MAX_DEPTH} levels")
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            value = _check(value + self.term(depth) if op == "+" else value - self.term(depth))
        return value

    def term(self, depth: int) -> float:
        value = self.unary(depth)
        while self.peek() in ("*", "/", "%"):
            op = self.take()[1]
            rhs = self.unary(depth)
            if op == "*":
                value = _check(value * rhs)
            elif rhs == 0:
                raise CalcError("division by zero")
            else:
                value = _check(value / rhs if op == "/" else math.fmod(value, rhs))
        return value

    def unary(self, depth: int) -> float:
        if depth > MAX_DEPTH:
            raise CalcError(f"expression nests deeper than {MAX_DEPTH} levels")
        if self.peek() in ("+", "-"):
            sign = -1.0 if self.take()[1] == "-" else 1.0
            return sign * self.unary(depth + 1)
        return self.power(depth)

    def power(self, depth: int) -> float:
        base = self.atom(depth)
        if self.peek() in ("^", "**"):
            self.take()
            exponent = self.unary(depth + 1)
            if abs(exponent) > MAX_EXPONENT:
                raise CalcError(f"exponent {format_number(exponent)} is too large; at most {MAX_EXPONENT:g}")
            if base == 0 and exponent < 0:
                raise CalcError("division by zero (0 to a negative power)")
            if base < 0 and exponent != int(exponent):
                raise CalcError("a negative number to a fractional power is not a real number")
            return _check(math.pow(base, exponent))
        return base

    def atom(self, depth: int) -> float:
        kind, text = self.take()
        if kind == "num":
            return _check(float(text))
        if kind == "name":
            if text in CONSTANTS:
                return CONSTANTS[text]
            fn, arities = FUNCTIONS[text]
            self.take("(")
            args = [self.expr(depth + 1)]
            while self.peek() == ",":
                self.take()
                args.append(self.expr(depth + 1))
            self.take(")")
            if len(args) not in arities:
                allowed = (
                    f"{arities[0]} to {arities[-1]}" if len(arities) > 2 else " or ".join(map(str, arities))
                )
                raise CalcError(f"{text}() takes {allowed} argument(s), got {len(args)}")
            try:
                return _check(float(fn(*args)))
            except (ValueError, OverflowError) as e:
                raise CalcError(
                    f"{text}() of {', '.join(map(format_number, args))} is undefined or too large"
                ) from e
        if text == "(":
            value = self.expr(depth + 1)
            self.take(")")
            return value
        raise CalcError(f"unexpected {text!r}")


def _check(value: float) -> float:
    if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise CalcError(f"a result exceeds {MAX_MAGNITUDE:g} in magnitude")
    return value
