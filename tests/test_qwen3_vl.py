"""Not only Qwen2.5-VL: a tiny Qwen3-VL (16 px patches, interleaved M-RoPE, DeepStack) goes through
the same loading, rollout, ratio check, vision policy and GRPO step, unchanged."""

from __future__ import annotations

import pytest
import torch

from vlmrl.config import load_config
from vlmrl.data import build_messages, generate
from vlmrl.models import load_policy
from vlmrl.models.vision import apply_vision_policy
from vlmrl.rollout.batch import completion_logprobs, encode_prompts, training_inputs
from vlmrl.rollout.hf_engine import HFEngine
from vlmrl.train.grpo import GRPOTrainer


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    from vlmrl.cli.main import main

    out = tmp_path_factory.mktemp("qwen3") / "model"
    assert main(["make-tiny", str(out), "--arch", "qwen3_vl"]) == 0
    return out


def test_loads_as_qwen3_vl(qwen3_dir):
    policy = load_policy(qwen3_dir)
    assert type(policy.model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(policy.processor).__name__ == "Qwen3VLProcessor"


def test_ratio_is_one_before_the_first_update(qwen3_dir):
    policy = load_policy(qwen3_dir)
    samples = generate("count", 3, seed=0)
    messages = [build_messages(s, "answer") for s in samples]
    enc = encode_prompts(policy.processor, messages, [s.images for s in samples])
    assert enc["image_grid_thw"].tolist() == [[1, 8, 8]] * 3  # 16 px patches
    torch.manual_seed(0)
    batch = HFEngine(policy, max_new_tokens=8).generate(enc, 4)
    inputs, _ = training_inputs(batch, list(range(batch.size)))
    with torch.no_grad():
        logp, _ = completion_logprobs(policy.model.eval(), inputs, batch.completion_ids, 1.0)
    assert ((logp - batch.sampler_logprobs).abs() * batch.completion_mask).max().item() < 1e-3


def test_projector_only_trains_the_deepstack_mergers(qwen3_dir):
    model = load_policy(qwen3_dir).model
    apply_vision_policy(model, "projector_only")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and "visual" in n}
    assert any("deepstack_merger_list" in n for n in trainable)
    assert not any(".blocks." in n for n in trainable)


def test_grpo_step_moves_the_parameters(qwen3_dir, tmp_path, letters_reward):
    cfg = load_config(
        None,
        [
            f"model.path={qwen3_dir}",
            f"log.run_dir={tmp_path}",
            *letters_reward,
            "train.batch_prompts=2",
            "rollout.n=4",
            "rollout.max_new_tokens=6",
            "train.lr=1e-3",
            "train.steps=1",
            "eval.every=0",
            "data.eval_size=2",
            "log.progress=false",
            "log.tensorboard=false",
        ],
    )
    trainer = GRPOTrainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters()}
    metrics = trainer.train_step()
    assert torch.isfinite(torch.tensor(metrics["actor/pg_loss"]))
    moved = [n for n, p in trainer.policy.model.named_parameters() if not torch.equal(before[n], p)]
    assert any("visual" in n for n in moved) and any("language_model" in n for n in moved)
