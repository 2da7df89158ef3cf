"""FSDP2 (``train.strategy: fsdp``) on the CPU with gloo: bytes per rank and the update's exactness.

    .venv/bin/python bench/fsdp.py    # the default tiny Qwen2.5-VL (3.75 M params); ≈ 1 min on 2 cores

One fixed rollout batch (4 prompts × 4 sampled completions, random rewards). Unsharded in this
process, and sharded over 1 and 2 spawned ranks (FSDP2 with a one-rank group holds everything):

- ``bytes_W``: this rank's parameters + gradients + AdamW state (local shards only) after one
  update and one more backward, the training state FSDP divides by W; ``ratio = bytes_2 / bytes_1``.
  Activations and the units gathered during a forward are not counted; the peak RSS of each rank
  (``VmHWM``: python, torch, the model, activations) is reported beside it;
- ``max_abs_dweight``: one SGD (lr 1) update sharded over 2 ranks vs. unsharded in one process,
  the largest weight difference (the update itself is ``update_size``).

Writes ``bench/results/fsdp.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _common import command_line

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["rollout.max_new_tokens=6", "train.micro_batch=3", "train.grad_clip=1.0"]


def _update(model, opt, batch, rewards) -> dict:
    from vlmrl.algos import broadcast_advantages
    from vlmrl.config import load_config
    from vlmrl.run.dist import global_advantages
    from vlmrl.train.update import UpdateSpec, policy_update

    cfg = load_config(overrides=OVERRIDES)
    spec = UpdateSpec(cfg.algo, cfg.train, cfg.rollout.temperature, cfg.rollout.max_new_tokens)
    adv = broadcast_advantages(
        global_advantages(spec.algo.advantage, rewards, batch.prompt_index), batch.completion_mask
    )
    return policy_update(model, opt, batch, adv, spec, step=0)


def _measure(model, batch, rewards, sharded: bool) -> tuple[dict, dict]:
    """(SGD-updated full weights, bytes after an AdamW update + one more backward)."""
    from vlmrl.models import load_policy
    from vlmrl.rollout.shared_prompt import rollout_logprobs
    from vlmrl.run.fsdp import full_state_dict, shard_model, training_state_bytes

    def fresh():
        m = load_policy(model).model
        if sharded:
            shard_model(m)
        return m

    m = fresh()
    _update(m, torch.optim.SGD(m.parameters(), lr=1.0), batch, rewards)
    weights = full_state_dict(m) if sharded else {k: v.detach().clone() for k, v in m.state_dict().items()}
    m = fresh()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    _update(m, opt, batch, rewards)
    logp, _ = rollout_logprobs(m, batch, [0, 1], shared=False)
    logp.mean().backward()
    return weights, training_state_bytes(m, opt)


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    from vlmrl.rollout.batch import select_prompts

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    blob = torch.load(data, weights_only=False)
    batch, rewards = blob["batch"], blob["rewards"]
    k = batch.prompt_inputs["input_ids"].shape[0] // world
    local = select_prompts(batch, list(range(rank * k, (rank + 1) * k)))
    weights, nbytes = _measure(blob["model"], local, rewards[(batch.prompt_index // k) == rank], True)
    rss = dist_gather(peak_rss())
    totals = dist_gather(nbytes["total"])
    if rank == 0:
        torch.save({"weights": weights, "bytes": nbytes, "bytes_all": totals, "rss": rss}, out)
    dist.destroy_process_group()


def peak_rss() -> int:
    """This process's peak resident bytes: ``VmHWM`` (``ru_maxrss`` survives ``exec``, so a spawned
    rank would report its parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def dist_gather(x: int) -> list[int]:
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, x)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "fsdp.json"))
    args = ap.parse_args()
    from vlmrl.data import build_messages, generate
    from vlmrl.models import TinyConfig, load_policy, make_tiny
    from vlmrl.rollout.batch import encode_prompts
    from vlmrl.rollout.hf_engine import HFEngine

    tmp = Path(tempfile.mkdtemp(prefix="vlmrl-fsdp-bench-"))
    model_dir = make_tiny(tmp / "model", TinyConfig(seed=0))
    torch.manual_seed(0)
    policy = load_policy(model_dir)
    samples = generate("count", 4, seed=0)
    enc = encode_prompts(
        policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )
    batch = HFEngine(policy, max_new_tokens=6).generate(enc, 4)
    rewards = torch.rand(batch.size, generator=torch.Generator().manual_seed(1))
    torch.save({"batch": batch, "rewards": rewards, "model": str(model_dir)}, tmp / "rollouts.pt")
    start = {k: v.detach().clone() for k, v in policy.model.state_dict().items()}
    ref_weights, ref_bytes = _measure(str(model_dir), batch, rewards, sharded=False)
    runs = {}
    for world in (1, 2):
        out = tmp / f"w{world}.pt"
        mp.spawn(_worker, args=(world, _free_port(), str(tmp / "rollouts.pt"), str(out)), nprocs=world)
        runs[world] = torch.load(out, weights_only=False)
    dw = max(float((runs[2]["weights"][k] - ref_weights[k]).abs().max()) for k in ref_weights)
    moved = max(float((ref_weights[k] - start[k]).abs().max()) for k in ref_weights)
    b1, b2 = runs[1]["bytes"]["total"], max(runs[2]["bytes_all"])
    result = {
        "bytes_1": b1,
        "bytes_2": b2,
        "ratio": b2 / b1,
        "max_abs_dweight": dw,
        "update_size": moved,
        "bytes_unsharded_1_process": ref_bytes["total"],
        "bytes_1_parts": runs[1]["bytes"],
        "bytes_2_parts_rank0": runs[2]["bytes"],
        "params": sum(v.numel() for v in start.values()),
        "peak_rss_bytes_1": runs[1]["rss"],
        "peak_rss_bytes_2": runs[2]["rss"],
        "model": "make_tiny(TinyConfig(seed=0))",
        "optimizer": "AdamW (bytes); SGD lr 1 (max_abs_dweight)",
        "backend": "gloo, CPU",
        "torch": torch.__version__,
        "command": command_line("fsdp.py", args),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("bytes_1", "bytes_2", "ratio", "max_abs_dweight")}))


if __name__ == "__main__":
    sys.exit(main())
