"""Multi-seat rollouts: a batch of spy games, every seat of every game sampled from one policy.

B samples × G games × N seats are in flight. Each phase (``clue_rounds`` clue rounds, then the
vote) samples ONE assistant turn for every seat at once (one left-padded batch, as
:mod:`vlmrl.rollout.multiturn` does a round of episodes), hands each game its seats' texts
(:meth:`~vlmrl.envs.spy.game.SpyGame.submit`) and appends each seat's next user turn. A seat is
one row of the :class:`~vlmrl.rollout.batch.RolloutBatch`, built the way multi-turn episodes are
(ids concatenated, never re-tokenised; ``completion_mask`` = 1 exactly on the seat's own model
tokens; the other seats' clues reach it only inside its user turns, mask 0).

Role-aware groups (the comparison set of the advantage): the batch has 2 prompts per sample,
the civilians' first turn (image A) and the spy's (image B), and a seat's ``prompt_index`` is
``2·b + [spy]``. So every group estimator (``algo.advantage``) compares a seat with the seats of
the *same role* over the G games played on the same image pair: G·(N−1) civilians, G spies.
(The strict "same role in the same game" set would leave the lone spy a group of one, whose
advantage is 0; pooling the G games of one pair keeps both roles learning. Games on one pair
differ in the spy's seat and in what was sampled.)

A seat whose turn hits a vision token or the episode's token budget stops generating; its later
turns reach the game as empty text (a malformed clue, an invalid vote: a loss), and a vision
token masks its whole row, as in multi-turn episodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vlmrl.data.sample import Sample
from vlmrl.envs.spy import ROLES, SpyGame
from vlmrl.envs.spy.metrics import game_metrics
from vlmrl.rewards.types import RewardBreakdown
from vlmrl.rollout.batch import RolloutBatch, encode_prompts
from vlmrl.rollout.messages import encode_segment, env_segment_text, initial_messages
from vlmrl.rollout.multiturn import (
    MultiTurnSpec,
    _add_env_turn,
    _add_model_turn,
    _assemble,
    _prompt_row,
    _round_inputs,
)
from vlmrl.rollout.trajectory import Trajectory, Turn


@dataclass
class SeatView:
    """One seat of a game, where a trajectory keeps its env: ``reward()`` is that seat's reward."""

    game: SpyGame
    seat: int

    @property
    def role(self) -> str:
        return self.game.role(self.seat)

    def reward(self) -> RewardBreakdown:
        return self.game.rewards()[self.seat]


def is_game(env: Any) -> bool:
    """Whether an environment is a multi-seat game (played by :func:`seat_rollout`)."""
    return isinstance(env, SpyGame)


def labelled_stage(kwargs: dict[str, Any], step: int) -> bool:
    """Iterative-SPO: whether ``step`` falls in a verifiable-reward stage of the cycle
    ``selfplay_steps`` self-play steps, then ``labelled_steps`` labelled ones (``env.kwargs``).

    >>> [labelled_stage({"selfplay_steps": 2, "labelled_steps": 1}, s) for s in range(6)]
    [False, False, True, False, False, True]
    >>> labelled_stage({}, 5)
    False
    """
    sp, lab = int(kwargs.get("selfplay_steps", 0)), int(kwargs.get("labelled_steps", 0))
    return sp > 0 and lab > 0 and step % (sp + lab) >= sp


def role_samples(games: list[SpyGame], samples: list[Sample]) -> list[Sample]:
    """The 2B group prompts as samples (civilians' view, spy's view of each pair), label-free
    (``answer`` is empty), for logs and ``report.html``: ``images`` are both images of the pair
    (A, then B), ``facts`` the role, the difference and the transcripts of the pair's G games."""
    out = []
    g_per = len(games) // max(len(samples), 1)
    for b, s in enumerate(samples):
        head = games[b * g_per]
        pair = [head.pair.image_a, head.pair.image_b]
        facts = {"difference": head.pair.difference, "source": s.id}
        facts["games"] = [g.transcript() for g in games[b * g_per : (b + 1) * g_per]]
        for role in ROLES:
            text = head.first_turn(role).text
            kind = f"spy_{head.pair.kind}"
            out.append(Sample(f"{s.id}-{role}", pair, text, "", kind, "text", {"role": role} | facts))
    return out


@torch.no_grad()
def seat_rollout(
    engine, processor, make_game: Callable[[], SpyGame], samples: list[Sample], spec: MultiTurnSpec
) -> tuple[list[Sample], RolloutBatch, list[Trajectory], list[SpyGame]]:
    """Play ``spec.group_size`` games on each sample; the 2B role prompts (as samples), the batch
    (one row per seat, game-major), the seats' trajectories and the games."""
    g_per = spec.group_size
    games: list[SpyGame] = []
    trajs: list[Trajectory] = []
    for b, s in enumerate(samples):
        for j in range(g_per):
            game = make_game()
            first = game.reset(s, game=j)
            games.append(game)
            for k, obs in enumerate(first):
                t = Trajectory(env=SeatView(game, k), group=2 * b + int(k == game.spy))
                t.messages = initial_messages(game, obs)
                t.turns.append(Turn("user", obs.text, list(obs.images)))
                trajs.append(t)
    heads = [games[b * g_per] for b in range(len(samples))]
    firsts = [h.first_turn(role) for h in heads for role in ROLES]
    enc = encode_prompts(
        processor, [initial_messages(heads[0], o) for o in firsts], [list(o.images) for o in firsts]
    )
    prompts = [_prompt_row(enc, p) for p in range(len(firsts))]
    tok = engine.policy.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    vote_start = [0] * len(trajs)
    saved_cap = engine.max_new_tokens
    try:
        for _phase in range(heads[0].clue_rounds + 1):
            live = [i for i, t in enumerate(trajs) if not t.done]
            texts = [""] * len(trajs)  # a stopped seat's turn: empty text (malformed clue / invalid vote)
            voting = games[0].phase == "vote"
            for i in range(len(trajs)):
                vote_start[i] = len(trajs[i].ids) if voting else vote_start[i]
            if live:
                caps = [
                    min(spec.turn_max_new_tokens, spec.max_total_tokens - len(trajs[i].ids)) for i in live
                ]
                engine.max_new_tokens = max(caps)
                t0 = time.perf_counter()
                out = engine.generate(
                    _round_inputs(prompts, [trajs[i] for i in live], engine.pad_id),
                    1,
                    greedy=spec.greedy or (voting and games[0].greedy_vote),
                )
                dt = time.perf_counter() - t0
                for row, (i, cap) in enumerate(zip(live, caps, strict=True)):
                    t = trajs[i]
                    t.gen_s += dt
                    n = min(int(out.completion_lengths[row]), cap)
                    ids = out.completion_ids[row, :n].tolist()
                    full = n == int(out.completion_lengths[row])
                    text = out.texts[row] if full else tok.decode(ids, skip_special_tokens=True)
                    _add_model_turn(t, ids, out.sampler_logprobs[row, :n].tolist(), text)
                    t.turns.append(Turn("assistant", text, info={"kind": "clue" if not voting else "vote"}))
                    if out.finish_reasons[row] == "invalid_vision_token":
                        t.done, t.finish = True, "invalid_vision_token"
                        continue
                    texts[i] = text
                    if not ids or ids[-1] != im_end:
                        t.finish = "length"
            _submit_all(processor, games, trajs, texts, spec, im_end, len(games[0].seats))
    finally:
        engine.max_new_tokens = saved_cap
    batch = _assemble(enc, trajs, engine.pad_id)
    for i, t in enumerate(trajs):
        view = t.env
        if view.game.mask_spy_clues and view.role == "spy":
            batch.completion_mask[i, : vote_start[i]] = 0.0  # the spy's clue tokens leave the loss
        if view.game.mask_votes:
            batch.completion_mask[i, vote_start[i] :] = 0.0  # every vote leaves the loss
    return role_samples(games, samples), batch, trajs, games


def _submit_all(processor, games, trajs, texts, spec: MultiTurnSpec, im_end: int, n_seats: int) -> None:
    """Give each game its seats' texts; append each live seat's next user turn (or end it)."""
    for gi, game in enumerate(games):
        rows = range(gi * n_seats, (gi + 1) * n_seats)
        nxt = game.submit([texts[i] for i in rows])
        for i, obs in zip(rows, nxt, strict=True):
            t = trajs[i]
            if obs is None:
                t.done = True
                continue
            if t.done:
                continue
            seg_text = env_segment_text(processor, t.messages, obs)
            if not t.ids or t.ids[-1] != im_end:  # a cut turn: the template closes it, not the model
                seg_text = "<|im_end|>" + seg_text
            seg = encode_segment(processor, seg_text, list(obs.images))
            if len(t.ids) + seg["input_ids"].shape[1] + 2 > spec.max_total_tokens:
                t.done, t.budget_hit, t.finish = True, True, "length"  # later turns reach the game empty
                continue
            _add_env_turn(t, processor, obs, seg)


def seat_round_metrics(games: list[SpyGame], trajs: list[Trajectory]) -> dict[str, float]:
    """``game/*`` (outcomes and collusion guards) and the mean reward of each role."""
    out = game_metrics(games)
    for role in ROLES:
        rs = [t.env.reward().total for t in trajs if t.env.role == role]
        if rs:
            out[f"game/reward_{role}"] = sum(rs) / len(rs)
    return out
