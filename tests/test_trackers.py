"""Trackers: a step's logged groups reach TensorBoard (read back from the event file) and wandb (a
fake module in ``sys.modules``: wandb stays an optional extra, imported only when enabled)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from vlmrl.config import load_config
from vlmrl.run.metrics import MetricsLogger


def _rows(root: Path) -> list[dict]:
    """Two groups of two completions, as ``rollouts/step_N.jsonl`` holds them (images relative to root)."""
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (12, 10), (255, 0, 0)).save(root / "images" / "a.png")
    Image.new("RGB", (8, 6), (0, 0, 255)).save(root / "images" / "b.png")
    rows = []
    for g, img in enumerate(("images/a.png", "images/b.png")):
        for k in range(2):
            rows.append(
                {
                    "group": g, "images": [img], "problem": f"How many? <b>{g}</b>", "answer": str(g),
                    "completion": f"<answer>{k}</answer> a|b\nnext", "reward": float(k), "advantage": k - 0.5,
                }
            )  # fmt: skip
    return rows


def test_tensorboard_gets_scalars_completions_text_and_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = tmp_path / "run" / "rollouts"
    rows = _rows(root)
    logger = MetricsLogger(tmp_path / "run", tensorboard=True)
    logger.log(3, {"reward/total": 0.5})
    logger.log_completions(3, rows, root)
    logger.close()
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    assert [e.value for e in acc.Scalars("reward/total")] == [0.5]
    (text,) = acc.Tensors("completions/text_summary")
    md = text.tensor_proto.string_val[0].decode()
    assert text.step == 3 and md.count("\n") == 1 + len(rows)  # header, rule, one line per completion
    assert "&lt;b&gt;0&lt;/b&gt;" in md and "<b>" not in md and "a&#124;b<br>next" in md
    assert "| 0 | How many?" in md and "| -0.500 |" in md
    imgs = {tag: acc.Images(tag) for tag in acc.Tags()["images"]}
    assert sorted(imgs) == ["completions/group_0", "completions/group_1"]
    assert (imgs["completions/group_0"][0].width, imgs["completions/group_0"][0].height) == (12, 10)


class _FakeWandb(types.ModuleType):
    """The slice of wandb's API the logger uses, recording every call."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.inits: list[dict] = []
        self.logged: list[tuple[dict, int]] = []
        outer = self

        class Table:
            def __init__(self, columns):
                self.columns, self.data = columns, []

            def add_data(self, *row):
                assert len(row) == len(self.columns)
                self.data.append(row)

        class Image:
            def __init__(self, path):
                self.path = path

        class Run:
            def log(self, row, step):
                outer.logged.append((row, step))

            def finish(self):
                outer.finished = True

        self.Table, self.Image, self._Run = Table, Image, Run

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return self._Run()


def test_wandb_project_name_tags_and_completions_table(tmp_path, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = load_config(
        overrides=[
            "log.wandb=true",
            "log.wandb_project=vlm-rl",
            "log.wandb_tags=[grpo, count]",
            "log.tensorboard=false",
        ]
    )
    root = tmp_path / "myrun" / "rollouts"
    rows = _rows(root)
    logger = MetricsLogger.from_spec(tmp_path / "myrun", cfg.log, {"x": 1})
    (init,) = fake.inits
    assert init["project"] == "vlm-rl" and init["name"] == "myrun" and init["tags"] == ["grpo", "count"]
    assert init["config"] == {"x": 1}
    logger.log(2, {"reward/total": 1.0})
    logger.log_completions(2, rows, root)
    logger.close()
    (scalars, s1), (tables, s2) = fake.logged
    assert s1 == s2 == 2 and scalars["reward/total"] == 1.0
    table = tables["completions"]
    assert table.columns[:3] == ["step", "group", "image"] and len(table.data) == len(rows)
    first = dict(zip(table.columns, table.data[0], strict=True))
    assert Path(first["image"].path) == root / "images" / "a.png" and first["advantage"] == -0.5
    assert fake.finished


def test_wandb_name_from_config_and_missing_wandb(tmp_path, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = load_config(overrides=["log.wandb=true", "log.wandb_name=ablation-3", "log.tensorboard=false"])
    MetricsLogger.from_spec(tmp_path, cfg.log).close()
    assert fake.inits[0]["name"] == "ablation-3" and fake.inits[0]["tags"] is None
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed: import raises ImportError
    with pytest.raises(RuntimeError, match="wandb is not installed"):
        MetricsLogger.from_spec(tmp_path, cfg.log)
