"""Faults an operator meets before the first step, each one line naming the key, file or row:
the run directory (a file, read-only, a full disk), the config (duplicate keys, binary YAML, bad
values) and the dataset (an 8000×8 image, bad UTF-8, a NUL in an image path). No model loads."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vlmrl.cli.main import main
from vlmrl.config import ConfigError, checks, load_config
from vlmrl.data import load_dataset
from vlmrl.data.loading import DatasetError
from vlmrl.errors import StorageError


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "text, message",
    [
        (b"train:\n  steps: 3\n  steps: 0\n", r"line 3: duplicate key 'steps' \(first on line 2\)"),
        (b"train: {lr: 1}\ntrain: {lr: 2}\n", r"line 2: duplicate key 'train'"),
        (bytes(range(256)), r"not a UTF-8 text file"),
        (b"train:\n  lr: 1\x00\n", r"NUL byte"),
    ],
    ids=["dup-nested", "dup-top", "binary", "nul"],
)
def test_yaml_strictness_names_the_file(tmp_path, capsys, text, message):
    p = tmp_path / "cfg.yaml"
    p.write_bytes(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(p)
    assert str(p) in str(e.value)
    assert main(["train", str(p)]) != 0
    assert _one_line(capsys).startswith("vlmrl train: error:")


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=-1", "train.lr"),
        ("train.lr=0", "train.lr"),
        ("train.lr=.inf", "train.lr"),
        ("sft.lr=-0.1", "sft.lr"),
        ("train.grad_clip=-1", "train.grad_clip"),
        ("train.save_every=-2", "train.save_every"),
        ("train.nonfinite_patience=0", "train.nonfinite_patience"),
        ("data.image_bounds=crop", "data.image_bounds"),
    ],
)
def test_value_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key}"):
        load_config(overrides=[override])


def test_run_dir_that_is_a_file_or_holds_a_file_for_checkpoints(tmp_path):
    f = tmp_path / "run"
    f.write_text("x")
    with pytest.raises(StorageError, match=r"log.run_dir: .*run: is a file; expected a folder"):
        checks.check_run_dir(f)
    d = tmp_path / "run2"
    (d / "checkpoints").parent.mkdir()
    (d / "checkpoints").write_text("x")
    with pytest.raises(StorageError, match=r"checkpoints: is a file"):
        checks.check_run_dir(d)


def test_read_only_run_dir_simulated(tmp_path, monkeypatch):
    """Simulated: tests run as root (permissions do not bind) and cannot mount a filesystem."""

    def erofs(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "write_bytes", erofs)
    with pytest.raises(StorageError, match=r"log.run_dir is not writable: .*: Read-only file system") as e:
        checks.check_run_dir(tmp_path / "run")
    assert e.value.errno == errno.EROFS


def test_too_little_free_space_for_a_checkpoint_simulated(tmp_path, tiny_dir, monkeypatch):
    weights = checks.weights_bytes(str(tiny_dir))
    assert weights > 0
    real = shutil.disk_usage

    def nearly_full(path):
        return real(path)._replace(free=weights)  # less than 3× the weights

    monkeypatch.setattr(checks.shutil, "disk_usage", nearly_full)
    with pytest.raises(StorageError, match=r"MiB free, a checkpoint needs about") as e:
        checks.check_run_dir(tmp_path / "run", str(tiny_dir))
    assert e.value.errno == errno.ENOSPC
    monkeypatch.setattr(checks.shutil, "disk_usage", real)
    assert checks.check_run_dir(tmp_path / "run", str(tiny_dir)).is_dir()


def test_cli_refuses_a_run_dir_file_before_any_model_work(tmp_path, capsys):
    f = tmp_path / "run"
    f.write_text("x")
    assert main(["train", f"log.run_dir={f}", f"model.path={tmp_path}"]) != 0
    assert "is a file" in _one_line(capsys)


def _dataset(tmp_path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    Image.new("RGB", size).save(tmp_path / "odd.png")
    rows = [{"images": [f], "problem": "<image>n?", "answer": "1"} for f in ("ok.png", "ok.png", "odd.png")]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("size", [(8000, 8), (8, 8000), (2, 2)])
def test_out_of_bounds_images_are_rejected_naming_the_row_or_resized(tmp_path, size):
    path = _dataset(tmp_path, size)
    where = rf"row 2, field 'images'\[0\]: image {size[0]}×{size[1]} is out of bounds"
    with pytest.raises(DatasetError, match=where):
        load_dataset(path)
    fixed = load_dataset(path, image_bounds="resize")[2].images[0]
    w, h = fixed.size
    assert max(w, h) / min(w, h) <= 200 and min(w, h) >= 4


def test_resized_long_image_passes_the_processor(tmp_path, tiny_policy):
    from vlmrl.data import build_messages
    from vlmrl.rollout.batch import encode_prompts

    sample = load_dataset(_dataset(tmp_path, (8000, 8)), image_bounds="resize")[2]
    enc = encode_prompts(tiny_policy.processor, [build_messages(sample, "answer")], [sample.images])
    assert enc["image_grid_thw"].shape[0] == 1


def test_bad_utf8_and_nul_in_image_path_name_the_row(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    good = json.dumps({"images": ["ok.png"], "problem": "<image>a", "answer": "1"}).encode()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(good + b"\n" + b'{"images": ["ok.png"], "problem": "\xff", "answer": "1"}\n')
    with pytest.raises(DatasetError, match=r"row 1 \(line 2\): not UTF-8 text"):
        load_dataset(bad)
    nul = tmp_path / "nul.jsonl"
    nul.write_text(json.dumps({"images": ["ok\u0000.png"], "problem": "<image>a", "answer": "1"}) + "\n")
    with pytest.raises(DatasetError, match=r"row 0, field 'images'.*NUL byte"):
        load_dataset(nul)
