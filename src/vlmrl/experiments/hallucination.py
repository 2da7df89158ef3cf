"""``hallucination``: when guessing "yes" usually pays, does RL teach the model to claim what it does not see?

The probe is one the tiny base can ground: ``count_probe`` asks "Is there a C circle in the
image?" about its counting scenes (red circles among blue/purple ones), whose colours it reads
perfectly. The base itself never learnt to answer yes/no from them, so a short supervised
warm-start on *balanced* probes (:data:`WARM`, shared by every arm and seed) teaches the format
and a grounded answer first.

Then Dr.GRPO on a training set where "yes" is right 90 % of the time (``yes_ratio: 0.9``), reward
``accuracy`` only: a model unsure of an image earns more by saying "yes". The metric is the
false-yes rate (POPE's: "yes" to an absent object, over all no-probes) on a *balanced* held-out
set (``yes_ratio: 0.5``, the ``test`` split, never trained on), measured at the start, every few
steps and after the last; POPE F1, accuracy and yes-ratio on that set and the accuracy on the
training distribution's held-out split go to ``ArmResult.extra``.

Arms (:data:`ARMS`, one setting shared by all, :func:`common_overrides`; Dr.GRPO advantages
``r − mean_g(r)``, see ``penalty_std`` for why):
- ``baseline``: reward ``{accuracy: 1}`` on the 90 %-yes data;
- ``fix``: negatives in the mix: the same reward on balanced data (``yes_ratio: 0.5``);
- ``penalty`` (measured beside by ``bench/hallucination_arms.py``): the 90 %-yes data with the
  false-yes penalty ``{accuracy: 1, no_false_yes: w}``, ``w = π/(1 − π) − 1``
  (``vlmrl.rewards.hallucination``), a reward under which the prior stops paying in expectation;
- ``penalty_std`` (beside): the same with GRPO's std-normalised advantages. Every rollout of a
  group shares its gold answer, so for answers that parse as yes or no the penalty is an affine
  map of the accuracy reward within each group, and ``(r − mean_g) / std_g`` erases it: the arm
  then follows the baseline;
- ``papo`` (beside): PAPO's perception term, ``algo.papo_coef``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmrl.experiments.registry import ArmResult, Challenge
from vlmrl.rewards.hallucination import prior_cancelling_weight

TASK = "count_probe"
PROBE = {"kind": "color"}
"""The probe's knobs, shared by warm-start, training and held-out sets."""
TRAIN_YES = 0.9
"""Share of yes-probes in the RL training set: guessing "yes" is right this often."""
HELD_OUT_YES = 0.5
"""Share of yes-probes in the held-out set the metric is measured on."""
PENALTY = prior_cancelling_weight(TRAIN_YES)
"""The ``no_false_yes`` weight of the ``penalty`` arms (8 for a 90 % prior)."""


def task_kwargs(yes_ratio: float) -> str:
    """``data.task_kwargs`` for the probe at ``yes_ratio``, as a dotted-override value."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in {**PROBE, "yes_ratio": yes_ratio}.items()) + "}"


ARMS: dict[str, list[str]] = {
    "baseline": ["reward.weights={accuracy: 1.0}"],
    "fix": ["reward.weights={accuracy: 1.0}", f"data.task_kwargs={task_kwargs(HELD_OUT_YES)}"],
    "penalty": [f"reward.weights={{accuracy: 1.0, no_false_yes: {PENALTY:g}}}"],
    "penalty_std": [f"reward.weights={{accuracy: 1.0, no_false_yes: {PENALTY:g}}}", "algo.advantage=grpo"],
    "papo": ["reward.weights={accuracy: 1.0}", "algo.papo_coef=0.02"],
}
"""Each arm's own overrides on top of :func:`common_overrides` (later keys win)."""

WARM = {"steps": 50, "batch_size": 32, "lr": 3e-4, "seed": 0}
"""The supervised warm-start on balanced probes (``vlmrl sft``), run once and shared by every arm
and seed, so the arms differ only in what RL does."""


def common_overrides(seed: int, quick: bool, run_dir: Path, init: Path) -> list[str]:
    """The RL setting every arm shares (``--quick``: 2 steps, a tiny eval)."""
    return [
        f"model.path={init}",
        f"data.task={TASK}",
        f"data.task_kwargs={task_kwargs(TRAIN_YES)}",
        "data.template=answer",
        f"data.eval_size={8 if quick else 100}",
        f"data.seed={seed}",
        f"train.seed={seed}",
        f"train.steps={2 if quick else 15}",
        "train.batch_prompts=8",
        "train.micro_batch=64",
        "train.lr=1e-4",
        "train.grad_clip=1.0",
        "train.save_every=0",
        "rollout.n=8",
        "rollout.temperature=1.0",
        "rollout.max_new_tokens=4",
        "algo.kl_coef=0",
        "algo.advantage=drgrpo",
        "eval.every=0",
        "eval.max_new_tokens=4",
        "eval.drift=false",
        f"log.run_dir={run_dir}",
    ]


def warm_start(workdir: Path, quick: bool) -> Path:
    """The SFT'd starting model (made on the first call, then reused from ``workdir``)."""
    out = workdir / "warm"
    if (out / "config.json").exists():
        return out
    from vlmrl.config import load_config
    from vlmrl.train.sft import run_sft

    cfg = load_config(
        None,
        [
            "model.path=vlmrl-tiny-base",
            f"data.task={TASK}",
            f"data.task_kwargs={task_kwargs(HELD_OUT_YES)}",
            "data.template=answer",
            "data.eval_size=8",
            f"data.seed={WARM['seed']}",
            f"train.seed={WARM['seed']}",
            f"sft.steps={2 if quick else WARM['steps']}",
            f"sft.batch_size={WARM['batch_size']}",
            f"sft.lr={WARM['lr']}",
            f"sft.out={out}",
            "eval.max_new_tokens=4",
            "reward.weights={accuracy: 1.0}",
        ],
    )
    run_sft(cfg)
    return out


def held_out_size(quick: bool) -> int:
    return 8 if quick else 200


def probe_every(quick: bool) -> int:
    return 1 if quick else 5


def balanced_metrics(policy, n: int) -> dict[str, float]:
    """POPE metrics (``vlmrl.eval.pope``) of greedy answers on ``n`` balanced held-out probes."""
    from vlmrl.data import generate
    from vlmrl.eval.accuracy import evaluate
    from vlmrl.eval.pope import parse_prediction, pope_metrics
    from vlmrl.rewards import get_reward

    samples = generate(TASK, n, seed=0, split="test", **PROBE, yes_ratio=HELD_OUT_YES)
    res = evaluate(policy, samples, "answer", get_reward("yesno"), 4, 100, return_outputs=True)
    preds = [parse_prediction(o["completion"]) for o in res["outputs"]]
    return pope_metrics(preds, [s.answer for s in samples])


def run_arm(arm: str, seed: int, quick: bool, workdir: Path) -> ArmResult:
    """Warm-start (shared), then GRPO for one arm, probing false-yes on the balanced set as it goes."""
    import torch

    from vlmrl.config import load_config
    from vlmrl.train.grpo import GRPOTrainer

    init = warm_start(workdir, quick)
    torch.manual_seed(seed)
    cfg = load_config(None, common_overrides(seed, quick, workdir / f"{arm}_s{seed}", init) + ARMS[arm])
    trainer = GRPOTrainer(cfg)
    n = held_out_size(quick)
    curve = [(0, balanced_metrics(trainer.policy, n)["false_yes"])]

    def on_step(step: int, _metrics: dict[str, Any]) -> None:
        if step % probe_every(quick) == 0 and step != cfg.train.steps:
            curve.append((step, balanced_metrics(trainer.policy, n)["false_yes"]))

    history = trainer.train(on_step=on_step)
    final = balanced_metrics(trainer.policy, n)
    curve.append((cfg.train.steps, final["false_yes"]))
    extra = {
        "pope_f1": final["f1"],
        "balanced_accuracy": final["accuracy"],
        "yes_ratio": final["yes_ratio"],
        "false_yes_start": curve[0][1],
    }
    if "eval/accuracy" in history[-1]:
        extra["train_dist_accuracy"] = float(history[-1]["eval/accuracy"])
    return ArmResult(float(final["false_yes"]), curve, extra)


CHALLENGE = Challenge(
    name="hallucination",
    question='When answering "yes" is rewarded 90 % of the time whether or not the object is there, '
    "does RL teach the model to say it sees what it does not, and do negatives in the mix stop it?",
    metric="false-yes rate on balanced held-out count_probe colour probes (yes_ratio 0.5, test split)",
    higher_is_better=False,
    arms={
        "baseline": "Dr.GRPO on 90 %-yes probes, reward accuracy",
        "fix": "negatives in the mix: the same reward and steps on balanced probes (yes_ratio 0.5)",
    },
    run_arm=run_arm,
    side_metrics=("pope_f1", "balanced_accuracy"),
)
