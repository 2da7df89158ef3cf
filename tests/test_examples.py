"""The shipped example configs (Qwen2.5-VL 3B/7B and Qwen3-VL on geometry3k, grounding) load,
validate, and run one real GRPO step offline once pointed at the tiny model and a local parquet
written in geometry3k's own schema (``images`` as HF image structs of PNG bytes, ``problem`` with
``<image>``, ``answer``)."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from vlmrl.config import load_config
from vlmrl.run.metrics import read_metrics
from vlmrl.train.grpo import GRPOTrainer

_ALL = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))
EXAMPLES = [p for p in _ALL if not p.stem.startswith("gen_")]  # VLM recipes (vlmrl train)
GEN_EXAMPLES = [p for p in _ALL if p.stem.startswith("gen_")]  # generator recipes (vlmrl gen train)


def _png(i: int) -> bytes:
    img = Image.new("RGB", (96 + 8 * i, 80), "white")
    ImageDraw.Draw(img).polygon([(10, 70), (80, 70), (10 + 5 * i, 10)], outline="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def geo3k_parquet(tmp_path_factory) -> Path:
    """Four rows as hiyouga/geometry3k stores them (plus a box split for the grounding example)."""
    d = tmp_path_factory.mktemp("geo3k")
    image_t = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    rows = {
        "images": pa.array([[{"bytes": _png(i), "path": None}] for i in range(4)], type=image_t),
        "problem": [f"<image>Find x. The side is {i + 3}." for i in range(4)],
        "answer": [str(i + 3) for i in range(4)],
    }
    pq.write_table(pa.table(rows), d / "geo3k.parquet")
    box = dict(rows, answer=["[10, 10, 60, 70]"] * 4, answer_type=["box"] * 4)
    pq.write_table(pa.table(box), d / "boxes.parquet")
    return d


def test_examples_exist():
    names = {p.stem for p in EXAMPLES}
    want = {"qwen2_5_vl_3b_geo3k", "qwen2_5_vl_7b_geo3k", "qwen3_vl_4b_geo3k", "qwen2_5_vl_3b_grounding"}
    assert want <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_validates(path):
    cfg = load_config(path)
    assert cfg.model.device == "cuda" and cfg.model.dtype == "bfloat16"
    assert cfg.rollout.engine == "vllm"
    if "geo3k" in path.stem:  # EasyR1 parity
        assert cfg.reward.weights == {"accuracy": 0.9, "format": 0.1}
        assert (cfg.rollout.n, cfg.algo.clip_low, cfg.algo.clip_high) == (5, 0.2, 0.28)
        assert (cfg.algo.kl_coef, cfg.algo.kl_estimator, cfg.data.template) == (0.01, "k3", "math")


@pytest.mark.parametrize("path", GEN_EXAMPLES, ids=lambda p: p.stem)
def test_gen_example_config_validates(path):
    from vlmrl.gen.config import load_gen_config

    cfg = load_gen_config(path)
    assert cfg.algo.name == "flow_grpo"
    if "sd35" in path.stem:  # a hub pipeline with LoRA and guidance (gen/hub.py)
        assert cfg.model.path.startswith("stabilityai/") and cfg.model.lora_r > 0
        assert cfg.model.guidance_scale > 1 and cfg.sample.shift > 1
    else:
        assert cfg.model.path == "runs/gen_base"


@pytest.mark.parametrize("stem", ["qwen2_5_vl_3b_geo3k", "qwen2_5_vl_3b_grounding"])
def test_example_runs_offline_on_tiny_model(stem, tiny_dir, geo3k_parquet, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])  # the grounding template path is relative to the repo
    data = geo3k_parquet / ("boxes.parquet" if "grounding" in stem else "geo3k.parquet")
    cfg = load_config(
        Path("examples") / f"{stem}.yaml",
        [
            f"model.path={tiny_dir}",
            "model.device=cpu",
            "model.dtype=float32",
            "rollout.engine=hf",
            f"data.path={data}",
            f"data.eval_path={data}",
            "data.eval_size=2",
            "train.batch_prompts=2",
            "train.minibatches=2",
            "train.micro_batch=2",
            "train.steps=1",
            "rollout.n=2",
            "rollout.max_new_tokens=8",
            "eval.max_new_tokens=4",
            f"log.run_dir={tmp_path / 'run'}",
            "log.progress=false",
            "log.tensorboard=false",
        ],
    )
    trainer = GRPOTrainer(cfg)
    assert trainer.ref is not None  # kl_coef 1e-2: the reference is loaded
    trainer.train()
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [0, 1]
    last = rows[-1]
    assert last["actor/optimizer_steps"] == 2  # EasyR1's minibatching: 2 updates per rollout batch
    assert "actor/kl_ref" in last and "eval/accuracy" in last
    assert (tmp_path / "run" / "checkpoints" / "step_1" / "model" / "config.json").exists()


def test_pixel_bounds_reach_the_processor(tiny_dir):
    """model.min_pixels / max_pixels set the area the processor feeds the tower (EasyR1's knobs)."""
    from vlmrl.models import load_policy

    img = Image.new("RGB", (112, 112), "white")

    def grid(**kw) -> list:
        proc = load_policy(tiny_dir, **kw).processor.image_processor
        return proc(images=[img], return_tensors="pt")["image_grid_thw"].tolist()

    assert grid() == [[1, 8, 8]]  # the tiny processor's own bounds: 112 px → 8×8 patches
    assert grid(max_pixels=56 * 56) == [[1, 4, 4]]
    assert grid(min_pixels=224 * 224, max_pixels=224 * 224) == [[1, 16, 16]]
