"""What the vision tower does during RL: ``full`` | ``frozen`` | ``projector_only`` | ``lora``.

``projector_only`` trains the merger (Qwen's patch-merger MLP that maps vision features into
the language model's width) and freezes the tower's blocks; ``frozen`` freezes both. These are
the knobs behind "never let the model go blind": a frozen tower cannot drift.
"""

from __future__ import annotations

import torch

from vlmrl.config.schema import VISION_MODES
from vlmrl.models.params import VISION_PREFIXES, is_vision_param

__all__ = ["PROJECTOR_MARKERS", "VISION_PREFIXES", "apply_vision_policy", "find_visual", "is_vision_param"]

#: Name fragments of the vision→language projector in common HF VLMs.
PROJECTOR_MARKERS = ("merger.", "deepstack_merger_list.", "multi_modal_projector.", "mm_projector.")


def find_visual(model: torch.nn.Module) -> torch.nn.Module | None:
    """The vision tower: the shallowest submodule named ``visual`` (Qwen2/2.5/3-VL), or None."""
    found = [(n.count("."), m) for n, m in model.named_modules() if n.split(".")[-1] == "visual"]
    return min(found, key=lambda t: t[0])[1] if found else None


def apply_vision_policy(model: torch.nn.Module, mode: str) -> dict[str, int]:
    """Set ``requires_grad`` per the mode; returns counts of trainable vision / other parameters."""
    if mode == "lora":
        from vlmrl.models.lora import add_vision_lora

        add_vision_lora(model)
    for name, p in model.named_parameters():
        if not is_vision_param(name):
            continue
        if mode == "full":
            p.requires_grad_(True)
        elif mode == "frozen":
            p.requires_grad_(False)
        elif mode == "projector_only":
            p.requires_grad_(any(m in name for m in PROJECTOR_MARKERS))
        elif mode == "lora":
            p.requires_grad_("lora_" in name)
        else:
            raise ValueError(f"vision.train: unknown mode {mode!r}; allowed: {', '.join(VISION_MODES)}")
    counts = {"vision_trainable": 0, "other_trainable": 0}
    for name, p in model.named_parameters():
        if p.requires_grad:
            counts["vision_trainable" if is_vision_param(name) else "other_trainable"] += p.numel()
    return counts
