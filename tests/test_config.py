"""Config errors name the key and the allowed values; overrides and YAML round-trip."""

from __future__ import annotations

import pytest

from vlmrl.config import ConfigError, load_config, save_config


def test_defaults_and_dotted_overrides():
    cfg = load_config(overrides=["algo.clip_high=0.28", "train.lr=1e-4", "data.task_kwargs={max_count: 6}"])
    assert cfg.algo.clip_high == 0.28
    assert cfg.train.lr == 1e-4  # YAML reads "1e-4" as a string; we accept the number people mean
    assert cfg.data.task_kwargs == {"max_count": 6}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algo.foo=1", r"unknown key 'algo\.foo'; allowed under algo: \[.*'clip_high'"),
        (
            "algo.loss=ppo",
            r"algo\.loss: 'ppo' is not allowed; choose one of "
            r"\['ppo_clip', 'dual_clip', 'gspo', 'sapo', 'cispo'\]",
        ),
        ("train.steps=abc", r"train\.steps: expected int, got str 'abc'"),
        ("train.steps=1.5", r"train\.steps: expected int"),
        ("log.tensorboard=maybe", r"log\.tensorboard: expected true/false"),
        ("rollout.n=0", r"rollout\.n: must be ≥ 1"),
        ("rollout.temperature=0", r"rollout\.temperature: must be > 0"),
        ("vision.train=half", r"vision\.train: 'half' is not allowed; choose one of"),
        ("nosection.x=1", r"unknown key 'nosection'"),
        ("train.minibatches=3", r"train\.minibatches: 3 must divide"),
        ("novalue", r"expected KEY=VALUE"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algo:\n  clip_low: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: malformed YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("algo:\n  kl_coef: high\n")
    with pytest.raises(ConfigError, match=r"wrong\.yaml: algo\.kl_coef: expected a number, got 'high'"):
        load_config(wrong)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_round_trip(tmp_path):
    cfg = load_config(overrides=["algo.advantage=rloo", "reward.weights={accuracy: 1.0}"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg


def test_cli_reports_config_errors_in_one_line(capsys):
    from vlmrl.cli.main import main

    assert main(["train", "algo.loss=nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "algo.loss" in err[0] and "ppo_clip" in err[0]


def test_every_command_has_help(capsys):
    from vlmrl.cli.main import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in commands:
        with pytest.raises(SystemExit) as e:
            parser.parse_args([name, "--help"])
        assert e.value.code == 0
        assert "usage" in capsys.readouterr().out


# --------------------------------------------------------------------------- one source for each fact


def test_algo_choices_are_the_registries_names():
    """The config accepts exactly what the code implements (it refused ``reinforce_pp_baseline``)."""
    from vlmrl.algos import ADVANTAGE_ESTIMATORS, AGGREGATORS, KL_ESTIMATORS, POLICY_LOSSES
    from vlmrl.config.schema import CHOICES

    assert set(CHOICES["algo.advantage"]) == {str(k) for k in ADVANTAGE_ESTIMATORS}
    assert set(CHOICES["algo.loss"]) == {str(k) for k in POLICY_LOSSES}
    assert set(CHOICES["algo.loss_agg"]) == {str(k) for k in AGGREGATORS}
    assert (
        set(CHOICES["algo.kl_estimator"])
        == set(CHOICES["algo.papo_kl_estimator"])
        == {str(k) for k in KL_ESTIMATORS}
    )
    assert (
        load_config(overrides=["algo.advantage=reinforce_pp_baseline"]).algo.advantage
        == "reinforce_pp_baseline"
    )


def test_each_loss_brings_its_own_clip_defaults():
    """GSPO loaded with PPO's 0.2, which its own docstring says never clips a sequence ratio."""
    gspo = load_config(overrides=["algo.loss=gspo"]).algo
    assert (gspo.clip_low, gspo.clip_high, gspo.dual_clip_c) == (3e-4, 4e-4, None)
    ppo = load_config().algo
    assert (ppo.clip_low, ppo.clip_high, ppo.dual_clip_c) == (0.2, 0.2, None)
    dual = load_config(overrides=["algo.loss=dual_clip"]).algo
    assert dual.dual_clip_c == 3.0
    assert load_config(overrides=["algo.clip_high=0.28"]).algo.clip_high == 0.28


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algo.clip_low=1.5"], r"algo.loss=ppo_clip: clip_low must be in \[0, 1\), got 1.5"),
        (["algo.loss=gspo", "algo.clip_high=0.2"], r"algo.loss=gspo: clip_high must be in \[0, 0.01\]"),
        (["algo.dual_clip_c=3"], "dual_clip_c applies to the dual_clip loss only"),
        (["algo.loss=dual_clip", "algo.dual_clip_c=0.5"], "dual_clip_c must be > 1"),
    ],
)
def test_clip_values_outside_the_loss_range_fail_at_load_time(overrides, message):
    """``algo.clip_low=1.5`` loaded and failed only in the first update; ``dual_clip_c`` was ignored."""
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)
