""" "Who is the spy": visual self-play on procedural image pairs (Vision-Zero style).

:mod:`~vlmrl.envs.spy.pairs` makes the pairs (image A and a copy changed in one fact),
:mod:`~vlmrl.envs.spy.game` plays one game (seats, clue rounds, a strict vote, outcome rewards).
The multi-seat rollout that drives a batch of games is :mod:`vlmrl.rollout.seats`.
"""

from vlmrl.envs.spy.game import ROLES, SpyGame, game_kwarg_names, parse_clue, parse_clue_vote, parse_vote
from vlmrl.envs.spy.pairs import PAIR_KINDS, ImagePair, make_pair

__all__ = [
    "PAIR_KINDS",
    "ROLES",
    "ImagePair",
    "SpyGame",
    "game_kwarg_names",
    "make_pair",
    "parse_clue",
    "parse_clue_vote",
    "parse_vote",
]
