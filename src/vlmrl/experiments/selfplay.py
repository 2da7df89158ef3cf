"""``selfplay``: does "who is the spy" self-play, with no labels, improve what the model sees?

The domain is a held-out shift of the tiny base with headroom: counting red circles among green or
yellow distractors (``count_new_distractors``; the base was pretrained with blue/purple ones and
scores about 0.53). Games are played on pairs drawn from that distribution (train split, unlabelled):
the spy's image has one red circle more or fewer (:mod:`vlmrl.envs.spy`).

Three measurements per seed, on the same held-out probe (greedy accuracy on unseen test-split
images of that distribution, 100 per seed, :func:`probe`):

* ``baseline``: the same compute spent on no training: the base as it is (``before``);
* ``fix``: GRPO on self-play games only (``after``), no label anywhere in training;
* labelled RL: GRPO with the exact-answer reward on the same distribution, the same steps and the
  same rollouts per step (``labelled_rl_after``; the ceiling the game is compared against).

The fix arm has two label-free stages (see docs/challenges/selfplay.md for what was tried):

1. *Vote warm-up* (:data:`WARMUP`, :func:`vlmrl.experiments.selfplay_warmup.vote_warmup`): the
   base has never seen a text-only vote turn and closes almost none of its votes, so no game ends
   with the spy found. 150 steps of NLL on games played by a frozen copy of the base, where each
   seat's vote is replaced by the game's rule applied to the seats' own clues (name your own clue
   as the one the civilians share) and the seat's own greedy clue stays in the loss as an anchor.
   No label and no fact of the pair is read.
2. *Self-play* (:data:`GAME`): 3 players, one clue round then the vote. Roles are told only at the
   vote, so a clue is the probe's own question and answer form. ``vote_by: shared``: the vote names
   the clue the civilians share, in that same answer form; it accuses the one other player who
   said something else (a player number would be a count trained in a text-only turn, which
   drifted the count answers). Votes are cast greedily and kept out of the loss, and the spy's clue
   is masked too (it does not know its role when it describes), so the only tokens trained are the
   civilians' clues, and their reward is the outcome alone: the spy found (format, vote and leak
   weights 0). Rollouts at temperature 1.5: at 1.0 the base answers almost deterministically
   (two civilians agree 96 % of the time) and most groups have no reward spread.

Both trained arms: 30 steps at lr 1e-4, temperature 1.5; the labelled arm has the same steps,
rollouts per step and sampling.

Results: ``challenges.json`` (``baseline`` = before, ``fix`` = after), ``challenge_selfplay.md`` /
``.png`` and ``selfplay.json`` = ``{"seeds", "before", "after", "labelled_rl_after"}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlmrl.experiments.registry import ArmResult, Challenge

PROBE = "count_new_distractors"
"""The tiny-base held-out entry the games are drawn from and the probe measures."""

GAME = {
    "players": 3,
    "clue_rounds": 1,
    "reveal_role": False,
    "vote_by": "shared",
    "greedy_vote": True,
    "mask_votes": True,
    "mask_spy_clues": True,
    "format_weight": 0.0,
    "vote_weight": 0.0,
    "leak_penalty": 0.0,
}
"""``env.kwargs`` of the self-play arm (see the module docstring)."""

WARMUP = {"steps": 150, "lr": 3e-4, "pairs": 4, "games_per_pair": 1, "teacher": "odd", "keep_clues": True}
"""The label-free vote warm-up before self-play (:func:`vlmrl.experiments.selfplay_warmup.vote_warmup`)."""

GAMES_PER_PAIR, PAIRS_PER_STEP = 4, 2
"""Per step: 2 image pairs × 4 games × 3 seats = 24 rollouts (the labelled arm: 2 prompts × 12)."""


def steps(quick: bool) -> int:
    return 1 if quick else 30


def probe_size(quick: bool) -> int:
    return 8 if quick else 100


def probe(policy, seed: int, quick: bool) -> float:
    """Greedy accuracy on ``probe_size`` unseen test-split images of :data:`PROBE` (seeded)."""
    from vlmrl.eval.accuracy import evaluate
    from vlmrl.eval.base_card import entry_samples
    from vlmrl.models.base_mix import find_entry
    from vlmrl.rewards import get_reward

    e = find_entry(PROBE)
    samples = entry_samples(e, probe_size(quick), seed)
    return float(
        evaluate(policy, samples, e.templates[0], get_reward("accuracy"), e.max_new_tokens, 64)["accuracy"]
    )


def _knobs() -> str:
    from vlmrl.models.base_mix import find_entry

    k = find_entry(PROBE).knobs
    return "{" + ", ".join(f"{a}: {list(v) if isinstance(v, tuple) else v}" for a, v in k.items()) + "}"


def common_overrides(seed: int, quick: bool, run_dir: Path) -> list[str]:
    """The setting every trained arm shares."""
    return [
        "model.path=vlmrl-tiny-base",
        "data.task=count",
        f"data.task_kwargs={_knobs()}",
        "data.template=answer",
        "data.eval_size=0",
        f"data.seed={seed}",
        f"train.seed={seed}",
        f"train.steps={steps(quick)}",
        f"train.batch_prompts={PAIRS_PER_STEP}",
        "train.micro_batch=32",
        "train.lr=1e-4",
        "train.grad_clip=1.0",
        "train.save_every=0",
        "rollout.temperature=1.5",
        "rollout.max_new_tokens=6",
        "algo.kl_coef=0",
        "eval.every=0",
        f"log.run_dir={run_dir}",
        "log.groups_per_step=4",
    ]


SELFPLAY = [
    f"rollout.n={GAMES_PER_PAIR}",
    "env.name=spy",
    "env.kwargs={"
    + ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in GAME.items())
    + "}",
    "env.turn_max_new_tokens=10",
    "env.max_total_tokens=160",
]
LABELLED = [f"rollout.n={GAMES_PER_PAIR * GAME['players']}", "reward.weights={accuracy: 1.0}"]


def warm_up(seed: int, quick: bool, out: Path) -> Path:
    """The base after the label-free vote warm-up (:data:`WARMUP`), saved to ``out``."""
    import torch

    from vlmrl.experiments.selfplay_warmup import vote_warmup
    from vlmrl.models import load_policy
    from vlmrl.models.base_mix import find_entry

    torch.manual_seed(seed)
    policy = load_policy("vlmrl-tiny-base")
    kw = {k: v for k, v in WARMUP.items() if k != "steps"}
    steps = 1 if quick else int(WARMUP["steps"])
    vote_warmup(policy, "count", dict(find_entry(PROBE).knobs), dict(GAME), steps, seed, out, **kw)
    return out


def _train(overrides: list[str], seed: int, quick: bool) -> tuple[float, list[tuple[int, float]], dict]:
    """Train from the base; the probe at the start and at the end; the last step's metrics."""
    import torch

    from vlmrl.config import load_config
    from vlmrl.train.grpo import GRPOTrainer

    torch.manual_seed(seed)
    cfg = load_config(None, overrides)
    trainer = GRPOTrainer(cfg)
    start = probe(trainer.policy, seed, quick)
    history = trainer.train()
    final = probe(trainer.policy, seed, quick)
    last = dict(history[-1]) if history else {}
    last["probe_at_start"] = start
    return final, [(0, start), (cfg.train.steps, final)], last


def run_arm(arm: str, seed: int, quick: bool, workdir: Path) -> ArmResult:
    """``baseline``: probe the base untrained; ``fix``: self-play, then (same seed) labelled RL."""
    if arm == "baseline":
        from vlmrl.models import load_policy

        acc = probe(load_policy("vlmrl-tiny-base"), seed, quick)
        return ArmResult(acc, [(0, acc), (steps(quick), acc)])
    warm = warm_up(seed, quick, workdir / f"warmup_s{seed}")
    base = [*common_overrides(seed, quick, workdir / f"selfplay_s{seed}"), f"model.path={warm}"]
    after, curve, last = _train(base + SELFPLAY, seed, quick)
    lab = common_overrides(seed, quick, workdir / f"labelled_s{seed}") + LABELLED
    labelled_after, _, _ = _train(lab, seed, quick)
    extra = {"labelled_rl_after": labelled_after, "after_warmup": last["probe_at_start"]}
    for key in ("game/spy_found_rate", "game/invalid_vote_rate", "game/civilian_vote_acc", "game/clue_len",
                "game/clue_copy_rate", "game/clue_malformed_rate", "game/civilian_agree_rate"):  # fmt: skip
        if key in last:
            extra[key] = float(last[key])
    return ArmResult(after, curve, extra)


def write_selfplay_json(results: dict[str, list[ArmResult]], seeds: list[int], out: Path) -> None:
    """``selfplay.json``: exactly ``{"seeds", "before", "after", "labelled_rl_after"}``, per seed."""
    data = {
        "seeds": list(seeds),
        "before": [r.value for r in results["baseline"]],
        "after": [r.value for r in results["fix"]],
        "labelled_rl_after": [r.extra["labelled_rl_after"] for r in results["fix"]],
    }
    (Path(out) / "selfplay.json").write_text(json.dumps(data, indent=2) + "\n")


CHALLENGE = Challenge(
    name="selfplay",
    question="Does visual self-play (who is the spy, image pairs differing in one count), with no "
    "labels, raise held-out perception accuracy above the untrained model?",
    metric=f"{PROBE} held-out greedy accuracy (count red circles among green/yellow distractors, "
    "unseen test-split images)",
    higher_is_better=True,
    arms={
        "baseline": "no training (the same compute spent on nothing): the tiny base as it is",
        "fix": "a label-free vote warm-up, then GRPO on self-play games only (3 players, 1 clue round, "
        "vote; outcome rewards, no label); labelled RL on the same distribution is reported beside it",
    },
    run_arm=run_arm,
    write_extra=write_selfplay_json,
)
