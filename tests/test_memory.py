"""Memory options on the tiny model: LoRA on the language model (which parameters train, the
reference as the adapter-free policy, merged checkpoints and exact resume), gradient
checkpointing (same gradients), bf16 weights with float32 loss math."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import QUICK_RUN
from vlmrl.config import load_config
from vlmrl.models import load_policy
from vlmrl.models.lora import add_lm_lora
from vlmrl.models.vision import apply_vision_policy
from vlmrl.rollout.batch import completion_logprobs, training_inputs
from vlmrl.train.grpo import GRPOTrainer
from vlmrl.train.memory import (
    checkpointing_on,
    enable_gradient_checkpointing,
    needs_reference_copy,
    reference_logprobs_of,
)
from vlmrl.train.update import reference_logprobs


def _cfg(tiny_dir, run_dir, plugin, *extra):
    return load_config(
        overrides=[
            f"model.path={tiny_dir}",
            f"log.run_dir={run_dir}",
            f"reward.modules=[{plugin}]",
            "reward.weights={test_letters: 1.0}",
            *QUICK_RUN,
            "train.lr=1e-2",
            *extra,
        ]
    )


@pytest.mark.parametrize("vision", ["frozen", "lora", "full"])
def test_lora_trains_the_adapters_and_what_vision_train_says(tiny_dir, tmp_path, plugin, vision):
    cfg = _cfg(tiny_dir, tmp_path, plugin, "model.lora.r=4", f"vision.train={vision}", "train.steps=1")
    trainer = GRPOTrainer(cfg)
    model = trainer.policy.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lm = {n for n in trainable if not n.startswith("model.visual.")}
    tower = trainable - lm
    # the language model: exactly the adapters of its 7 linear layers × 4 layers (A and B each)
    assert lm and all(".lora_A." in n or ".lora_B." in n for n in lm)
    assert len(lm) == 2 * 7 * 4
    assert not any("lm_head" in n or "embed_tokens" in n for n in trainable)
    if vision == "frozen":
        assert tower == set()
    elif vision == "lora":
        assert tower and all("lora_" in n for n in tower)
    else:  # full: the tower's own weights train beside the LM adapters
        assert any("lora_" not in n for n in tower)
    if vision != "lora":
        return
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = trainer.train_step()
    assert metrics["reward/std_in_group"] > 0
    # lora_B starts at 0, so lora_A gets no gradient in the first step; B moves, base weights never
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= trainable
    assert all(".lora_B." in n for n in moved)


def _rollouts(trainer, prompts: int, n: int):
    from vlmrl.data import build_messages
    from vlmrl.rollout.batch import encode_prompts

    samples = trainer.stream.next(prompts)
    enc = encode_prompts(
        trainer.policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )
    return trainer.engine.generate(enc, n)


def _perturb_adapters(model, scale=0.05):
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def test_lora_reference_is_the_base_model(tiny_dir, tmp_path, plugin):
    cfg = _cfg(tiny_dir, tmp_path, plugin, "model.lora.r=4", "vision.train=lora", "algo.kl_coef=0.1")
    trainer = GRPOTrainer(cfg)
    assert trainer.ref is None  # no second copy of the weights
    metrics = trainer.train_step()
    assert abs(metrics["actor/kl_ref"]) < 1e-6  # adapters start at B = 0: policy == reference
    model = trainer.policy.model
    _perturb_adapters(model)
    batch = _rollouts(trainer, 2, 4)
    view = reference_logprobs_of(None, model, batch, 3, 1.0)
    base = reference_logprobs(load_policy(tiny_dir).model.eval(), batch, 3, 1.0)
    policy = reference_logprobs(model, batch, 3, 1.0)
    print(f"adapters-off vs base model: max|Δ logp| {float((view - base).abs().max()):.2e}")
    torch.testing.assert_close(view, base, atol=1e-5, rtol=0)
    assert float((policy - base).abs().max()) > 1e-3  # the adapters do change the policy
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)  # restored
    # a tower that trains fully is not undone by switching adapters off: then a real copy is loaded
    full = load_policy(tiny_dir).model
    apply_vision_policy(full, "full")
    add_lm_lora(full, 4, 16)
    assert needs_reference_copy(full, 0.1) and not needs_reference_copy(model, 0.1)
    assert not needs_reference_copy(full, 0.0)


def test_lora_checkpoint_is_merged_and_resumes_exactly(tiny_dir, tmp_path, plugin):
    extra = ("model.lora.r=4", "vision.train=lora", "train.steps=2")
    trainer = GRPOTrainer(_cfg(tiny_dir, tmp_path / "a", plugin, *extra))
    trainer.train_step()
    first = trainer.save()
    want = trainer.train_step()
    ckpt = trainer.save()
    assert (ckpt / "trainable.safetensors").exists()
    assert json.loads((ckpt / "state.json").read_text())["lora_base"] == str(tiny_dir)
    # model/ is a plain HF model with the adapters folded in: same outputs as the LoRA policy
    merged = load_policy(ckpt / "model").model.eval()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    batch = _rollouts(trainer, 2, 2)
    inputs, _ = training_inputs(batch, list(range(batch.size)))
    trainer.policy.model.eval()
    with torch.no_grad():
        a, _ = completion_logprobs(trainer.policy.model, inputs, batch.completion_ids)
        b, _ = completion_logprobs(merged, inputs, batch.completion_ids)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    # resume from step 1: step 2 again, bit for bit the same adapters
    shutil.rmtree(ckpt)
    resumed = GRPOTrainer(_cfg(tiny_dir, tmp_path / "a", plugin, *extra), resume=True)
    assert resumed.step == 1 and first.exists()
    got = resumed.train_step()
    for k in ("reward/total", "actor/pg_loss", "actor/grad_norm"):
        assert got[k] == pytest.approx(want[k], abs=1e-6), k
    final = dict(trainer.policy.model.named_parameters())
    for n, p in resumed.policy.model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, final[n], atol=0, rtol=0)


def _counted(fn, counter: list[int]):
    def wrapper(*args, **kwargs):
        counter[0] += 1
        return fn(*args, **kwargs)

    return wrapper


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dir):
    from vlmrl.data import build_messages, generate
    from vlmrl.rollout.batch import encode_prompts
    from vlmrl.rollout.hf_engine import HFEngine

    torch.manual_seed(0)
    policy = load_policy(tiny_dir)
    samples = generate("count", 2, seed=0)
    enc = encode_prompts(
        policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )
    batch = HFEngine(policy, max_new_tokens=6).generate(enc, 2)
    inputs, _ = training_inputs(batch, list(range(batch.size)))
    grads, calls = [], []
    for ckpt in (False, True):
        model = load_policy(tiny_dir).model
        if ckpt:
            enable_gradient_checkpointing(model)
        n_calls = [0]  # with checkpointing a layer's submodules run again in the backward (hooks do not)
        mlp = model.model.language_model.layers[0].mlp
        mlp.forward = _counted(mlp.forward, n_calls)
        model.train()
        logp, _ = completion_logprobs(model, inputs, batch.completion_ids)
        (-(logp * batch.completion_mask).sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        calls.append(n_calls[0])
    assert checkpointing_on(model)
    assert calls == [1, 2]  # with checkpointing the layer's forward runs again in the backward
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    worst = max(float((grads[0][n] - grads[1][n]).abs().max()) for n in grads[0])
    print(f"gradient checkpointing: max|Δ grad| {worst:.2e}")
    assert worst < 1e-5


def test_gradient_checkpointing_and_bf16_train_a_step(tiny_dir, tmp_path, plugin):
    cfg = _cfg(
        tiny_dir, tmp_path, plugin, "train.gradient_checkpointing=true", "model.dtype=bfloat16",
        "model.lora.r=4", "vision.train=lora", "algo.kl_coef=0.1", "train.steps=1",
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    model = trainer.policy.model
    assert checkpointing_on(model) and next(model.parameters()).dtype == torch.bfloat16
    metrics = trainer.train_step()
    for k in ("actor/pg_loss", "actor/entropy", "actor/grad_norm", "actor/kl_ref"):
        assert torch.isfinite(torch.tensor(metrics[k])), k
    batch = _rollouts(trainer, 1, 2)
    inputs, _ = training_inputs(batch, list(range(batch.size)))
    logp, logits = completion_logprobs(model, inputs, batch.completion_ids)
    assert logp.dtype == torch.float32 and logits.dtype == torch.float32  # loss math in float32
