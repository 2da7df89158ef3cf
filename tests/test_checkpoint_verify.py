"""Verified checkpoints without a model: what is recorded, what a resume refuses, and the fallback.

Each corruption below is one an operator met (issue: "a corrupt checkpoint never falls back"):
before verification each gave a traceback that never named the file, or loaded NaN silently.
"""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vlmrl.errors import NonFiniteError, StorageError, UserError
from vlmrl.run import checkpoint as ckpt_mod
from vlmrl.run.checkpoint import load_checkpoint, prune_checkpoints, write_checkpoint
from vlmrl.run.metrics import MetricsLogger, read_metrics
from vlmrl.run.verify import resume_checkpoint, usable_checkpoint, verify_checkpoint


def _model_and_opt(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(64, 256)  # 64 KiB of fp32 weights: room for the 64 KB NaN overwrite
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 64)).sum().backward()
    opt.step()
    return model, opt


def _save(run_dir: Path, step: int, model: torch.nn.Module, opt) -> Path:
    def save_model(tmp: Path) -> None:
        (tmp / "model").mkdir()
        save_file(
            {k: v.detach().contiguous() for k, v in model.state_dict().items()},
            tmp / "model" / "model.safetensors",
        )

    return write_checkpoint(
        run_dir / "checkpoints" / f"step_{step}", save_model, opt, {"step": step, "data_position": step}
    )


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    model, opt = _model_and_opt()
    _save(tmp_path, 2, model, opt)
    _save(tmp_path, 4, model, opt)
    return tmp_path


def test_state_json_records_size_checksum_and_finiteness(run_dir):
    state = json.loads((run_dir / "checkpoints" / "step_4" / "state.json").read_text())
    assert state["finite"] is True and state["step"] == 4
    weights = run_dir / "checkpoints" / "step_4" / "model" / "model.safetensors"
    assert state["files"]["model/model.safetensors"]["size"] == weights.stat().st_size
    assert {"optimizer.safetensors", "optimizer.json", "rng.safetensors"} <= set(state["files"])
    assert verify_checkpoint(run_dir / "checkpoints" / "step_4") is None


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _garbage_header(p: Path) -> None:
    p.write_bytes(b"\xff" * 16 + p.read_bytes()[16:])


def _nan_bytes(p: Path) -> None:
    """64 KB of float32 NaN written over the tensor data (the size stays the same)."""
    raw = bytearray(p.read_bytes())
    start = len(raw) - 65536
    raw[start:] = b"\x00\x00\xc0\x7f" * (65536 // 4)
    p.write_bytes(bytes(raw))


CORRUPTIONS = {
    "truncated weights": ("model/model.safetensors", _truncate),
    "garbage header": ("model/model.safetensors", _garbage_header),
    "64 KB of NaN in the weights": ("model/model.safetensors", _nan_bytes),
    "empty optimizer": ("optimizer.safetensors", lambda p: p.write_bytes(b"")),
    "broken state.json": ("state.json", lambda p: p.write_text('{"step": 4, "data_pos')),
    "missing rng": ("rng.safetensors", lambda p: p.unlink()),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_resume_falls_back_past_a_corrupt_checkpoint_naming_the_file(run_dir, case, caplog):
    rel, corrupt = CORRUPTIONS[case]
    bad = run_dir / "checkpoints" / "step_4" / rel
    corrupt(bad)
    problem = verify_checkpoint(run_dir / "checkpoints" / "step_4")
    assert problem is not None and str(bad) in problem, problem
    with caplog.at_level(logging.WARNING):
        chosen = resume_checkpoint(run_dir)
    assert chosen == run_dir / "checkpoints" / "step_2"  # the previous good one, intact
    assert str(bad) in caplog.text  # the warning names the bad file
    assert (run_dir / "checkpoints" / "step_4.bad").is_dir()  # set aside, not deleted
    _, opt = _model_and_opt(seed=1)
    assert load_checkpoint(chosen, opt)["step"] == 2
    prune_checkpoints(run_dir, keep=1)  # pruning never reaches past the good one for the bad one
    assert (run_dir / "checkpoints" / "step_2").is_dir()


def test_legacy_poisoned_checkpoint_without_checksums_is_found_by_its_nans(run_dir, caplog):
    """A checkpoint the old code wrote after a NaN update: no ``files`` record, every weight NaN."""
    step4 = run_dir / "checkpoints" / "step_4"
    state = json.loads((step4 / "state.json").read_text())
    (step4 / "state.json").write_text(json.dumps({"step": 4, "data_position": state["data_position"]}))
    assert verify_checkpoint(step4) is None  # structurally fine and finite: accepted
    weights = step4 / "model" / "model.safetensors"
    save_file({"weight": torch.full((256, 64), float("nan")), "bias": torch.zeros(256)}, weights)
    with caplog.at_level(logging.WARNING):
        assert usable_checkpoint(run_dir) == run_dir / "checkpoints" / "step_2"
    assert "'weight' holds NaN" in caplog.text and str(weights) in caplog.text


def test_no_usable_checkpoint_is_one_error_listing_each(run_dir):
    for step in (2, 4):
        _truncate(run_dir / "checkpoints" / f"step_{step}" / "optimizer.safetensors")
    with pytest.raises(UserError, match=r"no usable checkpoint.*step_4: .*optimizer.safetensors.*step_2: "):
        usable_checkpoint(run_dir)


@pytest.mark.parametrize("where", ["weights", "optimizer"])
def test_nonfinite_state_is_never_checkpointed(run_dir, where):
    model, opt = _model_and_opt()
    with torch.no_grad():
        if where == "weights":
            model.weight[0, 0] = float("nan")
        else:
            next(iter(opt.state.values()))["exp_avg"][0] = float("inf")
    with pytest.raises(NonFiniteError, match="holds NaN or inf"):
        _save(run_dir, 6, model, opt)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_2", "step_4"]  # no .tmp


def test_full_disk_is_one_error_naming_the_file_and_keeps_the_last_checkpoint(run_dir, monkeypatch):
    def no_space(tensors, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ckpt_mod, "save_file", no_space)
    model, opt = _model_and_opt()
    with pytest.raises(
        StorageError, match=r"checkpoint step_6 not written: .*optimizer.safetensors: No space"
    ) as e:
        _save(run_dir, 6, model, opt)
    assert e.value.errno == errno.ENOSPC
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_2", "step_4"]
    assert verify_checkpoint(run_dir / "checkpoints" / "step_4") is None


def test_checkpoints_being_a_file_is_one_error(tmp_path):
    (tmp_path / "checkpoints").write_text("not a folder")
    model, opt = _model_and_opt()
    with pytest.raises(StorageError, match=r"checkpoints: .*checkpoints: is a file"):
        _save(tmp_path, 1, model, opt)


def test_load_errors_name_the_file(run_dir):
    step4 = run_dir / "checkpoints" / "step_4"
    _, opt = _model_and_opt()
    (step4 / "optimizer.json").write_text("{")
    with pytest.raises(UserError, match=r"optimizer.json: not a readable optimizer.json"):
        load_checkpoint(step4, opt)
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})
    (step4 / "optimizer.json").write_bytes(
        (run_dir / "checkpoints" / "step_2" / "optimizer.json").read_bytes()
    )
    with pytest.raises(UserError, match=r"optimizer.json: 1 parameter groups, this run's optimizer has 2"):
        load_checkpoint(step4, opt)


def test_torn_metrics_line_is_dropped_on_resume_with_a_warning(tmp_path, caplog):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in (1, 2, 3):
        log.log(step, {"reward/total": 0.5})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "reward/to')  # a kill in the middle of a write
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]  # readers skip it
    with caplog.at_level(logging.WARNING):
        log.truncate_after(2)
    assert "metrics.jsonl: line 4" in caplog.text
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2
    log.log(3, {"reward/total": 0.25})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_metrics_on_a_full_disk_is_one_error_naming_the_file(tmp_path, monkeypatch):
    log = MetricsLogger(tmp_path, tensorboard=False)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "open", full)
    with pytest.raises(StorageError, match=r"logging step 1: .*metrics.jsonl: No space left on device"):
        log.log(1, {"x": 1.0})
