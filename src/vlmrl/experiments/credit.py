"""``credit``: does a scalar reward pay "right for the wrong reason" like a true success?

GRPO from ``vlmrl-tiny-base`` with the ``look`` template on ``count`` scenes with up to
``TRAIN_DISTRACTORS`` blue / purple distractor circles (the base was pretrained with up to 3: with
more, its ``<look>`` span miscounts the distractors more often while the asked red count mostly
stays right). The reward is ``accuracy + w_p · perception`` (the look span's F1 against the
scene) with a small ``w_p``: the answer is what is paid for, the look only a little. Advantages
are Dr. GRPO's (``r − mean`` in the group, no division by the std), so a reward part's weight is
its weight in the update. Both arms share reward, data, seeds, steps and lr; they differ only in
``algo.credit`` (:mod:`vlmrl.vision.credit`):

* baseline ``scalar``: every token gets the advantage of the total, in which the look counts
  ``w_p``; a right answer after a wrong look is paid almost like a right answer after a right look;
* fix ``segment``: the look tokens get the advantage of the perception reward itself (weight 1),
  the other tokens that of the rest, so a wrong look is blamed in full whatever ``w_p`` is.

Metric: the right-for-the-wrong-reason rate (:mod:`vlmrl.eval.errors`: right answer, look F1 < 1)
on held-out samples of a distribution never trained on — the same colours with up to
``HELD_OUT_DISTRACTORS`` distractors (trained: up to ``TRAIN_DISTRACTORS``) — greedy, measured at
the start, every few steps and at the end. ``extra`` holds the held-out accuracy and the full
error split (perception / reasoning / format shares) at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmrl.experiments.registry import ArmResult, Challenge

ARMS = {"baseline": ["algo.credit=scalar"], "fix": ["algo.credit=segment"]}
"""Each arm's own overrides on top of :func:`common_overrides`."""

TRAIN_DISTRACTORS, HELD_OUT_DISTRACTORS = 6, 9
"""Most distractors in training and held out (max_count 6 + 9 distractors fill 15 of 16 cells)."""
DISTRACTOR_COLORS = ("blue", "purple")
PERCEPTION_WEIGHT = 0.1
"""``w_p``: the look's share of the scalar reward (small: the answer is what a scalar reward pays)."""
LOOK_TOKENS = 40
"""Decoding budget: the gold look of a full grid plus think and answer fits in about 35 tokens."""


def task_kwargs(distractors: int) -> dict[str, Any]:
    """The ``count`` knobs of the training or the held-out distribution."""
    return {"max_count": 6, "distractors": distractors, "distractor_colors": list(DISTRACTOR_COLORS)}


def common_overrides(seed: int, quick: bool, run_dir: Path) -> list[str]:
    """The setting both arms share (``--quick``: 2 steps, a tiny eval)."""
    return [
        "model.path=vlmrl-tiny-base",
        "data.task=count",
        f"data.task_kwargs={json.dumps(task_kwargs(TRAIN_DISTRACTORS))}",  # JSON is YAML
        "data.template=look",
        f"data.eval_size={4 if quick else 32}",
        f"data.seed={seed}",
        f"train.seed={seed}",
        f"train.steps={2 if quick else 20}",
        f"train.batch_prompts={2 if quick else 8}",
        "train.micro_batch=64",
        "train.lr=2e-4",
        "train.grad_clip=1.0",
        "train.save_every=0",
        "rollout.n=8",
        "rollout.temperature=1.0",
        f"rollout.max_new_tokens={LOOK_TOKENS}",
        "algo.kl_coef=0",
        "algo.advantage=drgrpo",
        "eval.every=0",
        "eval.drift=false",
        f"eval.max_new_tokens={LOOK_TOKENS}",
        f"reward.weights={{accuracy: 1.0, perception: {PERCEPTION_WEIGHT}}}",
        f"log.run_dir={run_dir}",
    ]


def held_out(seed: int, quick: bool) -> list:
    """The held-out samples (``test`` split of the held-out distribution), fixed per seed."""
    from vlmrl.data.tasks import generate

    return generate(
        "count", 4 if quick else 100, seed=seed, split="test", **task_kwargs(HELD_OUT_DISTRACTORS)
    )


def probe_every(quick: bool) -> int:
    return 2 if quick else 10


def measure(policy, samples: list) -> dict[str, Any]:
    """Greedy held-out accuracy and the error split (:func:`vlmrl.eval.errors.error_split`)."""
    from vlmrl.eval.accuracy import evaluate
    from vlmrl.eval.errors import error_split
    from vlmrl.rewards import get_reward

    res = evaluate(policy, samples, "look", get_reward("accuracy"), LOOK_TOKENS, 50, return_outputs=True)
    split = error_split([o["completion"] for o in res["outputs"]], samples)
    return {"accuracy": res["accuracy"], **split}


def run_arm(arm: str, seed: int, quick: bool, workdir: Path) -> ArmResult:
    """Train one arm from the base; the held-out right-for-the-wrong-reason rate along the way."""
    import torch

    from vlmrl.config import load_config
    from vlmrl.train.grpo import GRPOTrainer

    torch.manual_seed(seed)
    cfg = load_config(None, common_overrides(seed, quick, workdir / f"{arm}_s{seed}") + ARMS[arm])
    trainer = GRPOTrainer(cfg)
    samples = held_out(seed, quick)

    def rate() -> float:
        return measure(trainer.policy, samples)["rates"]["right_wrong_look"]

    curve = [(0, rate())]

    def on_step(step: int, _metrics: dict) -> None:
        if step % probe_every(quick) == 0 and step != cfg.train.steps:
            curve.append((step, rate()))

    trainer.train(on_step=on_step)
    final = measure(trainer.policy, samples)
    curve.append((cfg.train.steps, final["rates"]["right_wrong_look"]))
    extra = {"held_out_accuracy": final["accuracy"], "rwl_of_right": final["right_wrong_look_of_right"]}
    extra |= {f"wrong_{k}": v for k, v in final["wrong"].items()}
    extra |= {f"rate_{k}": v for k, v in final["rates"].items() if k != "right_wrong_look"}
    return ArmResult(float(final["rates"]["right_wrong_look"]), curve, extra)


CHALLENGE = Challenge(
    name="credit",
    question="With a scalar reward, is a right answer after a wrong look paid like a true success, "
    "so that RL leaves the model right for the wrong reason; does segment credit stop it?",
    metric="right-for-the-wrong-reason rate (right answer, look F1 < 1) on held-out count scenes "
    f"with up to {HELD_OUT_DISTRACTORS} blue/purple distractors (trained: up to {TRAIN_DISTRACTORS})",
    higher_is_better=False,
    arms={
        "baseline": f"algo.credit: scalar (reward accuracy + {PERCEPTION_WEIGHT} · perception, Dr. GRPO)",
        "fix": "algo.credit: segment (same reward; look tokens get the perception advantage)",
    },
    run_arm=run_arm,
    side_metrics=("held_out_accuracy",),
)
