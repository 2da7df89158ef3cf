"""A label-free warm-up of the spy game's vote turn (the ``selfplay`` experiment's first stage).

The tiny base has never seen a text-only vote turn and closes almost none of its votes, so in
self-play every seat scores 0 and no group has a spread to learn from. The warm-up plays greedy
games on unlabelled pairs, replaces each seat's vote with a *teacher* vote and takes ``steps``
steps of supervised NLL on the vote tokens (with ``keep_clues``, on the model's own greedy clues
too: self-distillation, which anchors the answer format). Two teachers, neither reads a label nor
the pair's facts, only the clues the seats themselves wrote:

* ``random``: a uniformly random valid vote (format only: no hint of who the spy is);
* ``odd``: the game's rule applied to the seats' clues: with player-number or ``clue`` votes, a
  vote for another player whose clue is unlike every other clue (the odd one out); with
  ``shared`` votes, the seat's own clue (the civilians share what I saw). Else a random valid
  vote. It teaches the vote to read the clues; whether the clues are right is left to self-play.

A seat with no valid vote at all (e.g. ``vote_by: clue`` and the other clues all alike) keeps its
vote out of the loss.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import torch

from vlmrl.data.tasks import generate, get_task
from vlmrl.envs.spy import SpyGame, parse_clue_vote
from vlmrl.rollout.batch import completion_logprobs, training_inputs
from vlmrl.rollout.hf_engine import HFEngine
from vlmrl.rollout.multiturn import MultiTurnSpec, trace_batch
from vlmrl.rollout.seats import seat_rollout

TEACHERS = ("random", "odd")


def last_turn_only(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` ``[N, C]`` kept on each row's last run of ones only (the vote turn).

    >>> last_turn_only(torch.tensor([[1.0, 1, 0, 1, 1, 0]])).tolist()
    [[0.0, 0.0, 0.0, 1.0, 1.0, 0.0]]
    """
    out = torch.zeros_like(mask)
    for i in range(mask.shape[0]):
        ones = mask[i].nonzero().flatten().tolist()
        if not ones:
            continue
        j = len(ones) - 1
        while j > 0 and ones[j - 1] == ones[j] - 1:
            j -= 1
        out[i, ones[j:]] = mask[i, ones[j:]]
    return out


def teacher_vote(game: SpyGame, seat: int, teacher: str, rng: random.Random) -> str | None:
    """The vote text the teacher gives ``seat`` of a played ``game`` (its last-round clues), or
    ``None`` when the seat has no valid vote.

    >>> from vlmrl.data.tasks import generate
    >>> g = SpyGame(players=3, clue_rounds=1, vote_by="clue")
    >>> _ = g.reset(generate("count", 1)[0], spy=1)
    >>> _ = g.submit(["<answer>3</answer>", "<answer>4</answer>", "<answer>3</answer>"])
    >>> r = random.Random(0)
    >>> teacher_vote(g, 0, "odd", r), teacher_vote(g, 1, "odd", r)
    ('<answer>4</answer>', None)
    >>> teacher_vote(g, 2, "random", r) in ("<answer>4</answer>", "<answer>3</answer>")
    True
    """
    clues = [s.clues[-1] if s.clues else None for s in game.seats]
    others = [k for k in range(game.players) if k != seat]
    shared = game.vote_by == "shared"

    def accuses(value: str) -> int | None:  # the game's own rule for a vote in the clues' form
        return parse_clue_vote(f"<answer>{value}</answer>", clues, seat, game.max_clue_chars, shared)

    if shared:  # name a clue that exactly one other player did not give
        values = sorted({c for c in clues if c is not None})
        valid_values = [v for v in values if accuses(v) is not None]
        if not valid_values:
            return None
        own = clues[seat]  # the rule: the civilians share what I saw
        value = own if teacher == "odd" and own in valid_values else rng.choice(valid_values)
        return f"<answer>{value}</answer>"
    if game.vote_by == "clue":
        valid = [k for k in others if clues[k] is not None and accuses(clues[k]) == k]
    else:
        valid = others
    if not valid:
        return None
    odd = [k for k in valid if clues[k] is not None and sum(c == clues[k] for c in clues) == 1]
    k = rng.choice(odd if teacher == "odd" and odd else valid)
    return f"<answer>{clues[k] if game.vote_by == 'clue' else k + 1}</answer>"


def vote_warmup(
    policy,
    task: str,
    knobs: dict,
    game_kwargs: dict,
    steps: int,
    seed: int,
    out: Path | None,
    pairs: int = 2,
    lr: float = 1e-4,
    keep_clues: bool = False,
    teacher: str = "random",
    games_per_pair: int = 2,
    history: list[float] | None = None,
) -> Path | None:
    """Warm ``policy`` up on teacher votes (see the module docstring); save it to ``out`` if given.

    ``keep_clues``: the clue turns stay in the loss beside the vote, anchoring the answer the vote
    would otherwise overwrite. The games are then played by a frozen copy of the starting model, so
    the clues are its own greedy answers (self-distillation toward a fixed target, no label; the
    drifting model's clues would let the anchor drift with it)."""
    if teacher not in TEACHERS:
        raise ValueError(f"vote warm-up: teacher must be one of {list(TEACHERS)}, got {teacher!r}")
    rng = random.Random(f"vlmrl:spy:warmup:{seed}")
    gen = get_task(task, **knobs)
    player = copy.deepcopy(policy) if keep_clues else policy
    engine = HFEngine(player, max_new_tokens=10)
    spec = MultiTurnSpec(
        group_size=games_per_pair, max_turns=2, turn_max_new_tokens=10, max_total_tokens=160, greedy=True
    )
    opt = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=lr)
    for step in range(steps):
        samples = generate(gen, pairs, seed=seed, split="warmup", start=step * pairs)
        policy.model.eval()
        _, _, trajs, _ = seat_rollout(engine, player.processor, lambda: SpyGame(**game_kwargs), samples, spec)
        traces, keep = [], []
        for t in trajs:
            vote = teacher_vote(t.env.game, t.env.seat, teacher, rng)
            turns = [{"role": u.role, "text": u.text, "images": list(u.images)} for u in t.turns]
            turns[-1] = {"role": "assistant", "text": vote or "<answer></answer>", "images": []}
            traces.append(turns)
            keep.append(vote is not None)
        batch = trace_batch(policy, [""] * len(traces), traces)
        vote_turn = last_turn_only(batch.completion_mask)
        votes = vote_turn * torch.tensor(keep, dtype=torch.float32)[:, None]
        mask = batch.completion_mask - vote_turn + votes if keep_clues else votes
        policy.model.train()
        inputs, _ = training_inputs(batch, list(range(batch.size)))
        logp, _ = completion_logprobs(policy.model, inputs, batch.completion_ids)
        loss = -(logp * mask).sum() / mask.sum().clamp(min=1)
        if history is not None:
            history.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
        opt.step()
    policy.model.eval()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        policy.model.save_pretrained(out)
        policy.processor.save_pretrained(out)
    return out
