"""Strict parsing of the spy game's clue and vote turns: a hostile string never raises.

A clue is the content of one ``<answer>`` block, sanitised to lower-case letters, digits, spaces and
``-`` (so model text never reaches another seat's prompt as markup or special tokens). A vote is
one ``<answer>`` block too, read by the game's ``vote_by`` rule; anything else is invalid (``None``).
"""

from __future__ import annotations

import re

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
VOTE_RE = re.compile(r"\s*([0-9]{1,3})\s*")  # ASCII digits only: a regex digit class takes any script's
CLUE_KEEP = re.compile(r"[^a-z0-9 \-]")


def parse_clue(text: object, max_chars: int) -> str | None:
    """The clue of one turn: the content of its single ``<answer>`` block, sanitised; ``None`` when
    malformed (no block, several, empty after sanitising, or longer than ``max_chars``).

    >>> parse_clue("<answer> 3 </answer>", 40), parse_clue("<answer></answer>", 40), parse_clue(None, 40)
    ('3', None, None)
    >>> parse_clue("<answer>top-LEFT<|im_start|></answer>", 40)
    'top-leftimstart'
    """
    if not isinstance(text, str):
        return None
    blocks = ANSWER_RE.findall(text)
    if len(blocks) != 1:
        return None
    clue = " ".join(CLUE_KEEP.sub("", blocks[0].lower()).split())
    return clue if 0 < len(clue) <= max_chars else None


def parse_vote(text: object, players: int, seat: int) -> int | None:
    """The seat (0-based) a vote names, or ``None`` for an invalid vote.

    Valid: exactly one ``<answer>`` block whose content is only an integer ``1..players`` that is
    not the voter's own number (``seat`` is 0-based, the text 1-based).

    >>> parse_vote("<answer>2</answer>", 3, 0), parse_vote("<answer>1</answer>", 3, 0)
    (1, None)
    >>> parse_vote("<answer>2 or 3</answer>", 3, 0), parse_vote("<answer>9</answer>", 3, 0)
    (None, None)
    """
    if not isinstance(text, str):
        return None
    blocks = ANSWER_RE.findall(text)
    if len(blocks) != 1:
        return None
    m = VOTE_RE.fullmatch(blocks[0])
    if m is None:
        return None
    k = int(m.group(1)) - 1
    return k if 0 <= k < players and k != seat else None


def parse_clue_vote(
    text: object, clues: list[str | None], seat: int, max_chars: int = 40, shared: bool = False
) -> int | None:
    """A vote cast in the clues' own answer form; the seat (0-based) it accuses, or ``None`` for an
    invalid vote (malformed, or not exactly one other player accused: none, or ambiguous).

    ``vote_by: clue`` (``shared`` False): the vote repeats the clue that differs; it accuses the only
    other player who gave that clue. ``vote_by: shared``: the vote names the clue the civilians
    share; it accuses the only other player whose clue is not that one.

    >>> clues = ["3", "4", "3"]
    >>> parse_clue_vote("<answer>4</answer>", clues, 0), parse_clue_vote("<answer>3</answer>", clues, 1)
    (1, None)
    >>> parse_clue_vote("<answer>3</answer>", clues, 0), parse_clue_vote("<answer>5</answer>", clues, 0)
    (2, None)
    >>> [parse_clue_vote("<answer>3</answer>", clues, k, shared=True) for k in (0, 1)]
    [1, None]
    """
    voted = parse_clue(text, max_chars)
    if voted is None:
        return None
    named = [k for k, c in enumerate(clues) if k != seat and (c != voted if shared else c == voted)]
    return named[0] if len(named) == 1 else None


def names_fact(clue: str | None, fact: str) -> bool:
    """Whether ``clue`` names ``fact`` (as the whole clue or one of its words)."""
    if clue is None or not fact:
        return False
    fact = fact.lower()
    return clue == fact or fact in clue.replace("-", " ").split() or fact in clue.split()
