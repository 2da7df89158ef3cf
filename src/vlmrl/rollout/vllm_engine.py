"""The vLLM rollout engine (``rollout.engine: vllm``, extra ``[vllm]``, CUDA only).

Colocated, as TRL's ``vllm_mode="colocate"`` and veRL's hybrid engine: one ``vllm.LLM`` lives in
the trainer process on the same GPU as the policy (placement, tensor parallelism and request
seeds: :mod:`vlmrl.rollout.vllm_placement`). Each step:

1. ``wake_up(tags=["weights"])`` — weights back on the GPU (sleep mode, when ``rollout.vllm_sleep``);
2. ``sync_weights`` — the policy's current tensors go into vLLM's model with its own
   ``load_weights`` (which maps HF names such as ``model.language_model.*`` itself); LoRA layers
   are sent merged (``W + ΔW``, computed, never merged in place). Then both caches computed with
   the old weights are dropped: the prefix cache (keys/values) and the encoder cache (image
   embeddings, keyed by the image's hash: with the tower training, a repeated image would
   otherwise reuse embeddings from the old tower);
3. ``wake_up(tags=["kv_cache"])``, generate, ``sleep(level=1)`` — the KV cache's memory goes back to
   training.

The weight sync reaches vLLM's model inside this process, so it needs vLLM's in-process engine
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here before ``LLM()``); there is no fallback through
``LLM.apply_model``, which fails in vLLM's default multiprocess mode.

Why the prompt goes in as *text + PIL images* and not as our token ids: vLLM runs the model's own
multi-modal processor (placeholder expansion, resizing), so the prompt tokens it samples from are
its own; we check that they equal the HF processor's ids (the ones the training forward will use)
and fail loudly when they do not — a silent mismatch would make every ratio wrong.

Old log-probs (the rule both engines follow): ``π_old`` is the policy's full softmax at the
sampling temperature, ``log_softmax(logits / T)``, with no top-p / top-k mask, the quantity the
training forward computes. vLLM's own log-probs are not that: they are taken after its top-p /
top-k renormalisation (and the banned-token mask) and in vLLM's kernels. So whenever something
reads the old log-probs (an off-policy update or a reference KL), the engine recomputes them with
the policy's training forward after sampling, as EasyR1 / verl do, and keeps vLLM's only for the
``rollout/vllm_logprob_gap`` metric. The HF engine's sampler log-probs already are that quantity
(computed from the live policy on the unmasked logits). Banned vision tokens go in as
``bad_words`` and are checked again afterwards by the shared ``HFEngine._finish`` (docs/facts.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import torch

from vlmrl.models.lora import merged_state_dict
from vlmrl.rollout.batch import RolloutBatch
from vlmrl.rollout.hf_engine import HFEngine
from vlmrl.rollout.noisy import clean_logprobs, needs_clean_logprobs
from vlmrl.rollout.vllm_placement import EngineUnavailable, Placement, placement_from_env, request_seeds

__all__ = ["EngineUnavailable", "VLLMEngine", "build_engine", "check_vllm_available", "to_rollout_batch"]

log = logging.getLogger(__name__)

#: vLLM's switch for its in-process engine; the weight sync needs it off ("0") before ``LLM()``.
MULTIPROC_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


def check_vllm_available() -> None:
    """Raise :class:`EngineUnavailable` unless CUDA and an importable ``vllm`` are both present."""
    if not torch.cuda.is_available():
        raise EngineUnavailable(
            "rollout.engine=vllm needs a CUDA GPU and none is visible; use rollout.engine=hf "
            "(the default, runs anywhere)"
        )
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise EngineUnavailable(
            f"rollout.engine=vllm: cannot import vllm ({e}); install it with pip install 'vlmrl[vllm]' "
            "or use rollout.engine=hf"
        ) from e


def to_rollout_batch(
    engine: HFEngine,
    prompt_inputs: dict[str, torch.Tensor],
    outputs: list[Any],
    n: int,
) -> RolloutBatch:
    """vLLM ``RequestOutput`` list (one per prompt, ``n`` completions each) → :class:`RolloutBatch`.

    Checks first that vLLM's prompt token ids equal the HF processor's (left padding removed):
    those are the ids the training forward scores the completions after.
    """
    ids, mask = prompt_inputs["input_ids"], prompt_inputs["attention_mask"]
    if len(outputs) != ids.shape[0]:
        raise RuntimeError(f"vLLM returned {len(outputs)} results for {ids.shape[0]} prompts")
    seqs: list[list[int]] = []
    lps: list[list[float]] = []
    for b, out in enumerate(outputs):
        ours = ids[b][mask[b].bool()].tolist()
        theirs = list(out.prompt_token_ids or [])
        if ours != theirs:
            first = next((i for i, (a, c) in enumerate(zip(ours, theirs, strict=False)) if a != c), None)
            raise RuntimeError(
                f"prompt {b}: vLLM tokenized the prompt differently from the HF processor "
                f"({len(theirs)} vs {len(ours)} tokens, first difference at {first}); the training "
                "forward would score the completions after other tokens. Check that vLLM loads the same "
                "processor (model path, min/max pixels) as the policy."
            )
        if len(out.outputs) != n:
            raise RuntimeError(f"prompt {b}: vLLM returned {len(out.outputs)} completions, expected {n}")
        for comp in out.outputs:
            tok = list(comp.token_ids)
            seqs.append(tok)
            lp = []
            for j, t in enumerate(tok):
                entry = comp.logprobs[j] if comp.logprobs is not None and j < len(comp.logprobs) else None
                lp.append(float(entry[t].logprob) if entry is not None and t in entry else 0.0)
            lps.append(lp)
    width = max(1, max(len(s) for s in seqs))
    seq_t = torch.full((len(seqs), width), engine.pad_id, dtype=torch.long)
    lp_t = torch.zeros((len(seqs), width), dtype=torch.float32)
    for i, (s, lp) in enumerate(zip(seqs, lps, strict=True)):
        seq_t[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        lp_t[i, : len(lp)] = torch.tensor(lp, dtype=torch.float32)
    return engine._finish(prompt_inputs, seq_t, lp_t, n)


class VLLMEngine(HFEngine):
    """``generate(prompt_inputs, n, greedy)`` on a colocated ``vllm.LLM``; see the module docstring.

    ``prompt_inputs`` must come from :func:`vlmrl.rollout.batch.encode_prompts` (it carries the
    templated texts and PIL images vLLM needs). Everything after sampling (stop handling, banned
    tokens, truncation masks, decoding) is :class:`HFEngine`'s, so both engines give the same batch.
    ``recompute_logprobs``: replace vLLM's log-probs by the policy's (the old-log-prob rule above);
    :func:`build_engine` turns it on when the update or the KL reads them.
    """

    def __init__(
        self,
        policy,
        model_path: str,
        max_new_tokens: int = 16,
        temperature: float = 1.0,
        top_p: float = 1.0,
        mask_truncated: bool = False,
        gpu_memory_utilization: float = 0.4,
        max_model_len: int | None = None,
        sleep: bool = True,
        seed: int = 0,
        dtype: str = "auto",
        max_images_per_prompt: int = 4,
        mm_processor_kwargs: dict | None = None,
        tensor_parallel_size: int = 1,
        recompute_logprobs: bool = True,
        micro_batch: int = 16,
    ):
        check_vllm_available()
        self.placement: Placement = placement_from_env(tensor_parallel_size)
        if os.environ.get(MULTIPROC_ENV, "0") != "0":
            raise EngineUnavailable(
                f"{MULTIPROC_ENV}={os.environ[MULTIPROC_ENV]} is set: the per-step weight sync needs vLLM's "
                f"in-process engine; unset it (or set {MULTIPROC_ENV}=0)"
            )
        super().__init__(policy, max_new_tokens, temperature, top_p, mask_truncated)
        os.environ[MULTIPROC_ENV] = "0"  # before LLM(): the model then lives in this process
        from vllm import LLM

        self.sleep_mode = sleep
        self.recompute_logprobs = recompute_logprobs
        self.micro_batch = micro_batch
        self._seed = seed
        self._calls = 0
        self._gap = [0.0, 0.0, 0.0]  # max, sum, tokens of |vLLM − policy| since pop_metrics
        self._tp_group = self._make_tp_group()
        self.llm = LLM(
            model=str(model_path),
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_sleep_mode=sleep,
            seed=seed + self.placement.group,  # equal within a tensor-parallel group (same samples)
            limit_mm_per_prompt={"image": max_images_per_prompt},
            logprobs_mode="processed_logprobs",
            mm_processor_kwargs=mm_processor_kwargs or None,  # the same min/max pixels as the policy's
            **self.placement.llm_kwargs(),
        )
        self._stale = True  # weights are the checkpoint's until the first sync
        self._asleep = False
        if sleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def _make_tp_group(self):
        """The process group of the ranks sharing this engine (None without tensor parallelism).

        Every rank creates every group (``new_subgroups_by_enumeration`` is collective)."""
        p = self.placement
        if p.tensor_parallel == 1:
            return None
        import torch.distributed as dist

        groups = [list(range(g, g + p.tensor_parallel)) for g in range(0, p.world, p.tensor_parallel)]
        mine, _ = dist.new_subgroups_by_enumeration(groups)
        return mine

    def _gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank of this engine's tensor-parallel group, in rank order."""
        if self._tp_group is None:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.placement.tensor_parallel
        dist.all_gather_object(out, obj, group=self._tp_group)
        return out

    # ---------------------------------------------------------------- weights
    def mark_stale(self) -> None:
        """Called after each optimizer step: the next ``generate`` syncs the policy's weights first."""
        self._stale = True

    def _model_runner_model(self):
        """vLLM's in-process model (``driver_worker`` of the single-process or external-launcher
        executor); None when not reachable."""
        engine = getattr(self.llm, "llm_engine", None)
        executor = getattr(engine, "model_executor", None)
        worker = getattr(getattr(executor, "driver_worker", None), "worker", None)
        runner = getattr(worker, "model_runner", None)
        return getattr(runner, "model", None)

    def _reset_caches(self) -> None:
        """Drop everything vLLM computed with the old weights: prefix KV blocks and image embeddings.

        ``reset_encoder_cache`` sits on ``LLM`` in some releases and only on its ``llm_engine`` in
        others; a vLLM with neither cannot be synced safely, so it is refused."""
        self.llm.reset_prefix_cache()
        for owner in (self.llm, getattr(self.llm, "llm_engine", None)):
            if callable(getattr(owner, "reset_encoder_cache", None)):
                owner.reset_encoder_cache()
                return
        raise EngineUnavailable(
            "this vLLM has no reset_encoder_cache: image embeddings from old vision weights would be "
            "reused after a sync; install the [vllm] extra's version (pip install 'vlmrl[vllm]')"
        )

    def sync_weights(self, named: Iterable[tuple[str, torch.Tensor]] | None = None) -> int:
        """Load the policy's weights into vLLM and reset its caches; returns how many tensors were sent."""
        weights = list(named if named is not None else merged_state_dict(self.policy.model).items())
        target = self._model_runner_model()
        if target is None:
            raise EngineUnavailable(
                "vLLM's model is not reachable in this process (llm_engine.model_executor.driver_worker"
                f".worker.model_runner.model), so weights cannot be synced; {MULTIPROC_ENV} must be 0 "
                "before vLLM starts, and the [vllm] extra's vLLM version installed"
            )
        target.load_weights(weights=weights)
        self._reset_caches()
        self._stale = False
        return len(weights)

    # ---------------------------------------------------------------- sampling
    def _sampling_params(self, n: int, greedy: bool, seed: int | None):
        from vllm import SamplingParams

        return SamplingParams(
            n=n,
            temperature=0.0 if greedy else self.temperature,
            top_p=1.0 if greedy else self.top_p,
            top_k=-1,
            max_tokens=self.max_new_tokens,
            stop_token_ids=self.stop_ids,
            logprobs=0,  # the sampled token's own log-prob
            bad_words=[self.policy.tokenizer.convert_ids_to_tokens(i) for i in self.banned] or None,
            seed=None if greedy else seed,
            skip_special_tokens=True,
        )

    def pop_metrics(self) -> dict[str, float]:
        """Metrics since the last call: ``rollout/vllm_logprob_gap`` (max |vLLM − policy| old
        log-prob over completion tokens) and its token mean, when log-probs were recomputed."""
        worst, total, tokens = self._gap
        self._gap = [0.0, 0.0, 0.0]
        if not tokens:
            return {}
        return {"rollout/vllm_logprob_gap": worst, "rollout/vllm_logprob_gap_mean": total / tokens}

    def _use_policy_logprobs(self, batch: RolloutBatch) -> RolloutBatch:
        """The old-log-prob rule: the policy's own (training forward, no grad) replace vLLM's."""
        model = self.policy.model
        was_training = model.training
        model.eval()
        try:
            rows = list(range(batch.size))
            out = clean_logprobs(model, batch, rows, self.micro_batch, self.temperature)
        finally:
            model.train(was_training)
        gap = (out.sampler_logprobs - batch.sampler_logprobs).abs() * batch.completion_mask  # [N, C]
        self._gap = [
            max(self._gap[0], float(gap.max()) if gap.numel() else 0.0),
            self._gap[1] + float(gap.sum()),
            self._gap[2] + float(batch.completion_mask.sum()),
        ]
        return out

    @torch.no_grad()
    def generate(self, prompt_inputs: dict[str, torch.Tensor], n: int, greedy: bool = False) -> RolloutBatch:
        texts = getattr(prompt_inputs, "texts", None)
        images = getattr(prompt_inputs, "images", None)
        if texts is None or images is None:
            raise TypeError(
                "VLLMEngine.generate needs the PromptInputs of vlmrl.rollout.batch.encode_prompts "
                "(templated texts and PIL images), not a plain dict of tensors"
            )
        if self._asleep:
            self.llm.wake_up(tags=["weights"])
        if self._stale:
            self.sync_weights()
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        # a tensor-parallel group samples all its ranks' prompts together; each keeps its own
        parts = self._gather((list(texts), images))
        mine = self.placement.rank - self.placement.group_ranks[0]
        start = sum(len(t) for t, _ in parts[:mine])
        requests = [
            {"prompt": t, "multi_modal_data": {"image": ims}} if ims else {"prompt": t}
            for part_texts, part_images in parts
            for t, ims in zip(part_texts, part_images, strict=True)
        ]
        self._calls += 1
        seeds = request_seeds(self._seed, self._calls, self.placement.group, len(requests), n)
        params = [self._sampling_params(n, greedy, s) for s in seeds]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        if self.sleep_mode:
            self.llm.sleep(level=1)
            self._asleep = True
        batch = to_rollout_batch(self, prompt_inputs, outputs[start : start + len(texts)], n)
        if self.recompute_logprobs and not greedy:
            batch = self._use_policy_logprobs(batch)
        return batch


def build_engine(policy, cfg, generator: torch.Generator | None = None) -> HFEngine:
    """The engine ``cfg.rollout.engine`` names: ``hf`` (default) or ``vllm`` (a clear error where
    it cannot run). ``generator``: the trainer's sampling generator, which the HF engine draws
    from (vLLM seeds its requests itself, see :mod:`vlmrl.rollout.vllm_placement`)."""
    r = cfg.rollout
    if r.engine == "hf":
        return HFEngine(
            policy, r.max_new_tokens, r.temperature, r.top_p, r.mask_truncated, generator=generator
        )
    if r.engine == "vllm":
        return VLLMEngine(
            policy,
            cfg.model.path,
            r.max_new_tokens,
            r.temperature,
            r.top_p,
            r.mask_truncated,
            gpu_memory_utilization=r.vllm_gpu_memory_utilization,
            max_model_len=r.vllm_max_model_len,
            sleep=r.vllm_sleep,
            seed=cfg.train.seed,
            dtype=cfg.model.dtype,
            mm_processor_kwargs={
                k: v for k in ("min_pixels", "max_pixels") if (v := getattr(cfg.model, k)) is not None
            },
            tensor_parallel_size=r.vllm_tensor_parallel_size,
            recompute_logprobs=needs_clean_logprobs(cfg),
            micro_batch=cfg.train.micro_batch,
        )
    raise ValueError(f"rollout.engine: unknown value {r.engine!r}; allowed: hf, vllm")
