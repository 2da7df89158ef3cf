"""Where the vLLM engine runs and how its requests are seeded (pure, testable without vLLM).

Placement. One process (``python -m vlmrl train``): vLLM's single-process executor, in this
process, on this process's GPU. Under ``torchrun``: one engine per rank on ``cuda:LOCAL_RANK``
through vLLM's ``external_launcher`` executor (it reads ``RANK`` / ``LOCAL_RANK`` /
``WORLD_SIZE`` from the environment, as TRL's colocate mode does). Without it, every rank's
engine would take vLLM's default device, ``cuda:0``. Tensor parallelism
(``rollout.vllm_tensor_parallel_size = k``) needs ``torchrun``: each group of k consecutive
ranks shares one engine sharded over their k GPUs, every rank of the group sends the group's
prompts and keeps its own completions. A single process cannot do it: vLLM would put the
shards in worker processes, where the per-step weight sync cannot reach them.

Seeds. vLLM seeds a request with ``n`` samples as ``n`` children with seeds ``seed + j``, and
its sampling noise depends only on the seed and the position. One seed for a whole call would
give the j-th completions of every prompt the same noise (equal-length prompts then pick
correlated tokens). :func:`request_seeds` gives each prompt its own block of ``n`` seeds, so
every completion of a call has a distinct seed, and derives the blocks from
``(run seed, call number, engine group)``: a run is reproducible from its seed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vlmrl.errors import UserError

#: Request seeds stay below 2**62 so that ``seed + j`` fits a signed 64-bit integer.
SEED_SPACE = 2**62


class EngineUnavailable(UserError):
    """``rollout.engine: vllm`` was asked for where it cannot run; the message says why and what to do.

    A :class:`~vlmrl.errors.UserError`: it is a config value this machine cannot honour, so the
    CLI prints one line."""


@dataclass(frozen=True)
class Placement:
    """This process's place among the vLLM engines of a run."""

    rank: int = 0
    """Global rank (``RANK``); 0 in a single process."""
    world: int = 1
    """Number of processes (``WORLD_SIZE``)."""
    local_rank: int = 0
    """GPU index on this node (``LOCAL_RANK``): where ``external_launcher`` puts the engine."""
    tensor_parallel: int = 1
    """Ranks (GPUs) that share one engine."""

    @property
    def group(self) -> int:
        """Which engine this rank belongs to (ranks ``[group·k, (group+1)·k)`` share it)."""
        return self.rank // self.tensor_parallel

    @property
    def group_ranks(self) -> list[int]:
        """The ranks that share this rank's engine, in order."""
        k = self.tensor_parallel
        return list(range(self.group * k, (self.group + 1) * k))

    def llm_kwargs(self) -> dict[str, object]:
        """The placement arguments for ``vllm.LLM``."""
        if self.world == 1:  # the single-process executor, in this process (weights reachable)
            return {"tensor_parallel_size": 1}
        return {
            "distributed_executor_backend": "external_launcher",  # one engine per rank, cuda:LOCAL_RANK
            "tensor_parallel_size": self.tensor_parallel,
        }


def placement_from_env(tensor_parallel: int = 1, env: Mapping[str, str] | None = None) -> Placement:
    """The placement the launcher describes; :class:`EngineUnavailable` (one line) for what we
    do not support: tensor parallelism without ``torchrun``, or a group size that does not divide
    the number of processes."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    key = "rollout.vllm_tensor_parallel_size"
    if tensor_parallel < 1:
        raise EngineUnavailable(f"{key}: must be ≥ 1, got {tensor_parallel}")
    if world == 1 and tensor_parallel > 1:
        raise EngineUnavailable(
            f"{key}={tensor_parallel} needs torchrun with one process per GPU (e.g. torchrun "
            f"--nproc_per_node={tensor_parallel} -m vlmrl train ...): in a single process vLLM's shards "
            "live in worker processes the weight sync cannot reach"
        )
    if world % tensor_parallel:
        raise EngineUnavailable(
            f"{key}={tensor_parallel} must divide the number of processes ({world}); "
            f"allowed: a divisor of {world}"
        )
    return Placement(rank=rank, world=world, local_rank=local, tensor_parallel=tensor_parallel)


def request_seeds(run_seed: int, call: int, group: int, prompts: int, n: int) -> list[int]:
    """One seed per prompt for a call of ``prompts`` prompts × ``n`` samples.

    Prompt p gets ``base + p·n``; vLLM gives its sample j the seed ``base + p·n + j``, so all
    ``prompts·n`` samples of the call have distinct seeds. ``base`` is drawn from
    ``SeedSequence([run_seed, call, group])``: the same run seed gives the same seeds, each call
    and each engine group (``Placement.group``) other ones.

    >>> s = request_seeds(0, 1, 0, prompts=2, n=4)
    >>> s[1] - s[0], s == request_seeds(0, 1, 0, 2, 4), s == request_seeds(0, 2, 0, 2, 4)
    (4, True, False)
    """
    entropy = [abs(int(run_seed)), int(call), int(group)]
    base = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]) % SEED_SPACE
    return [base + p * n for p in range(prompts)]
