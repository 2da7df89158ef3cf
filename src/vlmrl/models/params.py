"""Which parameters are the vision tower's: one rule for the optimizer groups, LoRA and ``vision.train``."""

from __future__ import annotations

#: Parameter-name fragments of the vision tower in HF VLMs (Qwen2/2.5-VL ``visual``, LLaVA-style
#: ``vision_tower``, SigLIP/idefics ``vision_model``).
VISION_PREFIXES = ("visual.", "vision_tower.", "vision_model.")


def is_vision_param(name: str) -> bool:
    """Whether the parameter ``name`` belongs to the vision tower (any :data:`VISION_PREFIXES` segment).

    >>> is_vision_param("model.visual.blocks.0.attn.qkv.weight"), is_vision_param("lm_head.weight")
    (True, False)
    """
    return any(f".{p}" in f".{name}" for p in VISION_PREFIXES)
