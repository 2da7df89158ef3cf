"""``encoder_frozen``: does freezing the vision tower stop RL from learning a visual shift?

GRPO from ``vlmrl-tiny-base`` on where a circle is (``position``), shifted to circles smaller and
fainter than any the base saw (:data:`SHIFT`; pretraining drew radius 9–15 % of the side at full
colour). The baseline freezes the tower (``vision.train: frozen``, so only the language model
learns); the fix trains it too (:data:`ARMS`). Everything else — data, seeds, steps, lr — is shared.

The metric is greedy accuracy on the shift's held-out ``test`` split after the last step (the
trainer's own evaluation, ``eval/accuracy``), measured at the start, every few steps and at the end.
Context (:mod:`vlmrl.experiments.encoder_common`): blind gap, count probe, CKA, weight change.
"""

from __future__ import annotations

from pathlib import Path

from vlmrl.experiments.encoder_common import base_overrides, train_arm
from vlmrl.experiments.registry import ArmResult, Challenge

SHIFT = {"radius": [0.04, 0.07], "contrast": 0.3}
"""``position`` knobs of the shift RL trains and is measured on (blue circles, 4 quadrants)."""

ARMS = {
    "baseline": ["vision.train=frozen", "vision.lr_scale=1"],
    "fix": ["vision.train=full", "vision.lr_scale=1"],
}
"""Each arm's own overrides on top of :func:`common_overrides`."""


def steps(quick: bool) -> int:
    return 2 if quick else 100


def common_overrides(seed: int, quick: bool, run_dir: Path) -> list[str]:
    """The setting both arms share (``--quick``: 2 steps, a tiny eval)."""
    knobs = ", ".join(f"{k}: {v}" for k, v in SHIFT.items())
    return [
        *base_overrides(seed, run_dir),
        "data.task=position",
        f"data.task_kwargs={{{knobs}}}",
        f"data.eval_size={8 if quick else 200}",
        f"train.steps={steps(quick)}",
        "train.lr=5e-5",
        "rollout.max_new_tokens=8",
        f"eval.every={0 if quick else 25}",
        "eval.max_new_tokens=8",
    ]


def run_arm(arm: str, seed: int, quick: bool, workdir: Path) -> ArmResult:
    """Train one arm from the base on the shift; the shift's held-out accuracy over training."""
    run = train_arm(common_overrides(seed, quick, workdir / f"{arm}_s{seed}") + ARMS[arm], seed, quick)
    return ArmResult(run.evals[-1][1], run.evals, run.context)


CHALLENGE = Challenge(
    name="encoder_frozen",
    question="Can RL with the vision tower frozen learn a visual shift that needs new features "
    "(smaller, fainter circles), or must the tower learn too?",
    metric="position held-out greedy accuracy after RL (the shift: circles of radius 4-7 %, contrast 0.3)",
    higher_is_better=True,
    arms={
        "baseline": "vision.train: frozen (only the language model learns)",
        "fix": "vision.train: full, vision.lr_scale: 1 (tower at the policy's lr, 5e-5)",
    },
    run_arm=run_arm,
)
