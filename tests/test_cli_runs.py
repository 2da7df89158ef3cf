"""Runs that neither collide nor hang: an old run in ``log.run_dir`` is refused unless ``--resume``
or ``--overwrite``; a missing local ``model.path`` and an override typo are one line in seconds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmrl.cli.main import main
from vlmrl.config import ConfigError, load_config
from vlmrl.config.checks import RunDirTakenError, claim_run_dir


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _old_run(root: Path) -> Path:
    """A run dir holding an earlier run's files, plus a file of the user's that vlmrl never wrote."""
    (root / "checkpoints" / "step_2").mkdir(parents=True)
    (root / "tb").mkdir()
    (root / "rollouts").mkdir()
    (root / "report").mkdir()
    for name in ("metrics.jsonl", "config.yaml", "report.html", "notes.txt"):
        (root / name).write_text("old\n")
    return root


class _Started(Exception):
    """Raised by a stand-in trainer: the CLI got past its checks."""


@pytest.fixture()
def no_trainer(monkeypatch):
    import vlmrl.train.grpo as grpo

    def fake(cfg, resume=False):
        raise _Started(resume)

    monkeypatch.setattr(grpo, "GRPOTrainer", fake)


def test_an_old_run_is_refused_in_one_line(tmp_path, capsys, no_trainer):
    run = _old_run(tmp_path / "run")
    assert main(["train", f"log.run_dir={run}", f"model.path={tmp_path}"]) == 2
    line = _one_line(capsys)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert (run / "metrics.jsonl").read_text() == "old\n"  # nothing touched


def test_overwrite_removes_only_vlmrls_files(tmp_path, no_trainer):
    run = _old_run(tmp_path / "run")
    with pytest.raises(_Started):
        main(["train", f"log.run_dir={run}", f"model.path={tmp_path}", "--overwrite"])
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_resume_keeps_the_old_run_and_flags_conflict(tmp_path, capsys, no_trainer):
    run = _old_run(tmp_path / "run")
    with pytest.raises(_Started) as started:
        main(["train", f"log.run_dir={run}", f"model.path={tmp_path}", "--resume"])
    assert started.value.args == (True,) and (run / "metrics.jsonl").exists()
    assert main(["train", f"log.run_dir={run}", f"model.path={tmp_path}", "--resume", "--overwrite"]) == 2
    assert "contradict" in _one_line(capsys)


def test_a_fresh_or_unrelated_folder_is_free(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "config.yaml").write_text("a config a user keeps here")
    assert claim_run_dir(tmp_path) == []
    assert claim_run_dir(tmp_path / "new") == []
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(RunDirTakenError, match=r"metrics\.jsonl"):
        claim_run_dir(tmp_path)


def test_missing_local_model_path_is_one_fast_line(tmp_path):
    """``./nope/model`` is a path (not a hub id ``owner/name``): refused before transformers loads."""
    code = (
        "import sys\nfrom vlmrl.cli.main import main\n"
        "rc = main(['train', 'model.path=./nope/model'])\n"
        "print('transformers' in sys.modules, rc)\n"
    )
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert time.perf_counter() - t0 < 30
    assert res.stdout.split() == ["False", "2"]
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "vlmrl train: error: model.path: './nope/model' does not exist"
    )
    assert not (tmp_path / "runs").exists()  # nothing written for a run that cannot start


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("algo.clip_hgih=0.3", "'algo.clip_high'"),
        ("lgo.kl_coef=0", "'algo.kl_coef'"),
        ("log.wandb_projct=x", "'log.wandb_project'"),
    ],
)
def test_override_typo_is_blamed_on_the_command_line(tmp_path, override, suggestion):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  steps: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg, [override])
    msg = str(e.value)
    assert msg.startswith(f"command line {override!r}: unknown key") and "c.yaml" not in msg
    assert f"did you mean {suggestion}" in msg


def test_yaml_typo_suggests_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("algo:\n  clip_hihg: 0.3\n")
    with pytest.raises(
        ConfigError, match=r"c\.yaml: unknown key 'algo.clip_hihg' \(did you mean 'clip_high'\?\)"
    ):
        load_config(cfg)


def test_gen_train_refuses_an_old_run_too(tmp_path, capsys):
    """`vlmrl gen train` claims its run dir like `vlmrl train`: no second run appended to the first."""
    run = _old_run(tmp_path / "gen_run")
    assert main(["gen", "train", f"log.run_dir={run}"]) == 2
    line = _one_line(capsys)
    assert "already holds a run" in line and "--overwrite" in line
    assert (run / "metrics.jsonl").read_text() == "old\n"
