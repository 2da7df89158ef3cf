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

The game's setting, and why: 3 players, one clue round then the vote; roles are told only at the
vote (``reveal_role: false``) so a clue is the base's own answer format for its image (the clue
question is the probe's question); the spy's clue tokens are left out of the loss
(``mask_spy_clues``: a spy that does not know its role when it describes would otherwise be paid
for describing its image wrongly); no leak penalty for the same reason. Civilians gain when the
spy is found, the spy when it hides; a civilian's vote for the spy adds 0.5. The format reward is
raised to 1.0: the base has never seen a vote turn (text only, no image) and closes fewer than 5 %
of its votes; at the default 0.1 nearly every seat scored 0 and no group had a spread to learn
from (a probe of 10 steps: invalid-vote rate 1.0, reward std 0). The lr (2e-4, both trained arms)
lets 24 steps move the policy.

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
    "mask_spy_clues": True,
    "leak_penalty": 0.0,
    "format_weight": 1.0,
}
"""``env.kwargs`` of the self-play arm (see the module docstring)."""

GAMES_PER_PAIR, PAIRS_PER_STEP = 4, 2
"""Per step: 2 image pairs × 4 games × 3 seats = 24 rollouts (the labelled arm: 2 prompts × 12)."""


def steps(quick: bool) -> int:
    return 1 if quick else 24


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
        "train.lr=2e-4",
        "train.grad_clip=1.0",
        "train.save_every=0",
        "rollout.temperature=1.0",
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
    return final, [(0, start), (cfg.train.steps, final)], history[-1] if history else {}


def run_arm(arm: str, seed: int, quick: bool, workdir: Path) -> ArmResult:
    """``baseline``: probe the base untrained; ``fix``: self-play, then (same seed) labelled RL."""
    if arm == "baseline":
        from vlmrl.models import load_policy

        acc = probe(load_policy("vlmrl-tiny-base"), seed, quick)
        return ArmResult(acc, [(0, acc), (steps(quick), acc)])
    base = common_overrides(seed, quick, workdir / f"selfplay_s{seed}")
    after, curve, last = _train(base + SELFPLAY, seed, quick)
    lab = common_overrides(seed, quick, workdir / f"labelled_s{seed}") + LABELLED
    labelled_after, _, _ = _train(lab, seed, quick)
    extra = {"labelled_rl_after": labelled_after}
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
        "fix": "GRPO on self-play games only (3 players, 1 clue round, vote; outcome rewards, no label); "
        "labelled RL on the same distribution is reported beside it",
    },
    run_arm=run_arm,
    write_extra=write_selfplay_json,
)
