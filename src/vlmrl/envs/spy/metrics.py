"""``game/*`` metrics of a batch of spy games: outcomes, vote validity and the collusion guards.

The guards the issue asks to see: clues that leak nothing (malformed: empty, missing, too long;
copied from another seat's earlier clue) and clues that give everything away (the spy naming its
own changed fact), as rates, beside the mean clue length.
"""

from __future__ import annotations

from vlmrl.envs.spy.game import SpyGame


def game_metrics(games: list[SpyGame]) -> dict[str, float]:
    """Means over ``games`` (finished ones):

    ``spy_found_rate`` (games whose spy got the most votes), ``invalid_vote_rate`` (votes),
    ``civilian_vote_acc`` (civilian votes naming the spy / civilian votes), ``clue_len`` (mean
    characters of well-formed clues), ``clue_malformed_rate``, ``clue_copy_rate`` (clues of rounds
    ≥ 2 that switched to another seat's earlier clue / those clues), ``spy_leak_rate`` (games whose
    spy named its own fact), ``civilian_agree_rate`` (games whose civilians gave one same first
    clue).
    """
    games = [g for g in games if g.found is not None]
    if not games:
        return {}
    votes = [s.vote for g in games for s in g.seats]
    civ_votes = [s.vote for g in games for k, s in enumerate(g.seats) if k != g.spy]
    spies = [g.spy for g in games for k, s in enumerate(g.seats) if k != g.spy]
    clues = [c for g in games for s in g.seats for c in s.clues]
    good = [c for c in clues if c is not None]
    later = [(g, k, r) for g in games for k in range(g.players) for r in range(1, len(g.seats[k].clues))]

    def agree(g: SpyGame) -> bool:
        first = {s.clues[0] for k, s in enumerate(g.seats) if k != g.spy}
        return len(first) == 1 and None not in first

    return {
        "game/spy_found_rate": sum(bool(g.found) for g in games) / len(games),
        "game/invalid_vote_rate": sum(v is None for v in votes) / len(votes),
        "game/civilian_vote_acc": sum(v == s for v, s in zip(civ_votes, spies, strict=True)) / len(civ_votes),
        "game/clue_len": sum(len(c) for c in good) / len(good) if good else 0.0,
        "game/clue_malformed_rate": 1.0 - len(good) / len(clues) if clues else 0.0,
        "game/clue_copy_rate": sum(g.copied(k, r) for g, k, r in later) / len(later) if later else 0.0,
        "game/spy_leak_rate": sum(g.leaked(g.spy) for g in games) / len(games),
        "game/civilian_agree_rate": sum(agree(g) for g in games) / len(games),
    }
