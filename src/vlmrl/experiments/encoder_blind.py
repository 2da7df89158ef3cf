"""``encoder_blind``: does an aggressive vision-encoder update during RL blind the model?

GRPO from ``vlmrl-tiny-base`` on POPE with ``yes_ratio: 0.9``: "yes" is right 90 % of the time,
so the reward can be earned without looking at the image. The baseline trains the vision tower
at 10× the policy's learning rate (``vision.train: full``, ``vision.lr_scale: 10``); the fix
freezes it (``vision.train: frozen``). Everything else — data, seeds, steps, lr — is shared.

The metric is a perception probe the RL never trains: greedy accuracy on the base's
in-distribution ``count`` held-out split (``vlmrl.eval.base_card.evaluate_entry``; the base
scores 1.000 there), measured at the start, every few steps and after the last step.
"""

from __future__ import annotations

from pathlib import Path

from vlmrl.experiments.encoder_common import PROBE, base_overrides, train_arm
from vlmrl.experiments.registry import ArmResult, Challenge

ARMS = {
    "baseline": ["vision.train=full", "vision.lr_scale=10"],
    "fix": ["vision.train=frozen", "vision.lr_scale=1"],
}
"""Each arm's own overrides on top of :func:`common_overrides`."""


def common_overrides(seed: int, quick: bool, run_dir: Path) -> list[str]:
    """The setting both arms share (``--quick``: 2 steps, a tiny eval)."""
    return [
        *base_overrides(seed, run_dir),
        "data.task=pope",
        "data.task_kwargs={yes_ratio: 0.9}",
        f"data.eval_size={8 if quick else 64}",
        f"train.steps={2 if quick else 20}",
        "train.lr=1e-4",
        "rollout.max_new_tokens=4",
        "eval.every=0",
        "eval.max_new_tokens=4",
    ]


def probe_every(quick: bool) -> int:
    return 1 if quick else 5


def run_arm(arm: str, seed: int, quick: bool, workdir: Path) -> ArmResult:
    """Train one arm from the base and probe perception (:data:`PROBE`) along the way."""
    overrides = common_overrides(seed, quick, workdir / f"{arm}_s{seed}") + ARMS[arm]
    run = train_arm(overrides, seed, quick, probe_every(quick))
    return ArmResult(run.probes[-1][1], run.probes, run.context)


CHALLENGE = Challenge(
    name="encoder_blind",
    question="Does RL that trains the vision tower at a large rate, on a reward that does not need "
    "the image, degrade what the model sees?",
    metric=f"{PROBE} held-out greedy accuracy after RL (the tiny base's in-distribution {PROBE} split)",
    higher_is_better=True,
    arms={
        "baseline": "vision.train: full, vision.lr_scale: 10 (tower lr 1e-3; policy lr 1e-4)",
        "fix": "vision.train: frozen",
    },
    run_arm=run_arm,
)
