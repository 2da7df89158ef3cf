"""Multi-process training with torch.distributed: the process group, rank helpers, and the
reductions that make W processes compute the update one process computes on the same batch.

Launch with ``torchrun --nproc_per_node=W -m vlmrl train CFG`` or ``accelerate launch -m vlmrl
train CFG``: both set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``,
and :func:`init_distributed` reads them (``env://``). Backend: ``nccl`` when ``model.device`` is
CUDA (each process on ``cuda:LOCAL_RANK``), ``gloo`` on the CPU. Without ``WORLD_SIZE > 1``
every helper here is a no-op, so the single-process path is unchanged.

Why a manual gradient all-reduce and not ``DistributedDataParallel``: one optimizer step here
accumulates many micro-batches, a separate anchor backward, and — since groups stay whole on
their rank and DAPO keeps a variable number of groups — ranks can hold different numbers of
rows, even none, in a minibatch. DDP needs the same number of backward calls on every rank (a
rank with no rows would hang it), averages gradients (so every loss would need a ×W that is
exact only for powers of two), and hooks every backward. Summing the accumulated gradients
once per optimizer step (:func:`sync_grads`, flat buckets, SUM) is exact with any W, works the
same on gloo and nccl, and costs one all-reduce of the trainable parameters per optimizer step
— the same bytes as DDP, without DDP's overlap of communication with the backward, which
matters little when each step accumulates several micro-batches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from vlmrl.run.seeding import generator_key

#: The one list of metrics that each rank holds as its share of a global total (losses divided by
#: global token / sequence counts): summed over micro-batches in the update and over ranks here.
#: PAPO's two were once averaged over ranks instead (``vlmrl.vision.papo`` emits them); the anchor
#: loss is each rank's image-token share of its global mean (``vlmrl.train.update``).
SUM_KEYS = (
    "actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/papo_kl", "actor/papo_entropy_masked",
    "vision/anchor_loss",
)  # fmt: skip


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run: ``rank`` of ``world``, GPU ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes metrics, rollouts, checkpoints and the report, and runs evaluation."""
        return self.rank == 0


def init_distributed(device: str) -> tuple[DistInfo, str]:
    """Join the process group that the launcher described, once; returns this rank and its device.

    ``device`` is ``model.device``: a CUDA device becomes ``cuda:LOCAL_RANK`` (one GPU per
    process) with the nccl backend; anything else keeps ``device`` with gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return DistInfo(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise ValueError(f"model.device: {device!r} but CUDA is not available on this machine")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local), device


def shutdown() -> None:
    """Leave the process group (end of ``vlmrl train``)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    """Where collective buffers live: the current GPU for nccl, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if _active():
        dist.barrier()


# ---------------------------------------------------------------------------- the update


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """``Σ_ranks x`` (a new tensor, on ``x``'s device); ``x`` itself with one process."""
    if not _active():
        return x
    buf = x.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(x.device)


def reduce_counts(tokens: torch.Tensor, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global ``(T, S)`` of a minibatch (:func:`vlmrl.algos.global_counts` summed over ranks).

    With these as ``global_tokens`` / ``global_seqs`` each rank's loss is its share of the
    global loss, so the summed gradients are the global gradient (see ``algos/aggregate.py``).
    """
    if not _active():
        return tokens, seqs
    both = all_reduce_sum(torch.stack([tokens, seqs]).to(torch.float64))  # exact below 2^53
    return both[0].to(tokens.dtype), both[1].to(seqs.dtype)


def rank_share(local: float) -> float:
    """``local / Σ_ranks local`` (1.0 with one process): weights a per-rank mean into a global mean."""
    if not _active():
        return 1.0
    total = float(all_reduce_sum(torch.tensor(float(local), dtype=torch.float64)))
    return local / total if total > 0 else 0.0


def sync_grads(params: Sequence[torch.nn.Parameter], bucket_numel: int = 1 << 24) -> None:
    """Sum gradients over ranks in place (flat buckets per device and dtype).

    A parameter without a gradient on some rank contributes zeros; one without a gradient on
    *every* rank keeps ``grad = None``, so the optimizer skips it exactly as one process would.
    """
    if not _active() or not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    has = all_reduce_sum(has) > 0
    live = [p for p, h in zip(params, has.tolist(), strict=True) if h]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    groups: dict[tuple[torch.device, torch.dtype], list[torch.nn.Parameter]] = {}
    for p in live:
        groups.setdefault((p.grad.device, p.grad.dtype), []).append(p)
    for group in groups.values():
        for bucket in _buckets(group, bucket_numel):
            flat = all_reduce_sum(torch.cat([q.grad.reshape(-1) for q in bucket]))
            offset = 0
            for q in bucket:
                q.grad.copy_(flat[offset : offset + q.numel()].view_as(q.grad))
                offset += q.numel()


def _buckets(params: list[torch.nn.Parameter], numel: int) -> list[list[torch.nn.Parameter]]:
    """Consecutive runs of parameters of at most ``numel`` elements (a bigger one alone)."""
    out: list[list[torch.nn.Parameter]] = [[]]
    size = 0
    for p in params:
        if out[-1] and size + p.numel() > numel:
            out.append([])
            size = 0
        out[-1].append(p)
        size += p.numel()
    return [b for b in out if b]


def minibatch_rows(
    n_local: int, minibatches: int, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """This rank's row indices of each minibatch of one epoch.

    One process: ``randperm(N)`` (``arange`` for one minibatch) cut into ``minibatches`` chunks.
    W processes: rank 0 draws the permutation of the *global* batch (rank-major row order) and
    broadcasts it; each rank keeps its own rows of every chunk, so minibatch ``j`` is the same set
    of rollouts as in one process (a rank may hold none of it).
    """
    if not _active():
        order = torch.randperm(n_local, generator=generator) if minibatches > 1 else torch.arange(n_local)
        return list(order.chunk(minibatches))
    sizes = gather_objects(n_local)
    offset, total = sum(sizes[: rank()]), sum(sizes)
    order = torch.randperm(total, generator=generator) if minibatches > 1 else torch.arange(total)
    order = order.to(_comm_device())
    dist.broadcast(order, src=0)
    order = order.cpu()
    out = []
    for chunk in order.chunk(minibatches):
        mine = chunk[(chunk >= offset) & (chunk < offset + n_local)]
        out.append(mine - offset)
    return out


# ---------------------------------------------------------------------------- data and advantages


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, …]`` on every rank (pickled; for small things only)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_cat(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' 1-D tensors concatenated in rank order, and this rank's offset in the result."""
    if not _active():
        return x, 0
    parts = gather_objects(x.detach().cpu())
    offset = sum(p.numel() for p in parts[: rank()])
    return torch.cat(parts).to(x.device), offset


def global_advantages(name: str, rewards: torch.Tensor, group_ids: torch.Tensor, **kw: Any) -> torch.Tensor:
    """:func:`vlmrl.algos.compute_advantages` over the rewards of *all* ranks; this rank's slice.

    Group estimators (GRPO, Dr.GRPO, RLOO, pass@k) only see their own group, which is whole on
    one rank, but REINFORCE++ whitens over the whole batch: with every rank's rewards in global
    (rank-major) order the result equals one process's. Group ids become ``id·W + rank`` so ids of
    different ranks never merge.
    """
    from vlmrl.algos import compute_advantages

    if not _active():
        return compute_advantages(name, rewards, group_ids, **kw)
    all_r, offset = gather_cat(rewards)
    all_g, _ = gather_cat(group_ids * world_size() + rank())
    adv = compute_advantages(name, all_r, all_g, **kw)
    return adv[offset : offset + rewards.numel()]


def first_across_ranks(local: list[int], limit: int) -> tuple[list[int], int]:
    """Keep the first ``limit`` of the chosen items in global order (rank 0's first, …).

    ``local`` are this rank's chosen item indices; returns the ones it keeps and how many are
    kept over all ranks (DAPO dynamic sampling: the groups one process would have kept).
    """
    chosen = gather_objects(list(local))
    before = sum(len(c) for c in chosen[: rank()])
    keep = max(0, min(len(local), limit - before))
    return list(local[:keep]), min(limit, sum(len(c) for c in chosen))


# ---------------------------------------------------------------------------- metrics


def reduce_metrics(metrics: dict[str, Any], weight: float) -> dict[str, Any]:
    """One metrics dict for the whole run, the same on every rank.

    ``SUM_KEYS`` (each rank's share of a globally normalised loss) are summed; ``time/*`` take the
    slowest rank; every other number is the mean over the ranks that report it, weighted by
    ``weight`` (this rank's rollouts): exact for per-rollout means (rewards, lengths), a
    rollout-weighted mean of token means otherwise. Non-numbers are rank 0's.
    """
    if not _active():
        return metrics
    rows = gather_objects((metrics, float(weight)))
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for m, _ in rows for k in m):
        vals = [(m[key], w) for m, w in rows if key in m]
        nums = [(float(v), w) for v, w in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(nums) != len(vals) or any(v != v for v, _ in nums):  # non-numbers, NaN: rank 0's
            out[key] = vals[0][0]
        elif key in SUM_KEYS:
            out[key] = sum(v for v, _ in nums)
        elif key.startswith("time/"):
            out[key] = max(v for v, _ in nums)
        else:
            total = sum(w for _, w in nums)
            out[key] = sum(v * w for v, w in nums) / total if total > 0 else nums[0][0]
    return out


# ---------------------------------------------------------------------------- setup and checkpoints


@torch.no_grad()
def broadcast_params(model: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (replicas must start identical)."""
    if not _active():
        return
    for t in [*model.parameters(), *model.buffers()]:
        buf = t.detach().to(_comm_device(), copy=True)
        dist.broadcast(buf, src=0)
        t.copy_(buf.to(t.device))


def gather_generator_states(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Every rank's sampling generator state, keyed by :func:`vlmrl.run.seeding.generator_key`
    (``rank{r}.sampler_cpu`` / ``_cuda``), for the checkpoint; a collective: call on all ranks."""
    states = gather_objects(generator.get_state())
    return {generator_key(r, generator): s for r, s in enumerate(states)}
