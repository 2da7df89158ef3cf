""" "Who is the spy" on image pairs: N seats of one policy, clue rounds, a vote, outcome rewards.

One :class:`SpyGame` is one game. ``reset(sample, game)`` makes the image pair from the sample
(:func:`~vlmrl.envs.spy.pairs.make_pair`, the same pair for every game on that sample), picks the
spy's seat from ``(sample.id, game)`` and returns each seat's first user turn: its own image (A for
civilians, B for the spy) and the clue question. Then, phase by phase, every seat speaks at once:

* ``clue_rounds`` clue rounds: each seat writes one clue inside ``<answer> </answer>``; from round
  2 on a seat sees every clue of the earlier rounds (players in a round speak simultaneously, so a
  clue can be copied only from an earlier round, which is what the copy guard measures);
* one vote: each seat sees all clues and its own seat number and answers ``<answer>K</answer>``,
  K another player. :func:`parse_vote` is strict (one answer block holding only an integer in
  ``1..N``, not the voter's own seat); anything else is an invalid vote, never an exception.
  ``vote_by: clue`` / ``shared`` ask for the vote in the clues' own answer form instead (the
  clue that differs / the clue the civilians share; :func:`~vlmrl.envs.spy.parse.parse_clue_vote`),
  valid only when it accuses exactly one other player.

The spy is found when it gets more valid votes than every other seat. Rewards (each part logged;
``total`` is their sum), with ``found`` the outcome and ``ok`` = the seat's vote was valid::

    outcome = w_out · ok · (found if civilian else not found)   an invalid vote is a loss
    vote    = w_vote · [civilian and its vote named the spy]
    format  = w_fmt · [every clue well formed and the vote valid]
    clue    = −w_clue · (malformed clues) / rounds              empty, missing, too long
    copy    = −w_copy · (copied clues) / rounds                 a clue switched to another's earlier clue
    leak    = −w_leak · [spy and a clue names its own fact]      giving the difference away

Every penalty lies in ``[−w, 0]``: a degenerate strategy is bounded, not unboundedly punished.
No part reads a label: ``leak`` compares the spy's clue with the fact the game itself changed.

Clues are shown to the other seats sanitised (lower case letters, digits, spaces and ``-`` only,
at most ``max_clue_chars``): model text never reaches another prompt as markup or special tokens.
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass, field

from vlmrl.data.prompts import render_prompt
from vlmrl.data.sample import IMAGE_PLACEHOLDER, Sample
from vlmrl.envs.spy.pairs import PAIR_KINDS, ImagePair, check_count_change, make_pair
from vlmrl.envs.spy.parse import names_fact, parse_clue, parse_clue_vote, parse_vote
from vlmrl.envs.types import Observation
from vlmrl.rewards.types import RewardBreakdown

NO_CLUE = "(no clue)"
ROLES = ("civilian", "spy")
VOTE_QUESTIONS = {
    "seat": "Which player is the spy? Answer with a number.",
    "clue": "Which answer is different? Answer with the spy's answer.",
    "shared": "Which answer do the civilians share? Answer with it.",
}
"""The vote turn's question for each ``vote_by`` (in the clue template's words)."""
VOTE_BY = tuple(VOTE_QUESTIONS)


@dataclass
class SeatRecord:
    """What one seat said: its clues (raw and parsed) and its vote (raw and parsed)."""

    clues_raw: list[str] = field(default_factory=list)
    clues: list[str | None] = field(default_factory=list)
    vote_raw: str | None = None
    vote: int | None = None


class SpyGame:
    """One game of "who is the spy"; see the module docstring for phases and rewards.

    Example (a hand-played game; seat 1 is the spy):
        >>> from vlmrl.data.tasks import generate
        >>> s = generate("color", 1)[0]
        >>> g = SpyGame(players=3, clue_rounds=1)
        >>> obs = g.reset(s, spy=1)
        >>> len(obs), g.phase
        (3, 'clue')
        >>> _ = g.submit([f"<answer>{c}</answer>" for c in (g.pair.fact_a, g.pair.fact_b, g.pair.fact_a)])
        >>> g.phase
        'vote'
        >>> _ = g.submit(["<answer>2</answer>", "<answer>1</answer>", "<answer>2</answer>"])
        >>> g.found, [r.parts["outcome"] for r in g.rewards()]
        (True, [1.0, 0.0, 1.0])
    """

    def __init__(
        self,
        players: int = 4,
        clue_rounds: int = 2,
        max_clue_chars: int = 40,
        template: str = "answer",
        reveal_role: bool = True,
        mask_spy_clues: bool = False,
        mask_votes: bool = False,
        greedy_vote: bool = False,
        count_change: str = "both",
        vote_by: str = "seat",
        outcome_weight: float = 1.0,
        vote_weight: float = 0.5,
        format_weight: float = 0.1,
        clue_penalty: float = 0.2,
        copy_penalty: float = 0.2,
        leak_penalty: float = 0.2,
        selfplay_steps: int = 0,
        labelled_steps: int = 0,
        max_turns: int | None = None,
        max_tool_calls: int | None = None,
    ) -> None:
        """Arguments (``env.kwargs`` of a config with ``env.name: spy``):

        players: seats per game (3..9), one of them the spy.
        clue_rounds: clue rounds before the vote (1..4).
        max_clue_chars: longest clue (after sanitising) that counts as well formed.
        template: the prompt template of the clue question (``answer``: the tiny base's format).
        reveal_role: tell each seat its role in its first turn (Vision-Zero); False: roles are
            told only at the vote, so a clue is a plain description of one's own image.
        mask_spy_clues: leave the spy's clue tokens out of the loss (its vote still trains).
        greedy_vote: every seat votes greedily (clues are still sampled): the outcome is then a
            fixed function of the clues, so the clues' reward carries no vote sampling noise.
            Needs ``mask_votes``: a greedy token is not a sample of the policy, so its log-prob
            has no place in a policy-gradient loss.
        count_change: ``count`` pairs: ``both`` (B has one target more or fewer) or ``more``
            (always one more, when there is room).
        mask_votes: leave every seat's vote tokens out of the loss: the vote stays as it is (e.g.
            as a warm-up taught it) and only the clues learn from the outcome.
        vote_by: ``seat``: the vote is another player's number; ``clue``: the vote repeats the
            last-round clue that differs, in the clue's own answer form (:func:`parse_clue_vote`;
            for a model whose answers are counts, a player number is a count it would be
            trained to write in a text-only turn).
        outcome_weight, vote_weight, format_weight, clue_penalty, copy_penalty, leak_penalty: the
            weights of the module docstring (penalties given positive).
        selfplay_steps, labelled_steps: Iterative-SPO: ``selfplay_steps`` of self-play, then
            ``labelled_steps`` of single-turn RL on ``reward.*`` (verifiable rewards), repeated;
            0 = self-play only (see :func:`vlmrl.rollout.seats.labelled_stage`).
        max_turns, max_tool_calls: accepted for the env config's common keys; the game's own
            length is ``clue_rounds + 1`` turns and it calls no tools.
        """
        checks = {
            "players": (players, 3, 9),
            "clue_rounds": (clue_rounds, 1, 4),
            "max_clue_chars": (max_clue_chars, 1, 200),
        }
        for name, (v, lo, hi) in checks.items():
            if not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"spy game: {name} must be an integer in [{lo}, {hi}], got {v!r}")
        weights = {
            "outcome_weight": outcome_weight,
            "vote_weight": vote_weight,
            "format_weight": format_weight,
            "clue_penalty": clue_penalty,
            "copy_penalty": copy_penalty,
            "leak_penalty": leak_penalty,
        }
        bad = {k: v for k, v in weights.items() if not isinstance(v, (int, float)) or v < 0}
        check_count_change(count_change)
        if greedy_vote and not mask_votes:
            raise ValueError(
                "spy game: greedy_vote needs mask_votes: true (greedy vote tokens are not samples of "
                "the policy, so they cannot be trained on)"
            )
        if vote_by not in VOTE_BY:
            raise ValueError(f"spy game: vote_by must be one of {list(VOTE_BY)}, got {vote_by!r}")
        if bad or selfplay_steps < 0 or labelled_steps < 0:
            raise ValueError(
                "spy game: weights and stage lengths must be >= 0, got "
                f"{bad or (selfplay_steps, labelled_steps)}"
            )
        self.players, self.clue_rounds, self.max_clue_chars = players, clue_rounds, max_clue_chars
        self.template, self.reveal_role, self.mask_spy_clues = (
            template,
            bool(reveal_role),
            bool(mask_spy_clues),
        )
        self.vote_by, self.mask_votes, self.count_change = vote_by, bool(mask_votes), count_change
        self.greedy_vote = bool(greedy_vote)
        self.w = {k: float(v) for k, v in weights.items()}
        self.selfplay_steps, self.labelled_steps = int(selfplay_steps), int(labelled_steps)
        self.max_turns = clue_rounds + 1
        self.sample: Sample | None = None

    # ---- set-up -------------------------------------------------------------------------------
    @staticmethod
    def pair_for(sample: Sample, count_change: str = "both") -> ImagePair:
        """The image pair of ``sample`` (seeded by its id: every game on it plays the same pair)."""
        return make_pair(sample, random.Random(f"vlmrl:spy:pair:{sample.id}"), count_change)

    def reset(self, sample: Sample, game: int = 0, spy: int | None = None) -> list[Observation]:
        """Start a game on ``sample``; each seat's first user turn (seat order). ``spy`` fixes the
        spy's seat (tests); by default it is drawn from ``(sample.id, game)``."""
        if sample.task not in PAIR_KINDS:
            raise ValueError(
                f"spy game: task {sample.task!r} has no image pairs; allowed: {list(PAIR_KINDS)}"
            )
        self.sample = sample
        self.pair = self.pair_for(sample, self.count_change)
        rng = random.Random(f"vlmrl:spy:seat:{sample.id}:{game}")
        self.spy = rng.randrange(self.players) if spy is None else int(spy)
        if not 0 <= self.spy < self.players:
            raise ValueError(f"spy game: spy seat {spy} outside 0..{self.players - 1}")
        self.seats = [SeatRecord() for _ in range(self.players)]
        self.round = 0  # clue rounds done
        self.found: bool | None = None
        return [self.first_turn(self.role(k)) for k in range(self.players)]

    def role(self, seat: int) -> str:
        return ROLES[int(seat == self.spy)]

    def first_turn(self, role: str) -> Observation:
        """A seat's first user turn: its image and the clue question (the same text for every seat of
        a role, so the seats of one role share one prompt)."""
        image = self.pair.image_b if role == "spy" else self.pair.image_a
        view = Sample("spy-view", [image], f"{IMAGE_PLACEHOLDER}{self.pair.question}", "", self.pair.kind)
        text = render_prompt(view, self.template)
        if self.reveal_role:
            intro = (
                f"Who is the spy: {self.players} players. "
                + ("You are the spy: your image differs from the others'. " if role == "spy" else
                   "You are a civilian: one player's image differs from yours. ")
                + "Give a short clue about your image."
            )  # fmt: skip
            text = f"{intro} {text}"
        return Observation(text, [image])

    def system_prompt(self) -> str:
        """No system turn: the rules are in the turns (the tiny base was trained without one)."""
        return ""

    # ---- play ---------------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        """``clue``, ``vote`` or ``done``."""
        if self.found is not None:
            return "done"
        return "clue" if self.round < self.clue_rounds else "vote"

    def _clue_lines(self) -> str:
        lines = []
        for r in range(self.round):
            said = "; ".join(f"player {k + 1}: {s.clues[r] or NO_CLUE}" for k, s in enumerate(self.seats))
            lines.append(f"Clues of round {r + 1}: {said}.")
        return " ".join(lines)

    def submit(self, texts: list[str]) -> list[Observation | None]:
        """Every seat's turn of the current phase (``texts[k]`` is seat k's); the next user turn of
        each seat, or ``None`` per seat once the game is over. Never raises on any text."""
        if len(texts) != self.players:
            raise ValueError(f"spy game: {len(texts)} turns for {self.players} seats")
        if self.phase == "done":
            return [None] * self.players
        if self.phase == "clue":
            for s, t in zip(self.seats, texts, strict=True):
                s.clues_raw.append(t if isinstance(t, str) else "")
                s.clues.append(parse_clue(t, self.max_clue_chars))
            self.round += 1
            if self.round < self.clue_rounds:
                ask = f"{self.pair.question} Give your next clue inside <answer> </answer>."
                return [Observation(f"{self._clue_lines()} {ask}")] * self.players
            return [self._vote_turn(k) for k in range(self.players)]
        for k, (s, t) in enumerate(zip(self.seats, texts, strict=True)):
            s.vote_raw = t if isinstance(t, str) else ""
            s.vote = (
                parse_vote(t, self.players, k)
                if self.vote_by == "seat"
                else parse_clue_vote(
                    t, [o.clues[-1] for o in self.seats], k, self.max_clue_chars, self.vote_by == "shared"
                )
            )
        votes = [sum(s.vote == k for s in self.seats) for k in range(self.players)]
        self.found = votes[self.spy] > 0 and all(
            votes[self.spy] > v for k, v in enumerate(votes) if k != self.spy
        )
        return [None] * self.players

    def _vote_turn(self, seat: int) -> Observation:
        """The vote's user turn: every clue, the seat's number and role, and the question in the
        clue template's words (the tiny base answers "Answer with a number." questions)."""
        ask = Sample("spy-vote", [], VOTE_QUESTIONS[self.vote_by], "", "spy")
        return Observation(
            f"{self._clue_lines()} You are player {seat + 1}, "
            f"{'the spy' if seat == self.spy else 'a civilian'}. "
            f"One of the {self.players} players saw a different image. {render_prompt(ask, self.template)}"
        )

    # ---- outcome ------------------------------------------------------------------------------
    def copied(self, seat: int, r: int) -> bool:
        """Seat's clue of round ``r`` (≥ 1) switched to a clue another seat gave in an earlier round."""
        clue = self.seats[seat].clues[r]
        if r == 0 or clue is None or clue == self.seats[seat].clues[r - 1]:
            return False
        return any(o.clues[q] == clue for k, o in enumerate(self.seats) if k != seat for q in range(r))

    def leaked(self, seat: int) -> bool:
        """The spy named its own (changed) fact in a clue."""
        return seat == self.spy and any(names_fact(c, self.pair.fact_b) for c in self.seats[seat].clues)

    def rewards(self) -> list[RewardBreakdown]:
        """Each seat's reward (seat order); see the module docstring. Before the vote: all zero."""
        out = []
        rounds = max(self.clue_rounds, 1)
        for k, s in enumerate(self.seats):
            civ = k != self.spy
            ok = s.vote is not None
            found = bool(self.found)
            bad = sum(c is None for c in s.clues)
            parts = {
                "outcome": self.w["outcome_weight"] * float(ok and (found if civ else not found)),
                "vote": self.w["vote_weight"] * float(civ and s.vote == self.spy),
                "format": self.w["format_weight"] * float(bad == 0 and ok and self.found is not None),
                "clue": 0.0 - self.w["clue_penalty"] * bad / rounds,
                "copy": 0.0
                - self.w["copy_penalty"] * sum(self.copied(k, r) for r in range(len(s.clues))) / rounds,
                "leak": 0.0 - self.w["leak_penalty"] * float(self.leaked(k)),
            }
            out.append(RewardBreakdown(sum(parts.values()), parts))
        return out

    def transcript(self) -> dict:
        """The game as plain JSON: the difference, the spy's seat, every clue and vote (raw text
        kept for the report, which escapes it), the outcome."""
        return {
            "difference": self.pair.difference,
            "question": self.pair.question,
            "spy": self.spy + 1,
            "players": [
                {
                    "seat": k + 1,
                    "role": self.role(k),
                    "clues": [c if c is not None else NO_CLUE for c in s.clues],
                    "clues_raw": list(s.clues_raw),
                    "vote": None if s.vote is None else s.vote + 1,
                    "vote_raw": s.vote_raw,
                }
                for k, s in enumerate(self.seats)
            ],
            "found": self.found,
        }


def game_kwarg_names() -> list[str]:
    """The keyword arguments :class:`SpyGame` accepts (``env.kwargs``)."""
    return [p for p in inspect.signature(SpyGame.__init__).parameters if p != "self"]
