"""The one optimizer + schedule (``vlmrl.run.optim``), the update's direction, and SFT's vision.train."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import QUICK_RUN
from vlmrl.config import load_config
from vlmrl.rollout.batch import completion_logprobs, training_inputs
from vlmrl.run.optim import build_optimizer, lr_factor, set_lr
from vlmrl.train.grpo import GRPOTrainer
from vlmrl.train.update import policy_update


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # warm-up W=2 of T=6 steps: (s+1)/W = 0.5, 1; then constant 1
        ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        # then ½(1 + cos(π (s − 2) / 4)) for s = 2..6: 1, (1 + √½)/2, ½, (1 − √½)/2, 0
        ("cosine", [0.5, 1.0, 1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2, 0.0]),
    ],
)
def test_lr_schedule_by_hand(schedule, expected):
    assert [lr_factor(s, 6, 2, schedule) for s in range(7)] == pytest.approx(expected, abs=1e-12)


def test_lr_schedule_never_starts_at_zero_and_rejects_unknown_names():
    """The generator trainer's old warm-up ran its first step at rate 0 (``step / W``)."""
    assert lr_factor(0, 10, 5) == pytest.approx(0.2)
    assert lr_factor(0, 10, 0) == 1.0
    with pytest.raises(ValueError, match="allowed: constant, cosine"):
        lr_factor(0, 10, 0, "linear")


def test_optimizer_groups_scale_the_vision_tower():
    model = torch.nn.ModuleDict({"visual": torch.nn.Linear(2, 2), "lm_head": torch.nn.Linear(2, 2)})
    opt = build_optimizer(model, 1e-3, weight_decay=0.1, vision_lr_scale=0.5)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"language": 1e-3, "vision": 5e-4}
    set_lr(opt, 0.5)
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"language": 5e-4, "vision": 2.5e-4}
    assert all(g["weight_decay"] == 0.1 for g in opt.param_groups)


def _overrides(tiny_dir, run_dir, plugin, *extra) -> list[str]:
    return [
        f"model.path={tiny_dir}",
        f"log.run_dir={run_dir}",
        f"reward.modules=[{plugin}]",
        "reward.weights={test_letters: 1.0}",
        *QUICK_RUN,
        *extra,
    ]


def test_the_trainer_follows_the_warmup_in_training_steps(tiny_dir, tmp_path, plugin):
    """``train.warmup_steps`` counts trainer steps, even with several optimizer steps in each."""
    cfg = load_config(
        overrides=_overrides(
            tiny_dir, tmp_path, plugin, "train.warmup_steps=2", "train.minibatches=2", "train.save_every=0"
        )
    )
    trainer = GRPOTrainer(cfg)
    lrs = [trainer.train_step()["lr"] for _ in range(3)]
    assert lrs == pytest.approx([cfg.train.lr * 0.5, cfg.train.lr, cfg.train.lr])


def test_a_step_on_a_rewarded_completion_raises_its_logprob(tiny_dir, tmp_path, plugin):
    """The update's sign: advantage +1 on one completion and −1 on another of the same prompt moves
    the first one's log-probability up and the second one's down (the loss is minimised)."""
    cfg = load_config(overrides=_overrides(tiny_dir, tmp_path, plugin, "train.grad_clip=0"))
    trainer = GRPOTrainer(cfg)
    ro = trainer._rollout_round(2)
    batch, model = ro.batch, trainer.policy.model
    good, bad = 0, 1  # both of prompt 0
    assert int(batch.prompt_index[good]) == int(batch.prompt_index[bad]) == 0

    def seq_logp() -> torch.Tensor:
        inputs, _ = training_inputs(batch, [good, bad])
        with torch.no_grad():
            lp, _ = completion_logprobs(model, inputs, batch.completion_ids[[good, bad]])
        return (lp * batch.completion_mask[[good, bad]]).sum(1)  # [2]

    adv = torch.zeros_like(batch.completion_mask)
    adv[good], adv[bad] = batch.completion_mask[good], -batch.completion_mask[bad]
    before = seq_logp()
    policy_update(model, torch.optim.SGD(model.parameters(), lr=0.05), batch, adv, trainer.spec)
    after = seq_logp()
    assert after[0] > before[0] and after[1] < before[1]


def test_sft_follows_vision_train(tiny_dir, tmp_path):
    """``vlmrl sft`` trained every parameter whatever ``vision.train`` said."""
    from vlmrl.models import load_policy
    from vlmrl.train.sft import run_sft

    out = tmp_path / "sft"
    cfg = load_config(
        overrides=[
            f"model.path={tiny_dir}",
            "vision.train=frozen",
            "sft.steps=2",
            "sft.batch_size=2",
            f"sft.out={out}",
            "data.eval_size=2",
            "eval.max_new_tokens=2",
            "log.tensorboard=false",
        ]
    )
    run_sft(cfg, log_every=1)
    start = dict(load_policy(tiny_dir).model.named_parameters())
    after = dict(load_policy(out).model.named_parameters())
    moved = {n for n, p in after.items() if not torch.equal(p, start[n])}
    assert moved, "SFT changed nothing: the test would be vacuous"
    assert not any(n.startswith("model.visual.") for n in moved)
