"""Flow-GRPO / DDPO training (``vlmrl.gen.trainer``) on a small generator: ratio 1 on the first
pass, the right parameters move, KL 0 before the first update, exact resume, DDPO's tracker,
config errors, and the run directory (metrics, sample grids, report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vlmrl.config.load import ConfigError
from vlmrl.gen.config import load_gen_config
from vlmrl.gen.model import load_flow_policy
from vlmrl.gen.trainer import GenGRPOTrainer, resolve_prompts


def _cfg(model: Path, run: Path, *extra: str):
    return load_gen_config(
        overrides=[
            f"model.path={model}",
            f"log.run_dir={run}",
            "train.steps=2",
            "train.prompts_per_step=2",
            "algo.group_size=4",
            "sample.steps=4",
            "sample.eval_steps=4",
            "eval.samples_per_prompt=2",
            "eval.grid_per_prompt=2",
            "eval.every=1",
            "train.lr=1e-3",
            "log.progress=false",
            *extra,
        ]
    )


@pytest.mark.parametrize("algo", ["flow_grpo", "ddpo"])
def test_first_pass_ratio_is_one_and_the_update_moves_the_policy_not_the_reference(
    small_model, tmp_path, algo
):
    trainer = GenGRPOTrainer(_cfg(small_model, tmp_path, f"algo.name={algo}", "train.epochs=2"))
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    m = trainer.train_step()
    # the chain's log-probs recomputed under the same weights (each image at its own step)
    assert m["actor/ratio_mean_first_pass"] == pytest.approx(1.0, abs=1e-6)
    assert m["actor/ratio_max_first_pass"] == pytest.approx(1.0, abs=1e-6)
    assert m["actor/kl_ref"] >= 0.0
    moved = [k for k, v in trainer.policy.state_dict().items() if not torch.equal(v, before[k])]
    assert len(moved) > 0.9 * len(before)
    assert all(torch.equal(v, before[k]) for k, v in trainer.ref.state_dict().items())  # frozen
    for key in ("reward/total", "reward/count", "reward/colour", "reward/position", "watch/saturation",
                "watch/ref_distance", "adv/abs_mean", "actor/clipfrac_low", "actor/grad_norm"):  # fmt: skip
        assert key in m, key


def test_kl_is_zero_before_the_first_update_and_off_without_a_reference(small_model, tmp_path):
    m = GenGRPOTrainer(_cfg(small_model, tmp_path / "a")).train_step()
    # one pass: every step is scored before the optimizer moves
    assert m["actor/kl_ref"] == pytest.approx(0.0, abs=1e-10)
    trainer = GenGRPOTrainer(_cfg(small_model, tmp_path / "b", "algo.kl_coef=0"))
    assert trainer.ref is None and "actor/kl_ref" not in trainer.train_step()


def test_resume_continues_exactly(small_model, tmp_path):
    straight = GenGRPOTrainer(_cfg(small_model, tmp_path / "s", "algo.name=ddpo", "train.steps=3")).train()
    run = tmp_path / "r"
    GenGRPOTrainer(_cfg(small_model, run, "algo.name=ddpo", "train.steps=2", "train.save_every=1")).train()
    state = json.loads((run / "checkpoints" / "step_2" / "state.json").read_text())
    assert state["step"] == 2 and sum(len(v) for v in state["tracker"]["stats"].values()) == 16
    resumed = GenGRPOTrainer(_cfg(small_model, run, "algo.name=ddpo", "train.steps=3"), resume=True).train()
    assert [r["step"] for r in resumed] == [3]
    for key in ("reward/total", "actor/loss", "actor/grad_norm", "eval/reward"):
        assert resumed[-1][key] == pytest.approx(straight[-1][key], abs=1e-6), key
    a = load_flow_policy(tmp_path / "s" / "checkpoints" / "step_3" / "model").state_dict()
    b = load_flow_policy(run / "checkpoints" / "step_3" / "model").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]


def test_run_directory_has_metrics_grids_and_report(small_model, tmp_path):
    GenGRPOTrainer(_cfg(small_model, tmp_path, "train.steps=1")).train()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and "eval/reward" in rows[0] and "eval/watch/ink" in rows[0]
    assert (tmp_path / "samples" / "step_0.png").is_file() and (tmp_path / "samples" / "step_1.png").is_file()
    html = (tmp_path / "report.html").read_text()
    assert "samples/step_1.png" in html and "eval/reward" in html


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("algo.name=ppo", "algo.name"),
        ("sample.sampler=euler", "sample.sampler"),
        ("algo.group_size=1", "algo.group_size"),
        ("algo.clip_range=0", "algo.clip_range"),
        ("sample.noise_level=0", "sample.noise_level"),
        ("algo.timestep_fraction=1.5", "algo.timestep_fraction"),
        ("trian.steps=3", "trian"),
        ("sample.stochastic_steps=11", "sample.stochastic_steps"),  # more than the 10 steps
        ("model.guidance_scale=0.5", "model.guidance_scale"),
        ("model.dtype=int8", "model.dtype"),
    ],
)
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_gen_config(overrides=[override])


def test_prompt_specs():
    assert len(resolve_prompts("train")) == 14 and len(resolve_prompts("held_out")) == 4
    assert [p.text for p in resolve_prompts("2 red circles on the left; 1 blue circle on the right")] == [
        "2 red circles on the left",
        "1 blue circle on the right",
    ]
    with pytest.raises(ValueError, match="purple"):
        resolve_prompts("2 purple circles on the left")


def test_cli_gen_train_and_a_bad_config_in_one_line(small_model, tmp_path, capsys):
    from vlmrl.cli.main import main

    run = tmp_path / "cli"
    args = [
        f"model.path={small_model}", f"log.run_dir={run}", "train.steps=1", "train.prompts_per_step=1",
        "algo.group_size=2", "sample.steps=2", "sample.eval_steps=2", "eval.samples_per_prompt=1",
    ]  # fmt: skip
    assert main(["gen", "train", *args]) == 0
    out = capsys.readouterr().out
    assert "held-out reward" in out and f"run directory: {run}" in out
    assert (run / "checkpoints" / "step_1" / "model" / "model.safetensors").is_file()
    assert main(["gen", "train", *args, "train.steps=2", "--resume"]) == 0  # continues from step 1
    assert (run / "checkpoints" / "step_2").is_dir()
    assert main(["gen", "train", f"model.path={tmp_path / 'nope'}"]) == 2
    assert "nope" in capsys.readouterr().err


def test_ddim_needs_a_stochastic_step():
    with pytest.raises(ConfigError, match=r"sample\.steps"):
        load_gen_config(overrides=["algo.name=ddpo", "sample.steps=1"])
    assert load_gen_config(overrides=["algo.name=ddpo", "sample.steps=2"]).sample.steps == 2
