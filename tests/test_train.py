"""End to end on the tiny model: a GRPO step moves every trainable parameter and no frozen one,
micro-batching does not change the update, and a SIGKILLed run resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import QUICK_RUN
from vlmrl.config import load_config
from vlmrl.run.metrics import read_metrics
from vlmrl.train.grpo import GRPOTrainer
from vlmrl.train.update import policy_update


def _overrides(tiny_dir, run_dir, plugin, *extra) -> list[str]:
    return [
        f"model.path={tiny_dir}",
        f"log.run_dir={run_dir}",
        f"reward.modules=[{plugin}]",
        "reward.weights={test_letters: 1.0}",
        *QUICK_RUN,
        *extra,
    ]


@pytest.mark.parametrize("mode", ["full", "frozen"])
def test_one_grpo_step_moves_exactly_the_trainable_parameters(tiny_dir, tmp_path, plugin, mode):
    cfg = load_config(
        overrides=_overrides(tiny_dir, tmp_path, plugin, "train.steps=1", f"vision.train={mode}")
    )
    trainer = GRPOTrainer(cfg)
    model = trainer.policy.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = trainer.train_step()
    assert metrics["reward/std_in_group"] > 0  # the test is not vacuous
    assert all(v is None or torch.isfinite(torch.tensor(v)) for v in metrics.values() if isinstance(v, float))
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    moved_frozen = [
        n for n, p in model.named_parameters() if not p.requires_grad and not torch.equal(p, before[n])
    ]
    assert unchanged == []
    assert moved_frozen == []
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert (len(frozen) > 0) == (mode == "frozen")
    assert all(n.startswith("model.visual.") for n in frozen)


def test_metrics_are_written(tiny_dir, tmp_path, plugin):
    cfg = load_config(overrides=_overrides(tiny_dir, tmp_path, plugin, "train.steps=2", "train.save_every=0"))
    GRPOTrainer(cfg).train()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "eval/accuracy" in rows[0] and "eval/accuracy" in rows[-1]
    for key in ("reward/total", "actor/pg_loss", "actor/entropy", "actor/grad_norm", "time/step_s"):
        assert key in rows[1]
    assert (tmp_path / "config.yaml").exists()
    assert (tmp_path / "checkpoints" / "step_2" / "model" / "model.safetensors").exists()
    lines = (tmp_path / "rollouts" / "step_1.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert {"completion", "reward", "reward_parts", "images", "answer"} <= set(first)
    assert (tmp_path / "rollouts" / first["images"][0]).exists()


def test_micro_batch_invariance(tiny_dir, tmp_path, plugin):
    """The same rollouts updated with micro-batch 8 (1×8) and 1 (8×1) give the same gradient."""
    cfg = load_config(overrides=_overrides(tiny_dir, tmp_path, plugin, "train.grad_clip=0"))
    trainer = GRPOTrainer(cfg)
    samples = trainer.stream.next(2)
    from vlmrl.algos import broadcast_advantages, compute_advantages
    from vlmrl.data import build_messages
    from vlmrl.rollout.batch import encode_prompts

    enc = encode_prompts(
        trainer.policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )
    batch = trainer.engine.generate(enc, 4)
    rewards = trainer._score(samples, batch).rewards
    adv = broadcast_advantages(compute_advantages("grpo", rewards, batch.prompt_index), batch.completion_mask)
    model = trainer.policy.model
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    deltas = []
    for micro in (8, 1):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(start[n])
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        spec = trainer.spec
        spec.loop.micro_batch = micro
        policy_update(model, opt, batch, adv, spec)
        deltas.append({n: (p.detach() - start[n]) for n, p in model.named_parameters()})
    total = sum(d.abs().sum() for d in deltas[0].values())
    assert total > 0
    for n in deltas[0]:
        torch.testing.assert_close(deltas[0][n], deltas[1][n], atol=1e-6, rtol=1e-4)


def _run(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "vlmrl", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kw,
    )


def test_resume_after_sigkill_continues_exactly(tiny_dir, tmp_path, plugin):
    steps = ["train.steps=6", "train.save_every=2", "train.keep_checkpoints=5"]
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "killed"
    ref = _run(_overrides(tiny_dir, ref_dir, plugin, *steps))
    assert ref.wait(timeout=300) == 0, ref.stdout.read().decode()
    victim = _run(_overrides(tiny_dir, kill_dir, plugin, *steps))
    deadline = time.time() + 300
    while not (kill_dir / "checkpoints" / "step_2").exists():
        assert victim.poll() is None, victim.stdout.read().decode()
        assert time.time() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = sorted(p.name for p in (kill_dir / "checkpoints").glob("step_*"))
    assert "step_6" not in done  # it really died mid-run
    resumed = _run([*_overrides(tiny_dir, kill_dir, plugin, *steps), "--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read().decode()
    keys = ("reward/total", "actor/pg_loss", "actor/entropy", "actor/grad_norm", "rollout/response_length")
    ref_rows = {r["step"]: r for r in read_metrics(ref_dir)}
    got_rows = {r["step"]: r for r in read_metrics(kill_dir)}
    assert sorted(got_rows) == sorted(ref_rows)
    for step in range(3, 7):
        for k in keys:
            assert got_rows[step][k] == pytest.approx(ref_rows[step][k], abs=1e-5), (step, k)


@pytest.mark.parametrize(
    "extra",
    [
        ["algo.kl_coef=0.1", "algo.kl_estimator=k3"],
        ["algo.kl_coef=0.1", "algo.kl_placement=reward", "algo.kl_estimator=k1"],
        ["algo.advantage=rloo", "algo.loss=dual_clip"],
        ["algo.advantage=drgrpo", "algo.loss_agg=seq_mean_token_sum_norm"],
        ["algo.advantage=reinforce_pp", "algo.loss=gspo", "algo.clip_low=3e-4", "algo.clip_high=4e-4"],
        ["algo.dynamic_sampling=true", "algo.overlong_penalty=0.5", "rollout.mask_truncated=true"],
        ["train.epochs=2", "train.minibatches=2", "algo.clip_high=0.28", "algo.entropy_coef=0.01"],
        ["vision.train=projector_only", "vision.lr_scale=0.1"],
        ["vision.train=lora"],
        ["algo.loss=sapo", "train.epochs=2"],
        ["algo.loss=cispo", "algo.loss_agg=token_mean", "train.epochs=2"],
    ],
    ids=[
        "kl-loss",
        "kl-reward",
        "rloo-dualclip",
        "drgrpo",
        "reinforcepp-gspo",
        "dapo",
        "ppo-epochs",
        "projector",
        "lora",
        "sapo",
        "cispo",
    ],
)
def test_variants_run_one_step(tiny_dir, tmp_path, plugin, extra):
    cfg = load_config(overrides=_overrides(tiny_dir, tmp_path, plugin, "train.steps=1", *extra))
    trainer = GRPOTrainer(cfg)
    metrics = trainer.train_step()
    numbers = [v for v in metrics.values() if isinstance(v, float)]
    assert all(torch.isfinite(torch.tensor(v)) for v in numbers)
    if cfg.algo.kl_coef > 0:
        # the rollouts were sampled before the update, when policy == reference
        assert abs(metrics["actor/kl_ref"]) < 1e-4
        assert trainer.ref is not None
    else:
        assert trainer.ref is None  # no reference model when β = 0
    if cfg.algo.dynamic_sampling:
        assert 0 < metrics["rollout/kept_groups"] <= 1
        assert 1 <= metrics["rollout/generation_rounds"] <= cfg.algo.dynamic_sampling_max_rounds
    if cfg.train.epochs * cfg.train.minibatches > 1:
        assert metrics["actor/optimizer_steps"] == cfg.train.epochs * cfg.train.minibatches
    if cfg.algo.loss == "sapo":  # the soft gate: 1 on-policy, < 1 once the second epoch is off-policy
        assert (cfg.algo.clip_low, cfg.algo.clip_high) == (1.05, 1.0)  # tau_neg / tau_pos of the paper
        assert 0 < metrics["actor/gate_mean"] <= 1
    if cfg.algo.loss == "cispo":  # the IS weight's clip: no lower bound by default
        assert (cfg.algo.clip_low, cfg.algo.clip_high) == (1.0, 0.28)
        assert metrics["actor/clipfrac_low"] == 0.0
    if cfg.vision.train in ("projector_only", "lora"):
        trainable_vision = [
            n
            for n, p in trainer.policy.model.named_parameters()
            if p.requires_grad and n.startswith("model.visual.")
        ]
        marker = "merger" if cfg.vision.train == "projector_only" else "lora_"
        assert trainable_vision and all(marker in n for n in trainable_vision)
