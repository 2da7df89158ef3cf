"""Memory options of the policy: LoRA on the language model, gradient checkpointing, and the KL
reference as the adapter-free view of the policy instead of a second copy of the weights.

- ``model.lora.r > 0``: peft LoRA adapters on the language model's linear layers
  (:func:`vlmrl.models.lora.add_lm_lora`); the LM's base weights, embeddings and ``lm_head``
  freeze. The tower follows ``vision.train`` (``lora`` puts adapters there too).
- ``train.gradient_checkpointing``: HF activation (gradient) checkpointing with
  ``use_reentrant=False`` (the non-reentrant variant needs no input that requires grad, so it
  works with frozen embeddings and LoRA); it is active only in training mode, so sampling keeps
  its KV cache. Same gradients, recomputed (tested to 1e-6).
- ``model.dtype: bfloat16`` halves the weights; log-probs, the policy loss, KL and aggregation are
  computed in float32 from the bf16 logits (``algos/logprobs.py``, ``algos/aggregate.py``).
- KL reference (``algo.kl_coef > 0``): when every trainable parameter is a LoRA adapter, the
  policy with its adapters switched off is exactly the starting model, so
  :func:`reference_logprobs_of` runs the policy under :func:`vlmrl.models.lora.adapters_disabled`
  and no reference model is loaded. When anything else trains (e.g. ``vision.train: full``),
  a separate frozen copy of ``model.path`` is loaded as before.
"""

from __future__ import annotations

import torch

from vlmrl.config import TrainConfig
from vlmrl.models.lora import adapters_disabled, add_lm_lora, only_adapters_train
from vlmrl.rollout.batch import RolloutBatch
from vlmrl.train.update import reference_logprobs


def apply_memory_options(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """``model.lora`` adapters and ``train.gradient_checkpointing``, in place (after ``vision.train``)."""
    lora = cfg.model.lora
    if lora.r > 0:
        add_lm_lora(model, lora.r, lora.alpha, lora.dropout, lora.target_modules)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """HF activation checkpointing, non-reentrant (``activation_checkpointing_enable`` in
    transformers ≥ 5, the older ``gradient_checkpointing_enable`` otherwise)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def checkpointing_on(model: torch.nn.Module) -> bool:
    """Whether any submodule recomputes its activations in the backward."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def needs_reference_copy(model: torch.nn.Module, kl_coef: float) -> bool:
    """A separate reference model is needed when β > 0 and not only adapters train."""
    return kl_coef > 0 and not only_adapters_train(model)


def reference_logprobs_of(
    ref: torch.nn.Module | None,
    policy_model: torch.nn.Module,
    batch: RolloutBatch,
    micro_batch: int,
    temperature: float,
) -> torch.Tensor:
    """log π_ref ``[N, C]``: from ``ref`` when there is one, else the policy with adapters off."""
    if ref is not None:
        return reference_logprobs(ref, batch, micro_batch, temperature)
    with adapters_disabled(policy_model) as base:
        return reference_logprobs(base, batch, micro_batch, temperature)
