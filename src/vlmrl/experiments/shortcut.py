"""``shortcut``: when the question text predicts the answer, does RL learn the prior instead of looking?

The task is ``shortcut`` (``vlmrl.data.tasks.shortcut``, VQA-CP's construction): the base's
counting scenes among distractor colours it never saw in pretraining (``count_new_distractors``,
which the tiny base gets about half right), asked "How many red circles are there?". In the
training set the answer is :data:`PRIOR` :data:`TRAIN_BIAS` of the time, so the question alone
predicts it; in the de-biased held-out set (``bias: null``, ``test`` split, never trained on) the
answers are uniform over 1-6, so answering :data:`PRIOR` scores 1/6 and only looking pays.

GRPO from ``vlmrl-tiny-base``, reward ``accuracy`` (+ format, the default weights):
- ``baseline``: plain GRPO on the biased set;
- ``fix``: the counterfactual reward, ``reward.counterfactual: shuffled``
  (``vlmrl.eval.counterfactual``): a right answer the model also gives with another prompt's
  image earns no accuracy. (``blank`` withholds nothing here: the tiny base answers "1" to a
  blank image whatever the question, so its blank answer is almost never the prior's "4".)

The metric is greedy accuracy on the de-biased held-out set after RL (the image is the only
honest source of the answer there): the run's own evaluations use that set
(``data.eval_task_kwargs``), at the start, every :func:`eval_every` steps and at the end, with
the blind conditions, so the training-time blind-gap monitor (``eval.blind_gap_drop``) watches
it too. ``ArmResult.extra`` holds the de-biased blind accuracy and gap, the step at which the
monitor first fired (−1: never), the training distribution's held-out accuracy, best blind
accuracy (blank or shuffled image) and blind gap, and the de-biased set's prior rate. The de-biased
set's *prior rate* (share of answers equal to :data:`PRIOR`) is the shortcut itself: 1/6 for a
model that counts, 1 for one that answers from the question.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmrl.experiments.registry import ArmResult, Challenge

TASK = "shortcut"
BASE_KWARGS = "{max_count: 6, distractors: 3, distractor_colors: [green, yellow]}"
"""The counting scenes (the tiny base's held-out ``count_new_distractors``)."""
TRAIN_BIAS = 0.9
"""Share of training prompts whose answer is :data:`PRIOR`."""
PRIOR = "4"
"""The answer the training set favours (not ``1``, the tiny base's answer to a blank image)."""

MONITOR_DROP = 0.15
"""``eval.blind_gap_drop``: the fall of the de-biased blind gap that raises the monitor's alert."""

ARMS: dict[str, list[str]] = {
    "baseline": [],
    "fix": ["reward.counterfactual=shuffled"],
}
"""Each arm's own overrides on top of :func:`common_overrides`."""


def task_kwargs(bias: float | None) -> str:
    """``data.task_kwargs`` as a dotted-override value (``bias=None``: the de-biased set)."""
    b = "null" if bias is None else f"{bias:g}"
    return f"{{base: count, bias: {b}, prior: '{PRIOR}', base_kwargs: {BASE_KWARGS}}}"


def steps(quick: bool) -> int:
    return 2 if quick else 40


def eval_every(quick: bool) -> int:
    """``eval.every`` (``--quick``: 0, only at the start and the end)."""
    return 0 if quick else 20


def common_overrides(seed: int, quick: bool, run_dir: Path) -> list[str]:
    """The setting both arms share (``--quick``: 2 steps, a tiny eval)."""
    return [
        "model.path=vlmrl-tiny-base",
        f"data.task={TASK}",
        f"data.task_kwargs={task_kwargs(TRAIN_BIAS)}",
        f"data.eval_task_kwargs={task_kwargs(None)}",
        "data.template=answer",
        f"data.eval_size={held_out_size(quick)}",
        f"data.seed={seed}",
        f"train.seed={seed}",
        f"train.steps={steps(quick)}",
        "train.batch_prompts=8",
        "train.micro_batch=64",
        "train.lr=2e-4",
        f"train.warmup_steps={0 if quick else 10}",
        "train.grad_clip=1.0",
        "train.save_every=0",
        "rollout.n=8",
        "rollout.temperature=1.0",
        "rollout.max_new_tokens=6",
        "algo.kl_coef=0",
        f"eval.every={eval_every(quick)}",
        "eval.max_new_tokens=6",
        "eval.blind=true",
        f"eval.blind_gap_drop={MONITOR_DROP}",
        "eval.drift=false",
        f"log.run_dir={run_dir}",
    ]


def held_out_size(quick: bool) -> int:
    return 8 if quick else 100


def base_kwargs() -> dict[str, Any]:
    """:data:`BASE_KWARGS` as a dict."""
    import yaml

    return yaml.safe_load(BASE_KWARGS)


def samples_of(bias: float | None, n: int, seed: int) -> list:
    """``n`` held-out (``test`` split) prompts of the task at ``bias`` (None: de-biased)."""
    import yaml

    from vlmrl.data import generate

    knobs = yaml.safe_load(task_kwargs(bias))
    return generate(TASK, n, seed=seed, split="test", **knobs)


def end_metrics(policy, quick: bool, seed: int) -> dict[str, float]:
    """After training: the de-biased set's prior rate; the biased (training) distribution's
    held-out accuracy, best blind accuracy and blind gap (real, blank and shuffled images)."""
    import dataclasses

    from vlmrl.eval.accuracy import evaluate
    from vlmrl.eval.blind import blind_gap
    from vlmrl.rewards import get_reward

    judge, n = get_reward("accuracy"), held_out_size(quick)
    debiased = samples_of(None, n, seed)  # the run's own evaluation prompts
    res = evaluate(policy, debiased, "answer", judge, 6, 60, return_outputs=True)
    as_prior = [dataclasses.replace(s, answer=PRIOR) for s in debiased]
    says = [judge(o["completion"], p).total for o, p in zip(res["outputs"], as_prior, strict=True)]
    biased = blind_gap(
        policy,
        samples_of(TRAIN_BIAS, min(n, 60), seed),
        "answer",
        judge,
        6,
        60,
        ("real", "blank", "shuffled"),
    )
    blind = max(r["accuracy"] for c, r in biased["conditions"].items() if c != "real")
    return {
        "debiased_prior_rate": sum(says) / len(says),
        "train_acc": biased["conditions"]["real"]["accuracy"],
        "train_blind_acc": blind,
        "train_blind_gap": biased["blind_gap"],
    }


def run_arm(arm: str, seed: int, quick: bool, workdir: Path) -> ArmResult:
    """Train one arm from the base; its evaluations run on the de-biased set (the metric's curve)."""
    import torch

    from vlmrl.config import load_config
    from vlmrl.train.grpo import GRPOTrainer

    torch.manual_seed(seed)
    cfg = load_config(None, common_overrides(seed, quick, workdir / f"{arm}_s{seed}") + ARMS[arm])
    trainer = GRPOTrainer(cfg)
    history = trainer.train()
    evals = [h for h in history if "eval/accuracy" in h]
    curve = [(int(h["step"]), float(h["eval/accuracy"])) for h in evals]
    fired = [int(h["step"]) for h in evals if h.get("eval/blind_gap_alert", 0.0) > 0]
    last = evals[-1]
    extra = {
        "debiased_blind_acc": max(float(v) for k, v in last.items() if k.startswith("eval/blind/")),
        "debiased_blind_gap": float(last["eval/blind_gap"]),
        "monitor_step": float(fired[0]) if fired else -1.0,
    }
    return ArmResult(curve[-1][1], curve, extra | end_metrics(trainer.policy, quick, seed))


CHALLENGE = Challenge(
    name="shortcut",
    question="When the question predicts the answer in training, does RL teach the model to "
    "answer from the question instead of the image, and does a counterfactual reward stop it?",
    metric="greedy accuracy on the de-biased held-out set after RL (count 1-6 uniform, test split)",
    higher_is_better=True,
    arms={
        "baseline": f"plain GRPO on the biased set (answer {PRIOR} {TRAIN_BIAS:.0%} of the time)",
        "fix": "reward.counterfactual: shuffled (no accuracy for a right answer also given with another "
        "prompt's image)",
    },
    run_arm=run_arm,
    side_metrics=("debiased_blind_gap", "debiased_prior_rate", "train_blind_acc", "monitor_step"),
)
