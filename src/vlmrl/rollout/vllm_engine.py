"""The vLLM rollout engine (``rollout.engine: vllm``, extra ``[vllm]``, CUDA only).

Colocated, as TRL's ``vllm_mode="colocate"`` and veRL's hybrid engine: one ``vllm.LLM`` lives in
the trainer process on the same GPU as the policy. Each step:

1. ``wake_up(tags=["weights"])`` — weights back on the GPU (sleep mode, when ``rollout.vllm_sleep``);
2. ``sync_weights`` — the policy's current tensors go into vLLM's model with its own
   ``load_weights`` (which maps HF names such as ``model.language_model.*`` itself); LoRA layers
   are sent merged (``W + ΔW``, computed, never merged in place); the prefix cache is reset, since
   its keys/values came from the old weights;
3. ``wake_up(tags=["kv_cache"])``, generate, ``sleep(level=1)`` — the KV cache's memory goes back to
   training.

Why the prompt goes in as *text + PIL images* and not as our token ids: vLLM runs the model's own
multi-modal processor (placeholder expansion, resizing), so the prompt tokens it samples from are
its own; we check that they equal the HF processor's ids (the ones the training forward will use)
and fail loudly when they do not — a silent mismatch would make every ratio wrong.

Log-probs are requested as ``processed_logprobs`` (after temperature), the quantity the training
forward computes (``log_softmax(logits / T)``); on-policy updates do not use them anyway (the ratio
is taken against ``logp.detach()``). Banned vision tokens go in as ``bad_words`` and are checked
again afterwards by the shared ``HFEngine._finish`` (docs/facts.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import torch

from vlmrl.errors import UserError
from vlmrl.models.lora import merged_state_dict
from vlmrl.rollout.batch import RolloutBatch
from vlmrl.rollout.hf_engine import HFEngine

log = logging.getLogger(__name__)


class EngineUnavailable(UserError):
    """``rollout.engine: vllm`` was asked for where it cannot run; the message says why and what to do.

    A ``ValueError``: it is a config value this machine cannot honour, so the CLI prints one line."""


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
    ):
        check_vllm_available()
        super().__init__(policy, max_new_tokens, temperature, top_p, mask_truncated)
        # Colocated weight sync reaches the model inside this process (as TRL's colocate mode).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.sleep_mode = sleep
        self._seed = seed
        self._calls = 0
        self.llm = LLM(
            model=str(model_path),
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_sleep_mode=sleep,
            seed=seed,
            limit_mm_per_prompt={"image": max_images_per_prompt},
            logprobs_mode="processed_logprobs",
            mm_processor_kwargs=mm_processor_kwargs or None,  # the same min/max pixels as the policy's
        )
        self._stale = True  # weights are the checkpoint's until the first sync
        self._asleep = False
        if sleep:
            self.llm.sleep(level=1)
            self._asleep = True

    # ---------------------------------------------------------------- weights
    def mark_stale(self) -> None:
        """Called after each optimizer step: the next ``generate`` syncs the policy's weights first."""
        self._stale = True

    def _model_runner_model(self):
        """vLLM's in-process model (V1 engine without multiprocessing); None when not reachable."""
        engine = getattr(self.llm, "llm_engine", None)
        executor = getattr(engine, "model_executor", None)
        worker = getattr(getattr(executor, "driver_worker", None), "worker", None)
        runner = getattr(worker, "model_runner", None)
        return getattr(runner, "model", None)

    def sync_weights(self, named: Iterable[tuple[str, torch.Tensor]] | None = None) -> int:
        """Load the policy's weights into vLLM; returns how many tensors were sent."""
        weights = list(named if named is not None else merged_state_dict(self.policy.model).items())
        target = self._model_runner_model()
        if target is not None:
            target.load_weights(weights=weights)
        elif hasattr(self.llm, "apply_model"):
            self.llm.apply_model(lambda m: m.load_weights(weights=weights))
        else:  # pragma: no cover - depends on the vLLM version
            raise EngineUnavailable(
                "this vLLM version exposes neither model_executor.driver_worker nor LLM.apply_model; "
                "weight sync is impossible (pin vllm to a version listed in README 'Running on GPUs')"
            )
        self.llm.reset_prefix_cache()
        self._stale = False
        return len(weights)

    # ---------------------------------------------------------------- sampling
    def _sampling_params(self, n: int, greedy: bool):
        from vllm import SamplingParams

        self._calls += 1
        return SamplingParams(
            n=n,
            temperature=0.0 if greedy else self.temperature,
            top_p=1.0 if greedy else self.top_p,
            top_k=-1,
            max_tokens=self.max_new_tokens,
            stop_token_ids=self.stop_ids,
            logprobs=0,  # the sampled token's own log-prob
            bad_words=[self.policy.tokenizer.convert_ids_to_tokens(i) for i in self.banned] or None,
            seed=None if greedy else self._seed * 1_000_003 + self._calls,
            skip_special_tokens=True,
        )

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
        requests = [
            {"prompt": t, "multi_modal_data": {"image": ims}} if ims else {"prompt": t}
            for t, ims in zip(texts, images, strict=True)
        ]
        outputs = self.llm.generate(requests, self._sampling_params(n, greedy), use_tqdm=False)
        if self.sleep_mode:
            self.llm.sleep(level=1)
            self._asleep = True
        return to_rollout_batch(self, prompt_inputs, outputs, n)


def build_engine(policy, cfg) -> HFEngine:
    """The engine ``cfg.rollout.engine`` names: ``hf`` (default) or ``vllm`` (a clear error where
    it cannot run)."""
    r = cfg.rollout
    if r.engine == "hf":
        return HFEngine(policy, r.max_new_tokens, r.temperature, r.top_p, r.mask_truncated)
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
        )
    raise ValueError(f"rollout.engine: unknown value {r.engine!r}; allowed: hf, vllm")
