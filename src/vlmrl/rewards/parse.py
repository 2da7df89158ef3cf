r"""Pull the final answer out of a completion, in linear time on any input.

The answer is the content of the ``<answer>…</answer>`` pairs with no answer tag inside (the
innermost, if tags nest), when they all agree (after stripping whitespace); pairs that disagree
(``<answer>8</answer><answer>7</answer>``) are no answer at all, so hedging scores 0 in every
accuracy reward instead of paying whenever the last guess is right. Without answer tags it is
the content of the last ``\boxed{…}`` whose braces balance. Whitespace around it is stripped,
and an answer that is itself one ``\boxed{…}`` is unwrapped. Each step is a single pass (one
tag scan, one brace-matching scan), so a 100 kB completion made of ``<answer>`` or ``\boxed{``
fragments costs milliseconds, not the quadratic time a backtracking regex would.
"""

from __future__ import annotations

import re

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOXED = "\\boxed{"
_ANSWER_TAG_RE = re.compile("</?answer>")

#: LaTeX wrappers that only style text: ``\text{B}`` → ``B``.
_STYLE_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textrm|mbox|operatorname)\s*\{([^{}]*)\}")


def extract_answer(completion: str | None) -> str | None:
    r"""Return the final answer in ``completion``, or ``None`` when there is none.

    >>> extract_answer("<think>so</think> <answer> 3 </answer>")
    '3'
    >>> extract_answer("the result is \\boxed{\\frac{1}{2}}.")
    '\\frac{1}{2}'
    >>> extract_answer("<answer>unclosed") is None
    True
    >>> extract_answer("<answer>8</answer> no, <answer>7</answer>") is None  # several answers
    True
    """
    if not isinstance(completion, str):
        return None
    answer = _tag_content(completion)
    if answer is _SEVERAL:
        return None
    if answer is None:
        answer = last_boxed(completion)
    if answer is None:
        return None
    answer = answer.strip()
    if answer.startswith(BOXED) and answer.endswith("}"):
        inner = last_boxed(answer)
        if inner is not None and len(inner) == len(answer) - len(BOXED) - 1:
            answer = inner.strip()
    return answer


#: Returned by :func:`_tag_content` when the answer pairs disagree.
_SEVERAL = object()


def _tag_content(text: str) -> str | object | None:
    """Content of the ``<answer>`` … ``</answer>`` pairs (tag-wise adjacent): the common content
    when all pairs agree after stripping, :data:`_SEVERAL` when they differ, None without a pair."""
    content = None
    prev: re.Match[str] | None = None
    for tag in _ANSWER_TAG_RE.finditer(text):
        if tag.group(0) == ANSWER_CLOSE and prev is not None and prev.group(0) == ANSWER_OPEN:
            this = text[prev.end() : tag.start()]
            if content is not None and this.strip() != content.strip():
                return _SEVERAL
            content = this
        prev = tag
    return content


def matching_braces(text: str) -> dict[int, int]:
    """Map the index of each ``{`` that is closed to the index of its ``}``, in one scan.

    >>> matching_braces("a{b{c}}{")
    {3: 5, 1: 6}
    """
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
    return pairs


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{…}`` whose braces balance (nested braces allowed).

    >>> last_boxed("\\boxed{1} then \\boxed{\\frac{1}{2}} and \\boxed{oops")
    '\\frac{1}{2}'
    """
    if BOXED not in text:
        return None
    pairs = matching_braces(text)
    pos = text.rfind(BOXED)
    while pos >= 0:
        brace = pos + len(BOXED) - 1
        if brace in pairs:
            return text[brace + 1 : pairs[brace]]
        pos = text.rfind(BOXED, 0, pos)
    return None


def strip_latex_style(text: str) -> str:
    r"""Drop ``$``, ``\text{…}``-style wrappers and ``\,``/``\!`` spacing, keeping the content.

    >>> strip_latex_style("$\\text{(B)}$")
    '(B)'
    """
    text = _STYLE_RE.sub(r"\1", text)
    for junk in ("$", "\\,", "\\!", "\\;", "\\ "):
        text = text.replace(junk, " " if junk == "\\ " else "")
    return text.strip()


def normalize_text(text: str) -> str:
    r"""Case-folded, whitespace-collapsed, unstyled text without edge quotes or end punctuation.

    >>> normalize_text("  The  $\\text{Red}$ Cube. ")
    'the red cube'
    """
    text = " ".join(strip_latex_style(text).split()).casefold()
    return text.strip("\"'`").rstrip(".!;,").strip()
