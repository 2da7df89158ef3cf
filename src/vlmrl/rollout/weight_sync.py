"""Weights from the trainer to a generation worker over torch.distributed: a two-process group of its own.

Rank 0 is the trainer, rank 1 the worker (:mod:`vlmrl.rollout.async_worker`). The group is built
directly on a ``TCPStore`` (``ProcessGroupGloo`` / ``ProcessGroupNCCL``), not as the default group,
so it lives beside whatever group the launcher made and no collective of the trainer's
(``run/dist.py``) ever waits on the worker.

One push is one broadcast of a flat buffer per dtype: the tensors are concatenated in order (both sides
hold the same architecture, so the same order and sizes) and copied into place on arrival. The
trainer's push is asynchronous: it broadcasts a *copy* of its weights, so the next optimizer
step may change the parameters while the bytes are still on the wire; a push first waits for the
previous one, so pushes arrive in order. Backends: ``gloo`` stages the buffer on the CPU (works
for CPU and GPU models, and for a worker on the same GPU as the trainer); ``nccl`` keeps it on
the device, for a worker on a GPU of its own (vLLM on its own devices), where NCCL needs each
rank on a distinct device. fp32 weights arrive bit-identical (tested).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

#: Trainer and worker ranks in the weight group.
TRAINER, WORKER = 0, 1
#: The store key the worker sets once it has connected.
_WORKER_UP = "vlmrl_worker_up"


def free_port() -> int:
    """A TCP port free on this host now (the store's; the worker is told it when spawned)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flatten(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """One 1-D buffer on ``device`` holding ``tensors`` in order (a copy, detached)."""
    return torch.cat([t.detach().reshape(-1).to(device) for t in tensors])


@torch.no_grad()
def unflatten_into(flat: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
    """Copy ``flat`` back into ``tensors`` in order (sizes must add up to ``flat``'s)."""
    total = sum(t.numel() for t in tensors)
    if total != flat.numel():
        raise ValueError(f"weight push of {flat.numel()} values for {total} receiving values")
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


class WeightChannel:
    """The trainer ↔ worker group. ``push`` on rank 0, ``pull`` on rank 1, in the same order.

    ``backend``: ``gloo`` (buffer on the CPU) or ``nccl`` (buffer on ``device``, a CUDA device of
    this rank's own). ``timeout_s`` bounds every wait, so a worker whose trainer died exits;
    ``peer_alive`` (rank 0) is polled while the worker has not joined yet.
    """

    def __init__(
        self,
        rank: int,
        port: int,
        backend: str = "gloo",
        device: str | torch.device = "cpu",
        timeout_s: float = 3600.0,
        host: str = "127.0.0.1",
        peer_alive: Callable[[], bool] | None = None,
    ):
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"weight channel backend: {backend!r}; allowed: gloo, nccl")
        self.rank = rank
        self.device = torch.device(device) if backend == "nccl" else torch.device("cpu")
        timeout = timedelta(seconds=timeout_s)
        self._store = dist.TCPStore(host, port, 2, rank == TRAINER, timeout, wait_for_workers=False)
        if rank == WORKER:
            self._store.set(_WORKER_UP, "1")
        elif peer_alive is not None:  # a worker that died before joining: an error now, not a timeout
            while not self._store.check([_WORKER_UP]):
                if not peer_alive():
                    raise RuntimeError("the weight channel's worker process exited before it joined")
                time.sleep(0.2)
        if backend == "gloo":
            self.group = dist.ProcessGroupGloo(self._store, rank, 2, timeout)
        else:
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            self.group = dist.ProcessGroupNCCL(self._store, rank, 2, opts)
        self._pending: list[dist.Work] = []
        self._buffers: list[torch.Tensor] = []  # the copies in flight, kept alive until they are sent

    def _broadcast(self, flat: torch.Tensor) -> dist.Work:
        opts = dist.BroadcastOptions()
        opts.rootRank = TRAINER
        return self.group.broadcast([flat], opts)

    def push(self, tensors: Sequence[torch.Tensor]) -> None:
        """Send a copy of ``tensors`` (rank 0); returns once the copy is made, not when it arrives."""
        self.wait()
        self._buffers = [flatten(ts, self.device) for ts in by_dtype(tensors)]
        self._pending = [self._broadcast(b) for b in self._buffers]

    def pull(self, tensors: Sequence[torch.Tensor]) -> None:
        """Receive the next push into ``tensors`` (rank 1), in place; blocks until it arrives."""
        for ts in by_dtype(tensors):
            flat = torch.empty(sum(t.numel() for t in ts), dtype=ts[0].dtype, device=self.device)
            self._broadcast(flat).wait()
            unflatten_into(flat, ts)

    def wait(self) -> None:
        """Block until the last push has been sent."""
        for work in self._pending:
            work.wait()
        self._pending, self._buffers = [], []


def by_dtype(tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``tensors`` split by dtype (one buffer each: a bf16 model may keep fp32 norms), in order."""
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    return list(groups.values())
