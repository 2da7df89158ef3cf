"""Chaos on the tiny model, in process (seconds each): NaN injected at the reward, the loss, the
gradient and the weights, and ``train.lr=1e6``. In every case no checkpoint holds NaN, skipped
updates are counted, the run stops with one :class:`NonFiniteError` line when skipping cannot help,
and ``--resume`` continues from the last good checkpoint. Random SIGKILLs with exact resume are
``bench/chaos.py`` (its ``--quick`` form runs here: ``test_chaos_bench_quick``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import QUICK_RUN
from vlmrl.config import load_config
from vlmrl.errors import NonFiniteError
from vlmrl.run.metrics import read_metrics
from vlmrl.run.verify import verify_checkpoint
from vlmrl.train.grpo import GRPOTrainer

ROOT = Path(__file__).resolve().parents[1]

#: ``test_letters`` until a flag file exists, then NaN (a reward plugin that breaks mid-run).
NAN_PLUGIN = '''
from pathlib import Path
from vlmrl.rewards import RewardBreakdown, register_reward

FLAG = Path(__file__).with_suffix(".nan")

@register_reward("chaos_letters")
def chaos_letters(completion, sample):
    """Fraction of letters among the first 8 characters; NaN while the flag file exists."""
    if FLAG.exists():
        return RewardBreakdown(total=float("nan"))
    text = (completion or "")[:8]
    return RewardBreakdown(total=sum(c.isalpha() for c in text) / 8)
'''


@pytest.fixture(scope="module")
def nan_plugin(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chaos") / "chaos_reward.py"
    path.write_text(NAN_PLUGIN)
    return path


def _cfg(tiny_dir, run_dir, plugin, *extra):
    return load_config(
        overrides=[
            f"model.path={tiny_dir}",
            f"log.run_dir={run_dir}",
            f"reward.modules=[{plugin}]",
            "reward.weights={chaos_letters: 1.0}",
            *QUICK_RUN,
            "data.eval_size=2",
            "train.save_every=1",
            "train.keep_checkpoints=10",
            *extra,
        ]
    )


def _steps_saved(run_dir: Path) -> list[int]:
    found = (run_dir / "checkpoints").glob("step_*[0-9]")
    return sorted(int(p.name[5:]) for p in found)


def _all_verify(run_dir: Path) -> None:
    for step in _steps_saved(run_dir):
        assert verify_checkpoint(run_dir / "checkpoints" / f"step_{step}") is None, step


def test_nan_reward_skips_stops_and_resume_continues_from_the_last_good(tiny_dir, tmp_path, nan_plugin):
    flag = nan_plugin.with_suffix(".nan")
    flag.unlink(missing_ok=True)
    cfg = _cfg(tiny_dir, tmp_path, nan_plugin, "train.steps=3", "train.nonfinite_patience=2")
    trainer = GRPOTrainer(cfg)

    def on_step(step, metrics):
        if step == 1:
            flag.touch()  # steps 2 and 3 get NaN rewards

    try:
        with pytest.raises(NonFiniteError, match=r"step 3: 2 steps in a row .*reward\(s\) were NaN") as e:
            trainer.train(on_step=on_step)
    finally:
        flag.unlink(missing_ok=True)
    assert str(tmp_path / "checkpoints" / "step_1") in str(e.value)  # names the last good checkpoint
    rows = {r["step"]: r for r in read_metrics(tmp_path)}
    assert rows[1]["guard/skipped_updates"] == 0
    assert rows[2]["guard/skipped_updates"] == 1 and rows[2]["guard/nonfinite_rewards"] == 8
    assert _steps_saved(tmp_path) == [1]  # step 2's skipped update is never checkpointed
    _all_verify(tmp_path)
    resumed = GRPOTrainer(cfg, resume=True)  # the reward is fixed: resume runs steps 2 and 3
    assert resumed.step == 1
    resumed.train()
    rows = {r["step"]: r for r in read_metrics(tmp_path)}
    assert sorted(rows) == [0, 1, 2, 3] and rows[3]["guard/skipped_updates"] == 0
    assert _steps_saved(tmp_path) == [1, 2, 3]
    _all_verify(tmp_path)


def test_nan_loss_and_nan_gradient_skip_the_update_and_are_counted(tiny_dir, tmp_path, nan_plugin):
    trainer = GRPOTrainer(_cfg(tiny_dir, tmp_path, nan_plugin, "train.steps=3"))
    model = trainer.policy.model
    head = model.get_output_embeddings()
    param = next(p for p in model.parameters() if p.requires_grad)

    def nan_logits(module, args, out):  # training forward only: sampling stays finite
        return out * float("nan") if module.training else out

    def snapshot():
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def unchanged(before):
        return all(torch.equal(p, before[n]) for n, p in model.named_parameters())

    before = snapshot()
    hook = head.register_forward_hook(nan_logits)
    m1 = trainer.train_step()  # NaN at the loss
    hook.remove()
    assert m1["guard/skipped_updates"] == 1 and m1["actor/optimizer_steps"] == 0
    assert unchanged(before)
    hook = param.register_hook(lambda g: g * float("nan"))
    m2 = trainer.train_step()  # NaN at the gradient
    hook.remove()
    assert m2["guard/skipped_updates"] == 1 and unchanged(before)
    assert trainer.guard.in_a_row == 2 and not trainer.guard.healthy
    m3 = trainer.train_step()
    assert m3["guard/skipped_updates"] == 0 and not unchanged(before)
    assert trainer.guard.healthy


def test_nan_weights_stop_with_one_line_and_are_never_checkpointed(tiny_dir, tmp_path, nan_plugin):
    trainer = GRPOTrainer(_cfg(tiny_dir, tmp_path, nan_plugin, "train.steps=3"))
    trainer.train_step()
    trainer.save()
    with torch.no_grad():
        for p in trainer.policy.model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"checkpoint step_1 not written: .*NaN.*Last good.*step_1$"):
        trainer.save()  # the same step again, now poisoned: refused, the good step_1 stays
    trainer.step = 2
    with pytest.raises(
        NonFiniteError, match=r"checkpoint step_2 not written: model/model.safetensors: tensor"
    ) as e:
        trainer.save()
    assert str(tmp_path / "checkpoints" / "step_1") in str(e.value)
    with pytest.raises(NonFiniteError, match=r"step 3: sampling met NaN / inf probabilities.*step_1") as e:
        trainer.train_step()
    assert "\n" not in str(e.value)
    assert _steps_saved(tmp_path) == [1]
    _all_verify(tmp_path)


def test_lr_1e6_stops_with_one_line_and_every_checkpoint_is_finite(tiny_dir, tmp_path, nan_plugin):
    cfg = _cfg(tiny_dir, tmp_path, nan_plugin, "train.steps=3", "train.lr=1e6", "train.nonfinite_patience=2")
    with pytest.raises(NonFiniteError, match=r"train\.lr too high") as e:
        GRPOTrainer(cfg).train()
    assert "\n" not in str(e.value)
    assert _steps_saved(tmp_path)  # the steps before the divergence were saved ...
    _all_verify(tmp_path)  # ... and every one of them is finite and verifies
    rows = read_metrics(tmp_path)
    assert sum(r.get("guard/skipped_updates", 0) for r in rows) >= 1


def test_chaos_bench_quick(tmp_path):
    """``python bench/chaos.py --quick``: its fast cases pass through the real command line (the
    kills are the full bench's; ``test_train.py`` SIGKILLs and resumes one run exactly)."""
    out = tmp_path / "chaos.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    failed = [c for c in res["cases"] if not c["passed"]]
    assert failed == [], failed
    assert len(res["cases"]) >= 4 and res["kills"] == res["resumed_exact"] == 0
