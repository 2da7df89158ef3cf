"""A label-free format warm-up for the spy game's vote turn (the ``selfplay`` experiment's option).

The tiny base has never seen a text-only vote turn and closes almost none of its votes, so in
self-play every seat scores 0 and no group has a spread to learn from. The warm-up plays greedy
games on unlabelled pairs, replaces each seat's vote with a *uniformly random* valid vote (another
player's number: no label, no hint of who the spy is) and takes ``steps`` steps of supervised
NLL on the vote tokens only (the clue turns stay out of the loss). It teaches the vote's format,
nothing about the images.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from vlmrl.data.tasks import generate, get_task
from vlmrl.envs.spy import SpyGame
from vlmrl.rollout.batch import completion_logprobs, training_inputs
from vlmrl.rollout.hf_engine import HFEngine
from vlmrl.rollout.multiturn import MultiTurnSpec, trace_batch
from vlmrl.rollout.seats import seat_rollout


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


def vote_warmup(
    policy,
    task: str,
    knobs: dict,
    game_kwargs: dict,
    steps: int,
    seed: int,
    out: Path,
    pairs: int = 2,
    lr: float = 1e-4,
    keep_clues: bool = False,
) -> Path:
    """Warm ``policy`` up on random valid votes (see the module docstring); save it to ``out``.

    ``keep_clues``: the clue turns (the model's own greedy clues: self-distillation, no label) stay
    in the loss beside the vote, anchoring the answer format the vote would otherwise overwrite."""
    rng = random.Random(f"vlmrl:spy:warmup:{seed}")
    gen = get_task(task, **knobs)
    engine = HFEngine(policy, max_new_tokens=10)
    spec = MultiTurnSpec(group_size=2, max_turns=2, turn_max_new_tokens=10, max_total_tokens=160, greedy=True)
    opt = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=lr)
    for step in range(steps):
        samples = generate(gen, pairs, seed=seed, split="warmup", start=step * pairs)
        policy.model.eval()
        _, _, trajs, _ = seat_rollout(engine, policy.processor, lambda: SpyGame(**game_kwargs), samples, spec)
        traces = []
        for t in trajs:
            seat, players = t.env.seat, t.env.game.players
            vote = rng.choice([k for k in range(players) if k != seat]) + 1
            turns = [{"role": u.role, "text": u.text, "images": list(u.images)} for u in t.turns]
            turns[-1] = {"role": "assistant", "text": f"<answer>{vote}</answer>", "images": []}
            traces.append(turns)
        batch = trace_batch(policy, [""] * len(traces), traces)
        mask = batch.completion_mask if keep_clues else last_turn_only(batch.completion_mask)
        policy.model.train()
        inputs, _ = training_inputs(batch, list(range(batch.size)))
        logp, _ = completion_logprobs(policy.model, inputs, batch.completion_ids)
        loss = -(logp * mask).sum() / mask.sum().clamp(min=1)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
        opt.step()
    policy.model.eval()
    out.mkdir(parents=True, exist_ok=True)
    policy.model.save_pretrained(out)
    policy.processor.save_pretrained(out)
    return out
