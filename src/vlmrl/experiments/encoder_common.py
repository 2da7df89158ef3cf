"""What the two ``encoder`` challenges share: one GRPO arm from the tiny base, and its context numbers.

``encoder_blind`` (does training the tower blind the model?) and ``encoder_frozen`` (does freezing
it stop vision from improving?) each train an arm from ``vlmrl-tiny-base`` and report, beside
their own metric, the same five numbers per arm, so the two can be read as one table
(arms × :data:`CONTEXT_KEYS`):

- ``task_acc``: greedy accuracy on the RL task's held-out ``test`` split (``eval/accuracy``);
- ``blind_gap``: that accuracy minus the accuracy with blank / noise / shuffled images
  (``eval/blind_gap``, :mod:`vlmrl.eval.blind`): how much of it comes from the image;
- ``probe_acc``: a perception probe RL never trains: greedy accuracy on the base's
  in-distribution ``count`` split (:data:`PROBE`; the base scores 1.000 there);
- ``cka``: linear CKA of the tower's last-block features vs. the start, on a fixed probe batch
  (``vision/cka``, :mod:`vlmrl.eval.drift`): 1 when the features kept their structure;
- ``weight_change``: ``||θ − θ₀|| / ||θ₀||`` over the tower (``vision/weight_change``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROBE = "count"
"""The base card entry the perception probe evaluates (in-distribution for the base; RL never trains it)."""

HISTORY_KEYS = {
    "task_acc": "eval/accuracy",
    "blind_gap": "eval/blind_gap",
    "cka": "vision/cka",
    "weight_change": "vision/weight_change",
}
"""Context numbers read from the trainer's last evaluation: ``{context key: metrics key}``."""

CONTEXT_KEYS = ("task_acc", "blind_gap", "probe_acc", "cka", "weight_change")
"""The columns of the encoder table, in order (see the module docstring)."""


def base_overrides(seed: int, run_dir: Path) -> list[str]:
    """What every encoder arm shares: the base, the seeds, on-policy GRPO without KL, the diagnostics."""
    return [
        "model.path=vlmrl-tiny-base",
        "data.template=answer",
        f"data.seed={seed}",
        f"train.seed={seed}",
        "train.batch_prompts=8",
        "train.micro_batch=64",
        "train.grad_clip=1.0",
        "train.save_every=0",
        "rollout.n=8",
        "rollout.temperature=1.0",
        "algo.kl_coef=0",
        "eval.blind=true",
        "eval.drift=true",
        "log.progress=false",
        f"log.run_dir={run_dir}",
    ]


def probe_size(quick: bool) -> int:
    """Samples of the perception probe (``--quick``: a handful)."""
    return 8 if quick else 100


@dataclass(frozen=True)
class ArmRun:
    """One trained arm: its evaluations, the perception probe along the way, the context numbers."""

    evals: list[tuple[int, float]]
    """``(step, eval/accuracy)`` at every evaluation of the trainer (start, every N, end)."""
    probes: list[tuple[int, float]]
    """``(step, probe accuracy)`` at the start, every ``probe_every`` steps and at the end."""
    context: dict[str, float]
    """:data:`CONTEXT_KEYS` after the last step (a key is absent when its diagnostic was off)."""


def train_arm(overrides: list[str], seed: int, quick: bool, probe_every: int = 0) -> ArmRun:
    """Train one arm with GRPO from ``overrides`` and measure it; ``probe_every`` 0: probe only at
    the start and the end."""
    import torch

    from vlmrl.config import load_config
    from vlmrl.eval.base_card import evaluate_entry
    from vlmrl.models.base_mix import find_entry
    from vlmrl.train.grpo import GRPOTrainer

    torch.manual_seed(seed)
    cfg = load_config(None, overrides)
    trainer = GRPOTrainer(cfg)
    entry, n = find_entry(PROBE), probe_size(quick)

    def probe() -> float:
        return float(evaluate_entry(trainer.policy, entry, n)["acc"])

    probes = [(0, probe())]

    def on_step(step: int, _metrics: dict[str, Any]) -> None:
        if probe_every and step % probe_every == 0 and step != cfg.train.steps:
            probes.append((step, probe()))

    history = trainer.train(on_step=on_step)
    probes.append((cfg.train.steps, probe()))
    evals = [(int(h["step"]), float(h["eval/accuracy"])) for h in history if "eval/accuracy" in h]
    last = history[-1]
    context = {k: float(last[m]) for k, m in HISTORY_KEYS.items() if m in last}
    context["probe_acc"] = probes[-1][1]
    return ArmRun(evals, probes, {k: context[k] for k in CONTEXT_KEYS if k in context})
