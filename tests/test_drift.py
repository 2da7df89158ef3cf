"""Vision-encoder drift: linear CKA by hand, the monitor on the tiny model, and GRPO frozen vs. full."""

from __future__ import annotations

import doctest
import logging

import pytest
import torch

from conftest import QUICK_RUN
from vlmrl.config import load_config
from vlmrl.data import generate
from vlmrl.eval import drift as drift_mod
from vlmrl.eval.drift import DriftMonitor, find_visual, linear_cka, probe_images
from vlmrl.models.vision import apply_vision_policy
from vlmrl.train.grpo import GRPOTrainer

# ----------------------------------------------------------------------------- linear CKA by hand


def test_cka_hand_computed_one_feature():
    # x = [1, 2, 3] → centred [-1, 0, 1]; y = [1, 3, 2] → centred [-1, 1, 0].
    # YᵀX = 1, XᵀX = 2, YᵀY = 2  →  CKA = 1² / (2 · 2) = 0.25 (= corr², corr = 1/2).
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [3.0], [2.0]])
    assert linear_cka(x, y) == pytest.approx(0.25, abs=1e-12)


def test_cka_hand_computed_two_features():
    # X centred = [[-1, 0], [1, 0], [0, 0]] (second column constant → 0 after centring);
    # Y = X with the columns swapped: CKA only sees the column space, so it is 1.
    x = torch.tensor([[0.0, 5.0], [2.0, 5.0], [1.0, 5.0]])
    y = x[:, [1, 0]]
    assert linear_cka(x, y) == pytest.approx(1.0, abs=1e-12)


def test_cka_invariances_and_independence():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))  # an orthogonal matrix
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-9)  # rotation
    assert linear_cka(x, 3.0 * x + 7.0) == pytest.approx(1.0, abs=1e-9)  # isotropic scale and shift
    # independent features: E[CKA] ≈ d/n-ish for n ≫ d, far below 1
    assert linear_cka(x, torch.randn(400, 16, generator=g)) < 0.1
    # a non-isotropic scaling is a real change of structure
    assert linear_cka(x, x * torch.linspace(0.01, 10, 16)) < 0.9


def test_cka_rejects_unpaired_rows():
    with pytest.raises(ValueError, match="same n"):
        linear_cka(torch.zeros(3, 2), torch.zeros(4, 2))


def test_doctests():
    assert doctest.testmod(drift_mod).failed == 0


# ----------------------------------------------------------------------------- the monitor alone


def _images(n=4):
    return [s.images[0] for s in generate("count", n, seed=0, split="test")]


def test_tower_runs_alone_and_unchanged_model_has_no_drift(tiny_policy):
    mon = DriftMonitor(tiny_policy.model, _images(), tiny_policy.processor)
    feats = mon.features()
    # 4 images of 112 px: 8×8 = 64 patches each before the 2×2 merge, 16 after
    assert feats["block"].shape[0] == 4 * 64 and feats["merger"].shape[0] == 4 * 16
    for k in ("block", "merger"):
        assert torch.equal(feats[k], mon.reference[k])  # bitwise: same weights, same inputs
    m = mon.measure()
    assert m["vision/weight_change"] == 0.0
    for key in ("vision/cos_sim", "vision/cka", "vision/merger_cos_sim", "vision/merger_cka"):
        assert m[key] == pytest.approx(1.0, abs=1e-9)
    assert m["vision/drift_alert"] == 0.0


def test_alert_logs_once_per_crossing(tiny_policy, caplog):
    visual = find_visual(tiny_policy.model)
    mon = DriftMonitor(tiny_policy.model, _images(2), tiny_policy.processor, warn=0.1)
    start = {n: p.detach().clone() for n, p in visual.named_parameters()}
    g = torch.Generator().manual_seed(1)

    def perturb(scale):
        with torch.no_grad():
            for n, p in visual.named_parameters():
                p.copy_(start[n] + scale * torch.randn(p.shape, generator=g) * (start[n].std() + 1e-3))

    caplog.set_level(logging.WARNING, logger="vlmrl.eval.drift")
    perturb(2.0)
    first = mon.measure()
    assert 1 - first["vision/cos_sim"] > 0.1 and first["vision/drift_alert"] == 1.0
    assert first["vision/weight_change"] > 0.5
    assert mon.measure()["vision/drift_alert"] == 1.0
    assert len([r for r in caplog.records if "drift" in r.getMessage()]) == 1  # still above: no repeat
    perturb(0.0)
    assert mon.measure()["vision/drift_alert"] == 0.0
    perturb(2.0)
    mon.measure()
    assert len([r for r in caplog.records if "drift" in r.getMessage()]) == 2  # a new crossing warns again


def test_lora_change_counts_as_weight_change(tiny_policy):
    model = tiny_policy.model
    apply_vision_policy(model, "lora")
    mon = DriftMonitor(model, _images(2), tiny_policy.processor)
    assert not any("lora_" in n or "base_layer" in n for n in mon.theta0)  # plain names, adapters merged
    assert mon.measure()["vision/weight_change"] == 0.0  # lora_B starts at zero
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.05)
    m = mon.measure()
    assert m["vision/weight_change"] > 0 and m["vision/cos_sim"] < 1.0


def test_monitor_needs_a_tower():
    with pytest.raises(ValueError, match="no `visual`"):
        DriftMonitor(torch.nn.Linear(2, 2), _images(1), processor=None)


# ----------------------------------------------------------------------------- after a GRPO step


def _cfg(tiny_dir, tmp_path, plugin, *extra):
    return load_config(
        overrides=[
            f"model.path={tiny_dir}",
            f"log.run_dir={tmp_path / 'run'}",
            f"reward.modules=[{plugin}]",
            "reward.weights={test_letters: 1.0}",
            *QUICK_RUN,
            "train.steps=1",
            *extra,
        ]
    )


def test_frozen_tower_has_exactly_no_drift_after_a_grpo_step(tiny_dir, tmp_path, plugin):
    trainer = GRPOTrainer(_cfg(tiny_dir, tmp_path, plugin, "vision.train=frozen"))
    assert trainer.drift is not None
    assert trainer.train_step()["reward/std_in_group"] > 0  # an update really happened
    feats = trainer.drift.features()
    assert all(torch.equal(feats[k], trainer.drift.reference[k]) for k in feats)
    m = trainer.drift.measure()
    assert m["vision/weight_change"] == 0.0
    assert m["vision/cos_sim"] == pytest.approx(1.0, abs=1e-9)
    assert m["vision/cka"] == pytest.approx(1.0, abs=1e-9)


def test_full_tower_drifts_after_a_grpo_step_and_resume_keeps_the_initial_reference(
    tiny_dir, tmp_path, plugin
):
    cfg = _cfg(tiny_dir, tmp_path, plugin, "vision.train=full", "train.steps=2")
    trainer = GRPOTrainer(cfg)
    assert trainer.train_step()["reward/std_in_group"] > 0
    m = trainer.drift.measure()
    assert m["vision/weight_change"] > 0
    assert m["vision/cos_sim"] < 1.0 and m["vision/cka"] < 1.0
    assert m["vision/merger_cos_sim"] < 1.0
    trainer.save()
    # the resumed trainer holds step-1 weights; its reference must still be the step-0 model
    resumed = GRPOTrainer(cfg, resume=True)
    again = resumed.drift.measure()
    for k in ("vision/weight_change", "vision/cos_sim", "vision/cka"):
        assert again[k] == pytest.approx(m[k], rel=1e-5, abs=1e-7), k
    # and a training eval logs the drift next to the accuracy
    ev = resumed.evaluate()
    assert "eval/accuracy" in ev and ev["vision/weight_change"] == pytest.approx(m["vision/weight_change"])


def test_training_eval_switches(tiny_dir, tmp_path, plugin):
    """eval.drift off; eval.blind and eval.pope_size on: the training eval logs exactly those."""
    cfg = _cfg(tiny_dir, tmp_path, plugin, "eval.drift=false", "eval.blind=true", "eval.pope_size=1")
    trainer = GRPOTrainer(cfg)
    assert trainer.drift is None
    ev = trainer.evaluate()
    assert not any(k.startswith("vision/") for k in ev)
    # each condition's accuracy is the one blind_gap measures on the same held-out set
    from vlmrl.eval.blind import blind_gap

    direct = blind_gap(trainer.policy, trainer.eval_set, cfg.data.template, trainer.reward_fn,
                       cfg.eval.max_new_tokens, cfg.eval.batch_size, seed=cfg.data.seed)  # fmt: skip
    for cond in ("blank", "noise", "shuffled"):
        assert ev[f"eval/blind/{cond}"] == pytest.approx(direct["conditions"][cond]["accuracy"])
    assert ev["eval/blind_gap"] == pytest.approx(
        ev["eval/accuracy"] - max(ev[f"eval/blind/{c}"] for c in ("blank", "noise", "shuffled"))
    )
    for key in (
        "eval/pope/f1",
        "eval/pope/yes_ratio",
        "eval/pope/unparsed",
        "eval/pope/adversarial/accuracy",
    ):
        assert key in ev


def test_probe_images_are_the_first_eval_images():
    samples = generate("count", 6, seed=0, split="test")
    assert probe_images(samples, 3) == [s.images[0] for s in samples[:3]]
