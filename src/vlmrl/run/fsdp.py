"""``train.strategy: fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) beside data parallel.

Every decoder layer and vision block (the model's ``_no_split_modules``) is one FSDP unit, the
rest (embeddings, final norm, ``lm_head``, the merger) the root's: each rank keeps ``1/W`` of every
parameter (dim 0), of its gradient and of the optimizer state built on it, and all-gathers a unit's
weights just before the unit runs (forward and backward), freeing them after. The frozen KL
reference is sharded the same way. ``train.fsdp_param_dtype`` casts the gathered weights
(``MixedPrecisionPolicy``; gradients are reduced in float32, the shards keep ``model.dtype``).

What stays exact (the update equals the one-process update, tested on gloo to 1e-6):
- the loss on each rank is its share of the global loss (``run/dist.py``), so gradients are
  *summed* over ranks: the reduce-scatter's divide factor is set to 1 (FSDP2 averages by default);
- every forward is a collective, so every rank runs the same number of micro-batches: a rank with
  fewer rows in a minibatch runs idle ones (a real forward on one row, loss × 0, whose zero
  gradients add nothing); the shared-prompt forward (two passes) is off for sharded models;
- the gradient norm is the norm over every rank's shards (one all-reduce), clipped as
  ``clip_grad_norm_`` does.

Sampling: every rank calls ``generate`` in lockstep and the decode loop runs until *all* ranks'
rows have stopped (``vlmrl.rollout.sampler.lockstep``; HF ``generate(synced_gpus=True)`` on the
other path); finished rows receive padding, so no completion changes. Evaluation runs on every
rank for the same reason (rank 0 reports). The alternative, gathering the full weights into an
unsharded copy for sampling, holds the whole model on every rank during generation, the memory
FSDP exists to save; lockstep costs one all-gather of the weights per decode step instead (fine
for short RL completions, slow for long ones, where a vLLM engine with its own copy is the fix).

Checkpoints (``checkpoints/step_N/``, beside the usual ``rng.safetensors`` and ``state.json``):
``dcp/`` is ``torch.distributed.checkpoint`` of the sharded model and optimizer state (every
rank writes its shards; a resume at any world size, or with ``dp``, reshards them), and
``model/`` the full weights as a plain HF folder (gathered on rank 0; LoRA merged) that
``from_pretrained`` loads. ``optimizer.json`` keeps only the hyper-parameters there.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from vlmrl.config.schema import LoopConfig
from vlmrl.errors import UserError
from vlmrl.rollout.batch import RolloutBatch
from vlmrl.rollout.sampler import lockstep
from vlmrl.rollout.shared_prompt import rollout_logprobs
from vlmrl.run.checkpoint import load_checkpoint, save_checkpoint, write_checkpoint

#: The sharded model + optimizer inside a checkpoint written under ``train.strategy: fsdp``.
DCP_DIR = "dcp"


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` was wrapped by :func:`shard_model` (its parameters are DTensor shards)."""
    return isinstance(model, FSDPModule)


def _ensure_group(device: torch.device) -> None:
    """FSDP needs a process group even in one process (a resume at W = 1): a private one-rank group."""
    if dist.is_initialized():
        return
    store = dist.FileStore(tempfile.mktemp(prefix="vlmrl-fsdp-"), 1)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=0, world_size=1)


def shard_model(model: torch.nn.Module, param_dtype: torch.dtype | None = None) -> None:
    """``fully_shard`` each transformer block, then the root; gradients summed over ranks."""
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    _ensure_group(next(model.parameters()).device)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for m in list(model.modules()):
        if m is not model and type(m).__name__ in blocks:
            fully_shard(m, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)  # each rank's loss is its share of the global one: sum
            m.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM)


def shard_for_strategy(loop: LoopConfig, model: torch.nn.Module, ref: torch.nn.Module | None) -> bool:
    """Under ``train.strategy: fsdp`` shard the policy and the reference (if any) in place; True then."""
    if loop.strategy != "fsdp":
        return False
    dtype = None if loop.fsdp_param_dtype == "float32" else getattr(torch, loop.fsdp_param_dtype)
    shard_model(model, dtype)
    if ref is not None:
        shard_model(ref, dtype)
    return True


# ---------------------------------------------------------------------------- the update


def idle_micro_batches(model: torch.nn.Module, n_local: int) -> int:
    """How many idle micro-batches this rank runs so that every rank runs as many as the busiest."""
    if not lockstep(model):
        return 0
    n = torch.tensor([n_local], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(n, op=dist.ReduceOp.MAX)
    return int(n.item()) - n_local


def idle_backward(model: torch.nn.Module, batch: RolloutBatch, temperature: float) -> None:
    """Join the collectives of one micro-batch without changing a gradient: one row, loss × 0."""
    logp, _ = rollout_logprobs(model, batch, [0], temperature, shared=False)
    (logp.sum() * 0.0).backward()


def clip_sharded_grads(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """The global gradient norm over every rank's shards (a plain tensor, the same on every rank),
    and, when ``max_norm > 0``, the gradients scaled as ``clip_grad_norm_`` scales them."""
    grads = [p.grad for p in params if p.grad is not None]
    dev = _comm_device()
    local = torch.zeros((), dtype=torch.float32, device=dev)
    for g in grads:
        local += _local(g).detach().float().pow(2).sum().to(dev)
    if lockstep_world():
        dist.all_reduce(local)
    total = local.sqrt()
    if max_norm > 0:
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            _local(g).mul_(coef.to(g.device))
    return total


def lockstep_world() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def local_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes this rank holds of ``tensors`` (a DTensor counts its local shard)."""
    return sum(_local(t).numel() * _local(t).element_size() for t in tensors)


def training_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """This rank's bytes of parameters, gradients and optimizer state (call between backward and
    ``zero_grad``): what FSDP divides by W, while activations and gathered units are not counted."""
    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    out = {
        "params": local_bytes(params),
        "grads": local_bytes(p.grad for p in params if p.grad is not None),
        "optimizer": local_bytes(state),
    }
    return out | {"total": sum(out.values())}


# ---------------------------------------------------------------------------- checkpoints


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight whole, on the CPU, on rank 0 (other ranks get ``{}``); a collective."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts)


def merge_lora(model: torch.nn.Module, full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``full`` with every LoRA layer folded in, ``W + scaling·B·A``, under the plain HF names
    (the sharded twin of :func:`vlmrl.models.lora.merged_state_dict`, which needs whole tensors)."""
    from vlmrl.models.lora import lora_layers

    layers = dict(lora_layers(model))
    out: dict[str, torch.Tensor] = {}
    for key, val in full.items():
        if "lora_" in key:
            continue
        if ".base_layer." in key:
            owner, leaf = key.split(".base_layer.", 1)
            if leaf == "weight":
                val = val.clone()
                for name in layers[owner].active_adapters:
                    a, b = full[f"{owner}.lora_A.{name}.weight"], full[f"{owner}.lora_B.{name}.weight"]
                    val += (b.float() @ a.float() * layers[owner].scaling[name]).to(val.dtype)
            key = f"{owner}.{leaf}"
        out[key] = val
    return out


def checkpoint_writer(policy, optimizer: torch.optim.Optimizer, path: Path) -> Callable[..., Path | None]:
    """``write(state, extra_rng)`` for rank 0. Under data parallel: :func:`save_checkpoint`. Sharded:
    first, on every rank (a collective), the DCP shards go to a staging folder and the full weights
    to rank 0; ``write`` then moves them into the checkpoint, whose ``model/`` is a plain HF folder."""
    model = policy.model
    if not is_sharded(model):
        return lambda state, rng: save_checkpoint(path, policy, optimizer, state, rng)
    staging = path.parent / f".{path.name}.{DCP_DIR}"
    full = full_state_dict(model)
    if dist.get_rank() == 0:
        shutil.rmtree(staging, ignore_errors=True)
    dist.barrier()
    sharded = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    dcp.save(sharded, checkpoint_id=str(staging))

    def save_model(tmp: Path) -> None:
        has_lora = any("lora_" in k for k in full)
        model.save_pretrained(tmp / "model", state_dict=merge_lora(model, full) if has_lora else full)
        policy.processor.save_pretrained(tmp / "model")
        staging.rename(tmp / DCP_DIR)

    # the moments are in dcp/; optimizer.json keeps the hyper-parameters (lr, betas) as usual
    groups_only = SimpleNamespace(param_groups=optimizer.param_groups, state={})

    def write(state: dict[str, Any], rng: dict[str, torch.Tensor]) -> Path:
        return write_checkpoint(path, save_model, groups_only, state | {"strategy": "fsdp"}, rng)

    return write


def load_run_checkpoint(
    ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore optimizer, RNG (and, from ``dcp/``, the weights) in place; returns ``state.json``.

    A ``dcp/`` checkpoint loads into a sharded model at any world size, and into an unsharded one
    (``train.strategy: dp``); a data-parallel checkpoint (no ``dcp/``) into a sharded model is refused.
    """
    has_dcp = (Path(ckpt) / DCP_DIR).is_dir()
    if is_sharded(model) and not has_dcp:
        raise UserError(f"{ckpt}: written with train.strategy=dp (no {DCP_DIR}/); resume it with dp")
    state = load_checkpoint(ckpt, optimizer)  # hyper-parameters (and dp moments), RNG
    if has_dcp:
        load_sharded(Path(ckpt) / DCP_DIR, model, optimizer)
    return state


def load_sharded(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Load a DCP model (+ optimizer) checkpoint into ``model`` as it is sharded now (any W, or none)."""
    sd: dict[str, Any] = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        sd["optim"] = get_optimizer_state_dict(model, optimizer)
    dcp.load(sd, checkpoint_id=str(directory))
    set_model_state_dict(model, sd["model"])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, sd["optim"])
