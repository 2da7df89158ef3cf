"""Two processes on the CPU (gloo) compute the update one process computes, and a multi-process
run writes one run directory whose checkpoints resume at another world size.

1. One ``policy_update`` on a fixed rollout batch: whole in this process vs. split by prompts
   over 2 spawned ranks (advantages from the gathered rewards, counts and gradients summed):
   the same loss and the same updated weights; also with PAPO, the KL term and the feature
   anchor all on (each rank's share of every term, and the summed metrics).
2. ``torchrun --nproc_per_node=2 -m vlmrl train``: resumes a 1-process checkpoint in 2 processes,
   resumes its own checkpoint exactly, and its checkpoint resumes in 1 process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import QUICK_RUN
from vlmrl.algos import broadcast_advantages
from vlmrl.config import load_config
from vlmrl.models import load_policy
from vlmrl.run.dist import SUM_KEYS
from vlmrl.run.metrics import read_metrics
from vlmrl.train.update import UpdateSpec, policy_update, reference_logprobs
from vlmrl.vision.anchor import FeatureAnchor

WORLD = 2

#: (name, overrides): the on-policy default, and an off-policy variant with batch-wide whitening.
CASES = [
    ("grpo-seqmean", ["train.micro_batch=3", "train.grad_clip=1.0"]),
    (
        "reinforcepp-token-2mb",
        [
            "algo.advantage=reinforce_pp",
            "algo.loss_agg=token_mean",
            "train.minibatches=2",
            "train.micro_batch=2",
            "train.grad_clip=0",
        ],
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: PAPO, the KL term in the loss and the feature anchor at once, over 2 minibatches (so the second
#: optimizer step sees a moved policy) and micro-batches that cut groups.
VISION_CASES = [
    (
        "papo-kl-anchor",
        [
            "algo.papo_coef=0.5",
            "algo.papo_entropy_coef=0.03",
            "algo.kl_coef=0.2",
            "vision.anchor_coef=2.0",
            "train.minibatches=2",
            "train.micro_batch=3",
            "train.grad_clip=0",
        ],
    ),
]


def _spec(overrides: list[str]) -> UpdateSpec:
    cfg = load_config(overrides=["rollout.max_new_tokens=6", *overrides])
    return UpdateSpec(cfg.algo, cfg.train, cfg.rollout.temperature, token_budget=cfg.rollout.max_new_tokens)


def _reference(model_dir) -> torch.nn.Module:
    """A frozen reference that differs from the policy (the same noise on every rank), so the KL
    term and the anchor (the reference's tower, as in a run with ``kl_coef > 0``) have gradients
    from the first step on: at ``π = π_ref`` both are at their minimum and their gradients vanish."""
    ref = load_policy(model_dir).model.eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * p.std().nan_to_num() * torch.randn(p.shape, generator=gen))
    return ref


def _update(model_dir, batch, rewards, overrides: list[str]) -> tuple[dict, dict[str, torch.Tensor]]:
    """SGD(lr=1) so the weight change is the (clipped) gradient itself; fixed minibatch order."""
    from vlmrl.run.dist import global_advantages, reduce_metrics

    spec = _spec(overrides)
    anchor_coef = load_config(overrides=overrides).vision.anchor_coef
    model = load_policy(model_dir).model
    ref_logp = anchor = None
    if spec.algo.kl_coef > 0 or anchor_coef > 0:
        ref = _reference(model_dir)
        ref_logp = reference_logprobs(ref, batch, spec.loop.micro_batch, spec.temperature)
        anchor = FeatureAnchor(ref, anchor_coef, copy_tower=False) if anchor_coef > 0 else None
    adv = broadcast_advantages(
        global_advantages(spec.algo.advantage, rewards, batch.prompt_index), batch.completion_mask
    )
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    metrics = policy_update(
        model, opt, batch, adv, spec, ref_logp, generator=torch.Generator().manual_seed(0), anchor=anchor,
        step=3,
    )  # fmt: skip
    metrics = reduce_metrics(metrics, batch.size)
    return metrics, {n: p.detach().clone() for n, p in model.named_parameters()}


def _worker(rank: int, port: int, data: str, out: str, cases: str) -> None:
    from vlmrl.rollout.batch import select_prompts

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    blob = torch.load(data, weights_only=False)
    batch, rewards = blob["batch"], blob["rewards"]
    k = batch.prompt_inputs["input_ids"].shape[0] // WORLD
    rows = (batch.prompt_index // k) == rank  # rollouts are grouped by prompt, in prompt order
    local = select_prompts(batch, list(range(rank * k, (rank + 1) * k)))
    from vlmrl.run.dist import gather_generator_states, gather_objects
    from vlmrl.run.seeding import sampling_generator

    torch.manual_seed(0)  # as every rank of a run does; sampling draws from each rank's generator
    gen = sampling_generator(0, rank, 0, "cpu")
    results = {"draws": gather_objects(torch.rand(4, generator=gen)), "states": gather_generator_states(gen)}
    results["global_draws"] = gather_objects(torch.rand(1))  # untouched by the generators: the same
    for name, overrides in CASES if cases == "plain" else VISION_CASES:
        results[name] = _update(blob["model"], local, rewards[rows], overrides)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def fixed_rollouts(tiny_dir, tmp_path_factory):
    """4 prompts × 4 sampled completions and rewards that differ within groups."""
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
    path = tmp_path_factory.mktemp("dist") / "rollouts.pt"
    torch.save({"batch": batch, "rewards": rewards, "model": str(tiny_dir)}, path)
    return path, batch, rewards


def _spawn(path: Path, out: Path, cases: str) -> dict:
    mp.spawn(_worker, args=(_free_port(), str(path), str(out), cases), nprocs=WORLD, join=True)
    return torch.load(out, weights_only=False)


def test_two_ranks_update_equals_one_process(tiny_dir, fixed_rollouts, tmp_path):
    from vlmrl.run.seeding import sampling_generator

    path, batch, rewards = fixed_rollouts
    split = _spawn(path, tmp_path / "ranks.pt", "plain")
    draws = split["draws"]
    assert not torch.equal(draws[0], draws[1])  # ranks sample from different streams
    for r in range(WORLD):  # each from its own generator, whose advanced state goes in the checkpoint
        gen = sampling_generator(0, r, 0, "cpu")
        assert torch.equal(draws[r], torch.rand(4, generator=gen))
        assert torch.equal(split["states"][f"rank{r}.sampler_cpu"], gen.get_state())
    assert torch.equal(*split["global_draws"])  # the global RNG: the run's seed on both, never drawn from
    start = {n: p.detach() for n, p in load_policy(tiny_dir).model.named_parameters()}
    for name, overrides in CASES:
        ref_metrics, ref_weights = _update(tiny_dir, batch, rewards, overrides)
        metrics, weights = split[name]
        moved = max(float((ref_weights[n] - start[n]).abs().max()) for n in start)
        assert moved > 1e-4, name  # the update is not vacuous
        d_w = max(float((weights[n] - ref_weights[n]).abs().max()) for n in ref_weights)
        d_loss = abs(metrics["actor/pg_loss"] - ref_metrics["actor/pg_loss"])
        print(f"{name}: max|Δ weight| {d_w:.2e} (update {moved:.2e}), |Δ pg_loss| {d_loss:.2e}")
        assert d_w < 1e-5, name
        assert d_loss < 1e-6, name
        assert metrics["actor/entropy"] == pytest.approx(ref_metrics["actor/entropy"], abs=1e-5)
        assert metrics["actor/grad_norm"] == pytest.approx(ref_metrics["actor/grad_norm"], rel=1e-5)
        assert metrics["actor/optimizer_steps"] == ref_metrics["actor/optimizer_steps"]


def test_two_ranks_update_with_papo_kl_and_anchor_equals_one_process(tiny_dir, fixed_rollouts, tmp_path):
    """PAPO's masked forward, the KL term to a reference and the feature anchor, at world size 2:
    the same weights as one process, and the rank-summed loss terms equal the one-process ones."""
    path, batch, rewards = fixed_rollouts
    split = _spawn(path, tmp_path / "ranks.pt", "vision")
    start = {n: p.detach() for n, p in load_policy(tiny_dir).model.named_parameters()}
    for name, overrides in VISION_CASES:
        ref_metrics, ref_weights = _update(tiny_dir, batch, rewards, overrides)
        metrics, weights = split[name]
        for key in ("actor/papo_kl", "actor/kl_loss", "vision/anchor_loss"):
            assert abs(ref_metrics[key]) > 1e-6, key  # each term is really there
        visual = [n for n in start if ".visual." in n]
        assert visual and max(float((ref_weights[n] - start[n]).abs().max()) for n in visual) > 1e-4
        moved = max(float((ref_weights[n] - start[n]).abs().max()) for n in start)
        d_w = max(float((weights[n] - ref_weights[n]).abs().max()) for n in ref_weights)
        d_loss = abs(metrics["actor/pg_loss"] - ref_metrics["actor/pg_loss"])
        print(f"{name}: max|Δ weight| {d_w:.2e} (update {moved:.2e}), |Δ pg_loss| {d_loss:.2e}")
        assert d_w < 1e-5, name
        assert metrics.keys() == ref_metrics.keys()
        for key in (*SUM_KEYS, "actor/grad_norm"):  # the anchor loss is one of SUM_KEYS
            assert metrics[key] == pytest.approx(ref_metrics[key], rel=1e-5, abs=1e-6), key
        assert metrics["actor/optimizer_steps"] == ref_metrics["actor/optimizer_steps"] == 2


def test_shard_needs_divisible_batch(tiny_dir):
    from vlmrl.data.stream import PromptStream

    cfg = load_config(overrides=["train.batch_prompts=3"])
    stream = PromptStream(cfg.data)
    with pytest.raises(ValueError, match=r"train\.batch_prompts: 3 must be divisible by the 2"):
        stream.next_shard(3, 0, 2)
    whole = [s.id for s in PromptStream(cfg.data).next(4)]
    halves = [s.id for r in range(2) for s in PromptStream(cfg.data).next_shard(4, r, 2)]
    assert halves == whole  # rank r's contiguous share; together the one-process batch


def _train(run_dir: Path, tiny_dir, reward: list[str], steps: int, procs: int, resume: bool) -> str:
    args = [
        f"model.path={tiny_dir}",
        f"log.run_dir={run_dir}",
        *reward,
        *QUICK_RUN,
        "train.save_every=1",
        "train.keep_checkpoints=5",
        f"train.steps={steps}",
        *(["--resume"] if resume else []),
    ]
    return _launch(args, procs)


def _launch(args: list[str], procs: int) -> str:
    """``vlmrl train ARGS`` in ``procs`` processes (torchrun when > 1); its stdout."""
    launcher = [sys.executable, "-m", "vlmrl"]
    if procs > 1:
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        launcher = [*run, "-m", "vlmrl"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([*launcher, "train", *args], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


KEYS = ("reward/total", "actor/pg_loss", "actor/entropy", "actor/grad_norm", "rollout/response_length")


def test_torchrun_two_processes_resume_across_world_sizes(tiny_dir, letters_reward, tmp_path):
    one, two = tmp_path / "b", tmp_path / "c"
    _train(one, tiny_dir, letters_reward, steps=1, procs=1, resume=False)
    # a 1-process checkpoint continues in 2 processes
    out = _train(one, tiny_dir, letters_reward, steps=3, procs=2, resume=True)
    assert out.count("run directory:") == 1  # rank 0 alone prints
    rows = read_metrics(one)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]  # one metrics.jsonl, one line per step
    state = json.loads((one / "checkpoints" / "step_3" / "state.json").read_text())
    assert state["world_size"] == 2 and state["data_position"] == 6  # global: 3 steps × 2 prompts
    assert sorted(p.name for p in (one / "checkpoints").iterdir()) == ["step_1", "step_2", "step_3"]
    assert len((one / "rollouts" / "step_3.jsonl").read_text().splitlines()) == 4  # rank 0's 1 × 4
    # the same 2-process run resumed from its step-2 checkpoint: step 3 again, exactly
    shutil.copytree(one, two)
    shutil.rmtree(two / "checkpoints" / "step_3")
    _train(two, tiny_dir, letters_reward, steps=3, procs=2, resume=True)
    again = {r["step"]: r for r in read_metrics(two)}
    for k in KEYS:
        assert again[3][k] == pytest.approx(rows[3][k], abs=1e-6), k
    # and a 2-process checkpoint continues in 1 process
    _train(two, tiny_dir, letters_reward, steps=4, procs=1, resume=True)
    final = read_metrics(two)
    assert [r["step"] for r in final] == [0, 1, 2, 3, 4]
    assert json.loads((two / "checkpoints" / "step_4" / "state.json").read_text())["data_position"] == 8


def test_torchrun_two_processes_train_with_an_env(tiny_dir, tmp_path):
    """Multi-turn episodes under torchrun: each rank plays its shard of the global batch, the env
    metrics are reduced over both, rank 0 alone evaluates (greedy episodes) and logs trajectories."""
    run = tmp_path / "env"
    args = [
        f"model.path={tiny_dir}", f"log.run_dir={run}", "data.task=zoom", "env.name=tools",
        "env.max_turns=2", "env.turn_max_new_tokens=5", "env.max_total_tokens=1200",
        "train.batch_prompts=2", "rollout.n=2", "train.steps=1", "eval.every=1", "data.eval_size=2",
        "log.progress=false", "log.tensorboard=false", "log.groups_per_step=4", "train.save_every=1",
    ]  # fmt: skip
    out = _launch(args, procs=2)
    assert out.count("run directory:") == 1
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [0, 1]
    for key in ("env/turns", "env/valid_call_rate", "reward/accuracy", "actor/pg_loss", "eval/accuracy"):
        assert key in rows[1], key
    assert 1 <= rows[1]["env/turns"] <= 2
    logged = [json.loads(x) for x in (run / "rollouts" / "step_1.jsonl").read_text().splitlines()]
    assert len(logged) == 2 and all(r["trajectory"]["turns"] for r in logged)  # rank 0's 1 prompt × 2
    assert json.loads((run / "checkpoints" / "step_1" / "state.json").read_text())["data_position"] == 2
