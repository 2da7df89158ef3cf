"""``train.strategy: fsdp`` on the CPU (gloo): FSDP2-sharded policy updates equal the one-process
update, shard the training state, checkpoint through DCP and resume exactly at another world size.

One spawn of 2 ranks runs every sharded case on a fixed rollout batch (4 prompts × 4 completions),
one spawn of 1 rank resumes the 2-rank DCP checkpoint; this process computes the unsharded
references. SGD with lr 1 makes the weight change the (clipped) gradient itself.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vlmrl.algos import broadcast_advantages
from vlmrl.config import ConfigError, load_config
from vlmrl.models import load_policy
from vlmrl.train.memory import apply_memory_options
from vlmrl.train.update import UpdateSpec, policy_update

#: (name, overrides): on-policy with clipping; LoRA + gradient checkpointing over 2 minibatches of
#: micro-batches of 2 (ranks hold unequal rows of a minibatch, so idle micro-batches are needed).
CASES = [
    ("grpo-seqmean", ["train.micro_batch=3", "train.grad_clip=1.0"]),
    (
        "lora-gc-2mb",
        [
            "model.lora.r=4",
            "train.gradient_checkpointing=true",
            "train.minibatches=2",
            "train.micro_batch=2",
            "train.grad_clip=0",
            "algo.loss_agg=token_mean",
        ],
    ),
]
ADAM = ["train.micro_batch=4", "train.grad_clip=1.0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(model_dir: str, overrides: list[str]) -> torch.nn.Module:
    cfg = load_config(overrides=overrides)
    model = load_policy(model_dir).model
    torch.manual_seed(0)  # LoRA's A init: the same on every rank (the trainer broadcasts rank 0's)
    apply_memory_options(model, cfg)
    return model


def _step(model, opt, batch, rewards, overrides: list[str]) -> dict:
    from vlmrl.run.dist import global_advantages

    cfg = load_config(overrides=["rollout.max_new_tokens=6", *overrides])
    spec = UpdateSpec(cfg.algo, cfg.train, cfg.rollout.temperature, token_budget=6)
    adv = broadcast_advantages(
        global_advantages(spec.algo.advantage, rewards, batch.prompt_index), batch.completion_mask
    )
    return policy_update(model, opt, batch, adv, spec, step=3)


def _full(model) -> dict[str, torch.Tensor]:
    from vlmrl.run.fsdp import full_state_dict, is_sharded

    if is_sharded(model):
        return {k: v.clone() for k, v in full_state_dict(model).items()}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _state_bytes(model, opt, batch) -> dict[str, int]:
    """Parameters, gradients (of one more backward) and AdamW state held by this rank."""
    from vlmrl.rollout.shared_prompt import rollout_logprobs
    from vlmrl.run.fsdp import training_state_bytes

    logp, _ = rollout_logprobs(model, batch, [0, 1], shared=False)
    logp.mean().backward()
    out = training_state_bytes(model, opt)
    opt.zero_grad(set_to_none=True)
    return out


def _worker(rank: int, world: int, port: int, data: str, out: str, ckpt: str) -> None:
    from vlmrl.rollout.batch import select_prompts
    from vlmrl.run.fsdp import checkpoint_writer, full_state_dict, load_sharded, shard_model

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    blob = torch.load(data, weights_only=False)
    batch, rewards, model_dir = blob["batch"], blob["rewards"], blob["model"]
    k = batch.prompt_inputs["input_ids"].shape[0] // world
    rows = (batch.prompt_index // k) == rank
    local, local_r = select_prompts(batch, list(range(rank * k, (rank + 1) * k))), rewards[rows]
    res: dict = {}
    if world == 2:
        for name, overrides in CASES:
            model = _model(model_dir, overrides)
            shard_model(model)
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
            res[name] = (_step(model, opt, local, local_r, overrides), _full(model))
        model = _model(model_dir, [])  # mixed precision: bf16 compute, float32 shards
        shard_model(model, torch.bfloat16)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        res["bf16"] = (_step(model, opt, local, local_r, CASES[0][1]), _full(model))
        res["bf16_shard_dtype"] = str(next(model.parameters()).dtype)
        # AdamW: one step, the bytes per rank, a DCP checkpoint + HF export, then a second step
        model = _model(model_dir, [])
        shard_model(model)
        policy = load_policy(model_dir)
        policy.model = model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        _step(model, opt, local, local_r, ADAM)
        res["bytes"] = _state_bytes(model, opt, local)
        write = checkpoint_writer(policy, opt, Path(ckpt) / "step_1")
        if rank == 0:
            write({"step": 1}, {})
        dist.barrier()
        _step(model, opt, local, local_r, ADAM)
        res["second"] = _full(model)
    else:  # resume the 2-rank checkpoint in 1 rank; the second step on the whole batch
        model = _model(model_dir, [])
        shard_model(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        load_sharded(Path(ckpt) / "step_1" / "dcp", model, opt)
        res["resumed"] = {k: v.clone() for k, v in full_state_dict(model).items()}
        _step(model, opt, batch, rewards, ADAM)
        res["second"] = _full(model)
    if rank == 0:
        torch.save(res, out)
    dist.destroy_process_group()


def _spawn(world: int, path: Path, out: Path, ckpt: Path) -> dict:
    mp.spawn(_worker, args=(world, _free_port(), str(path), str(out), str(ckpt)), nprocs=world, join=True)
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def sharded_runs(tiny_dir, tmp_path_factory):
    """4 prompts × 4 sampled completions, then the 2-rank and the 1-rank (resume) spawns."""
    from vlmrl.data import build_messages, generate
    from vlmrl.rollout.batch import encode_prompts
    from vlmrl.rollout.hf_engine import HFEngine

    torch.manual_seed(0)
    policy = load_policy(tiny_dir)
    samples = generate("count", 4, seed=0)
    enc = encode_prompts(
        policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )
    batch = HFEngine(policy, max_new_tokens=6).generate(enc, 4)
    rewards = torch.rand(batch.size, generator=torch.Generator().manual_seed(1))
    tmp = tmp_path_factory.mktemp("fsdp")
    torch.save({"batch": batch, "rewards": rewards, "model": str(tiny_dir)}, tmp / "rollouts.pt")
    two = _spawn(2, tmp / "rollouts.pt", tmp / "two.pt", tmp / "ckpt")
    one = _spawn(1, tmp / "rollouts.pt", tmp / "one.pt", tmp / "ckpt")
    return batch, rewards, two, one, tmp / "ckpt" / "step_1"


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_sharded_ranks_update_equals_one_process(tiny_dir, sharded_runs):
    batch, rewards, two, _, _ = sharded_runs
    for name, overrides in CASES:
        model = _model(str(tiny_dir), overrides)
        start = _full(model)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
        ref_metrics = _step(model, opt, batch, rewards, overrides)
        metrics, weights = two[name]
        moved = _max_diff(_full(model), start)
        d_w = _max_diff(weights, _full(model))
        print(f"{name}: max|Δ weight| {d_w:.2e} (update {moved:.2e})")
        assert moved > 1e-4, name  # not vacuous
        assert d_w <= 1e-6, name
        assert metrics["actor/grad_norm"] == pytest.approx(ref_metrics["actor/grad_norm"], rel=1e-5)
        assert metrics["actor/optimizer_steps"] == ref_metrics["actor/optimizer_steps"]


def test_sharding_halves_the_training_state_per_rank(tiny_dir, sharded_runs):
    batch, rewards, two, _, _ = sharded_runs
    model = _model(str(tiny_dir), [])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _step(model, opt, batch, rewards, ADAM)
    one = _state_bytes(model, opt, batch)
    ratio = two["bytes"]["total"] / one["total"]
    print(f"bytes per rank: 1 rank {one['total']}, 2 ranks {two['bytes']['total']} (ratio {ratio:.3f})")
    assert one["grads"] > 0 and one["optimizer"] >= 2 * one["params"]  # all three are counted
    assert ratio <= 0.55


def test_mixed_precision_keeps_float32_shards(sharded_runs):
    *_, two, _, _ = sharded_runs
    _, weights = two["bf16"]
    assert two["bf16_shard_dtype"] == "torch.float32"
    d_w = _max_diff(weights, two["grpo-seqmean"][1])
    assert 0 < d_w < 0.05  # bf16 compute: near the float32 update, not equal to it
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_dcp_checkpoint_resumes_exactly_at_another_world_size(tiny_dir, sharded_runs):
    """Saved by 2 ranks after one AdamW step, loaded by 1: the same weights, and the next step
    (the moments matter) equals the 2-rank one. ``model/`` loads with plain ``from_pretrained``."""
    from transformers import AutoModelForImageTextToText

    *_, two, one, ckpt = sharded_runs
    assert (ckpt / "dcp" / ".metadata").is_file()  # the moments live there, not in optimizer.safetensors
    assert (ckpt / "optimizer.safetensors").stat().st_size < 200
    d_second = _max_diff(one["second"], two["second"])
    print(f"resume 2 -> 1 rank: max|Δ weight| after the next step {d_second:.2e}")
    assert d_second <= 1e-6
    hf = AutoModelForImageTextToText.from_pretrained(ckpt / "model")
    exported = {k: v.detach() for k, v in hf.state_dict().items()}
    assert _max_diff(exported, one["resumed"]) == 0.0
    assert _max_diff(exported, _full(_model(str(tiny_dir), []))) > 1e-5  # it is the trained model


def test_fsdp_refuses_what_it_does_not_support_at_load():
    msg = r"train\.strategy: fsdp does not support algo\.papo_coef=0\.5, eval\.drift=True yet"
    with pytest.raises(ConfigError, match=msg):
        load_config(overrides=["train.strategy=fsdp", "algo.papo_coef=0.5"])
    cfg = load_config(
        overrides=["train.strategy=fsdp", "eval.drift=false", "train.fsdp_param_dtype=bfloat16"]
    )
    assert cfg.train.strategy == "fsdp"
    with pytest.raises(ConfigError, match=r"train\.strategy"):
        load_config(overrides=["train.strategy=zero3"])


@pytest.mark.slow
def test_torchrun_fsdp_trains_with_a_sharded_reference_and_resumes_in_one_process(tiny_dir, tmp_path):
    """``vlmrl train`` under torchrun with ``train.strategy=fsdp`` and a KL reference (sharded too):
    sampling and evaluation in lockstep, DCP checkpoints, then the run continues in 1 process."""
    import json
    import subprocess
    import sys

    from conftest import QUICK_RUN
    from vlmrl.run.metrics import read_metrics

    run = tmp_path / "fsdp"
    args = [
        "train", f"model.path={tiny_dir}", f"log.run_dir={run}", *QUICK_RUN, "train.strategy=fsdp",
        "eval.drift=false", "algo.kl_coef=0.1", "vision.train=full", "train.save_every=1", "eval.every=2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vlmrl"]
    one = [sys.executable, "-m", "vlmrl"]
    for cmd in ([*two, *args, "train.steps=2"], [*one, *args, "train.steps=3", "--resume"]):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(r["actor/kl_ref"] >= 0 for r in rows[1:]) and "eval/accuracy" in rows[2]
    state = json.loads((run / "checkpoints" / "step_3" / "state.json").read_text())
    assert state["strategy"] == "fsdp" and state["world_size"] == 1 and state["data_position"] == 6
    assert any(f.startswith("dcp/") for f in state["files"])  # the shards are checksummed too
