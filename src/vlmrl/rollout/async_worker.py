"""Asynchronous rollouts (``rollout.mode: async``): a generation worker of its own process samples
the next batch while the trainer updates on this one.

Versions: the weights after ``v`` updates are version ``v`` (a run resumed at step s starts at
version s). Batch ``t`` is sampled by version :func:`behaviour_version` ``= max(start, t − k)``,
``k = rollout.staleness``; the trainer updates on batch t, giving version t + 1, and pushes it over
torch.distributed (:mod:`vlmrl.rollout.weight_sync`) if some batch still needs it
(:func:`push_needed`). The worker waits for the version its next batch needs, so it is never more
than k updates behind and never ahead::

    k = 1    trainer  update(b0,v0) update(b1,v0) update(b2,v1) update(b3,v2) …
             worker   gen b0(v0) gen b1(v0)  gen b2(v1)   gen b3(v2)    gen b4(v3) …

With k = 0 the worker waits for each update before sampling: no overlap, and the run is the
synchronous one exactly (tested: identical weights after several steps). Both sides walk the same
prompt stream: the trainer draws and scores its own copies of the prompts (rewards, logging and
checkpoints are unchanged) and checks that the worker's prompt ids equal its own. With each batch
the worker sends its sampling generator's state, which the trainer's generator takes over, so a
checkpoint holds exactly what the synchronous run would hold. A batch with staleness s > 0 carries
its sampler log-probs as ``behaviour_logprobs``: the update weights it with the truncated
importance ratio of :mod:`vlmrl.algos.offpolicy` (``algo.tis_cap``) and logs the clip rate;
``rollout/staleness`` is logged every step. Resuming an async run with k > 0 is refused (the k
batches in flight are not checkpointed); k = 0 and ``rollout.mode: sync`` resume exactly.

Threads: the worker uses as many as the trainer (``torch.get_num_threads()`` when it starts); on a
CPU give each process its share (e.g. 1 + 1 on 2 cores). On GPUs the worker samples on
``model.device`` (weights staged through the CPU with gloo); a worker with devices of its own
(vLLM) takes the ``nccl`` channel, the same interface.
"""

from __future__ import annotations

import atexit
import pickle
import queue
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch
import torch.multiprocessing as mp

from vlmrl.config import ConfigError
from vlmrl.config.schema import TrainConfig
from vlmrl.data.stream import PromptStream
from vlmrl.rollout.batch import RolloutBatch, encode_samples
from vlmrl.rollout.vllm_engine import build_engine
from vlmrl.rollout.weight_sync import TRAINER, WORKER, WeightChannel, free_port

#: How long the trainer waits for one batch before checking that the worker is still alive.
_POLL_S = 5.0


def behaviour_version(step: int, staleness: int, start: int = 0) -> int:
    """The weights version that samples batch ``step``: ``max(start, step − staleness)``.

    >>> [behaviour_version(t, 1) for t in range(4)], [behaviour_version(t, 0) for t in range(3)]
    ([0, 0, 1, 2], [0, 1, 2])
    """
    return max(start, step - staleness)


def push_needed(version: int, staleness: int, steps: int) -> bool:
    """Whether version ``version`` (made by update ``version − 1``) samples some batch ``< steps``:
    batch ``version + staleness`` is the one that needs it."""
    return version + staleness < steps


@dataclass
class Generated:
    """One batch from the worker: which step it is for, the version that sampled it, the sampler
    generator's state after it, and the worker's seconds of generation."""

    step: int
    version: int
    batch: RolloutBatch
    rng_state: torch.Tensor
    generate_s: float


def _load_worker_policy(cfg: TrainConfig, device: str):
    """The worker's copy of the policy: same architecture, adapters and trainable set as the trainer's
    (its weights arrive with the first push)."""
    from vlmrl.models import load_policy
    from vlmrl.models.lora import add_lm_lora
    from vlmrl.models.vision import apply_vision_policy

    m = cfg.model
    policy = load_policy(
        m.path, m.dtype, device, m.attn_implementation, min_pixels=m.min_pixels, max_pixels=m.max_pixels
    )
    apply_vision_policy(policy.model, cfg.vision.train)
    if m.lora.r > 0:
        add_lm_lora(policy.model, m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.target_modules)
    return policy


def worker_main(
    cfg: TrainConfig,
    start: int,
    position: int,
    rng_state: torch.Tensor,
    device: str,
    trainable: list[str],
    port: int,
    threads: int,
    out: Any,  # a multiprocessing queue of pickled Generated (or an error's traceback text)
) -> None:
    """The worker process: join the weight group, take the trainer's weights, then sample batch
    ``t`` from version :func:`behaviour_version` for every ``start ≤ t < train.steps``."""
    try:
        torch.set_num_threads(threads)
        channel = WeightChannel(WORKER, port)
        policy = _load_worker_policy(cfg, device)
        named = dict(policy.model.named_parameters())
        channel.pull(list(named.values()))  # version `start`: everything, as the trainer holds it
        pushed = [named[n] for n in trainable]
        generator = torch.Generator(device)
        generator.set_state(rng_state)
        engine = build_engine(policy, cfg, generator)
        stream = PromptStream(cfg.data, position)
        r, k, version = cfg.rollout, cfg.rollout.staleness, start
        for t in range(start, cfg.train.steps):
            while version < behaviour_version(t, k, start):
                channel.pull(pushed)
                version += 1
                engine.mark_stale()  # a vLLM engine re-reads the weights
            t0 = time.perf_counter()
            samples = stream.next_shard(cfg.train.batch_prompts)
            enc = encode_samples(policy.processor, samples, cfg.data.template)
            batch = engine.generate(enc, r.n)
            item = Generated(t, version, batch, generator.get_state(), time.perf_counter() - t0)
            out.put(pickle.dumps(item))  # bytes: no shared-memory handles outliving this process
    except BaseException:
        out.put(pickle.dumps(traceback.format_exc()))
        raise


class AsyncEngine:
    """The trainer's side: a :class:`~vlmrl.rollout.hf_engine.RolloutEngine` whose ``generate``
    returns the worker's batch for this step and whose ``mark_stale`` pushes the new weights.

    ``generator`` is the trainer's sampling generator: it takes the worker's state with every
    batch, so checkpoints save the stream the worker continues from.
    """

    def __init__(self, policy, cfg: TrainConfig, generator: torch.Generator, step: int, position: int):
        self.cfg, self.generator, self.step = cfg, generator, step
        model = policy.model
        self._all = list(model.parameters())
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._pushed = [p for _, p in named]
        ctx = mp.get_context("spawn")
        self._queue = ctx.Queue()
        port = free_port()
        args = (cfg, step, position, generator.get_state(), str(model.device), [n for n, _ in named], port,
                torch.get_num_threads(), self._queue)  # fmt: skip
        self._proc = ctx.Process(target=worker_main, args=args, daemon=True, name="vlmrl-rollout-worker")
        self._proc.start()
        atexit.register(self.close)
        self._channel = WeightChannel(TRAINER, port, peer_alive=self._proc.is_alive)
        self._channel.push(self._all)  # version `step`
        self._metrics: dict[str, float] = {}

    def _next(self) -> Generated:
        while True:
            try:
                item = pickle.loads(self._queue.get(timeout=_POLL_S))
            except queue.Empty:
                if not self._proc.is_alive():
                    raise RuntimeError(
                        f"the async rollout worker exited (code {self._proc.exitcode}) without a batch"
                    ) from None
                continue
            if isinstance(item, str):
                raise RuntimeError(f"the async rollout worker failed:\n{item}")
            return item

    def generate(self, prompt_inputs: dict[str, torch.Tensor], n: int, greedy: bool = False) -> RolloutBatch:
        """This step's batch, sampled by the worker; ``prompt_inputs`` must be the same prompts."""
        if greedy or n != self.cfg.rollout.n:
            raise ValueError(
                "the async engine serves only the training batches (rollout.n samples, not greedy)"
            )
        t0 = time.perf_counter()
        item = self._next()
        wait = time.perf_counter() - t0
        batch = item.batch
        if item.step != self.step or not torch.equal(
            batch.prompt_inputs["input_ids"], prompt_inputs["input_ids"]
        ):
            raise RuntimeError(
                f"async rollouts out of step: trainer at {self.step}, worker batch {item.step}"
            )
        self.generator.set_state(item.rng_state)
        staleness = item.step - item.version
        if staleness > 0:  # sampled by older weights: the update corrects for it (algos/offpolicy.py)
            batch.behaviour_logprobs = batch.sampler_logprobs
        self._metrics = {
            "rollout/staleness": float(staleness),
            "time/worker_generate_s": item.generate_s,
            "time/wait_rollout_s": wait,
        }
        return batch

    def mark_stale(self) -> None:
        """After update ``step``: push version ``step + 1`` if a later batch is sampled from it."""
        self.step += 1
        if push_needed(self.step, self.cfg.rollout.staleness, self.cfg.train.steps):
            self._channel.push(self._pushed)

    def pop_metrics(self) -> dict[str, float]:
        out, self._metrics = self._metrics, {}
        return out

    def close(self) -> None:
        """Stop the worker (it stops by itself after the last batch; joined here, not in a step)."""
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(timeout=10)


def rollout_engine(policy, cfg: TrainConfig, generator: torch.Generator, step: int, position: int):
    """The trainer's engine: ``build_engine``'s (``rollout.mode: sync``) or an :class:`AsyncEngine`
    starting at ``step`` / prompt ``position``. An async resume with staleness > 0 is refused."""
    if cfg.rollout.mode != "async":
        return build_engine(policy, cfg, generator)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        raise ConfigError(
            "rollout.mode: async runs in one trainer process; launch without torchrun or use sync"
        )
    if step > 0 and cfg.rollout.staleness > 0:
        raise ConfigError(
            f"rollout.mode: async with rollout.staleness={cfg.rollout.staleness} cannot resume exactly (its "
            "in-flight batches are not checkpointed); resume with rollout.staleness=0 or rollout.mode=sync"
        )
    return AsyncEngine(policy, cfg, generator, step, position)
