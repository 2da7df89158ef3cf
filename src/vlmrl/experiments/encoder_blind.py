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

from vlmrl.experiments.registry import ArmResult, Challenge

ARMS = {
    "baseline": ["vision.train=full", "vision.lr_scale=10"],
    "fix": ["vision.train=frozen", "vision.lr_scale=1"],
}
"""Each arm's own overrides on top of :func:`common_overrides`."""

PROBE = "count"
"""The tiny-base card entry the probe evaluates (in-distribution for the base, not trained by RL)."""


def common_overrides(seed: int, quick: bool, run_dir: Path) -> list[str]:
    """The setting both arms share (``--quick``: 2 steps, a tiny eval)."""
    return [
        "model.path=vlmrl-tiny-base",
        "data.task=pope",
        "data.task_kwargs={yes_ratio: 0.9}",
        "data.template=answer",
        f"data.eval_size={8 if quick else 64}",
        f"data.seed={seed}",
        f"train.seed={seed}",
        f"train.steps={2 if quick else 20}",
        "train.batch_prompts=8",
        "train.micro_batch=64",
        "train.lr=1e-4",
        "train.grad_clip=1.0",
        "train.save_every=0",
        "rollout.n=8",
        "rollout.temperature=1.0",
        "rollout.max_new_tokens=4",
        "algo.kl_coef=0",
        "eval.every=0",
        "eval.max_new_tokens=4",
        f"log.run_dir={run_dir}",
    ]


def probe_size(quick: bool) -> int:
    return 8 if quick else 100


def probe_every(quick: bool) -> int:
    return 1 if quick else 5


def run_arm(arm: str, seed: int, quick: bool, workdir: Path) -> ArmResult:
    """Train one arm from the base and probe perception along the way."""
    import torch

    from vlmrl.config import load_config
    from vlmrl.eval.base_card import evaluate_entry
    from vlmrl.models.base_mix import find_entry
    from vlmrl.train.grpo import GRPOTrainer

    torch.manual_seed(seed)
    cfg = load_config(None, common_overrides(seed, quick, workdir / f"{arm}_s{seed}") + ARMS[arm])
    trainer = GRPOTrainer(cfg)
    entry, n = find_entry(PROBE), probe_size(quick)

    def probe() -> float:
        return evaluate_entry(trainer.policy, entry, n)["acc"]

    curve = [(0, probe())]

    def on_step(step: int, _metrics: dict) -> None:
        if step % probe_every(quick) == 0 and step != cfg.train.steps:
            curve.append((step, probe()))

    history = trainer.train(on_step=on_step)
    final = evaluate_entry(trainer.policy, entry, n)
    curve.append((cfg.train.steps, final["acc"]))
    last = history[-1]
    extra = {"count_blind_acc": final["blind_acc"]}
    for key in ("eval/accuracy", "vision/cos_sim"):
        if key in last:
            extra[key] = float(last[key])
    return ArmResult(float(final["acc"]), curve, extra)


CHALLENGE = Challenge(
    name="encoder_blind",
    question="Does RL that trains the vision tower at a large rate, on a reward that does not need "
    "the image, degrade what the model sees?",
    metric="count held-out greedy accuracy after RL (the tiny base's in-distribution count split)",
    higher_is_better=True,
    arms={
        "baseline": "vision.train: full, vision.lr_scale: 10 (tower lr 1e-3; policy lr 1e-4)",
        "fix": "vision.train: frozen",
    },
    run_arm=run_arm,
)
