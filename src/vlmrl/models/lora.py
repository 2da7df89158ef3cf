"""LoRA adapters on the vision tower via peft (``vision.train: lora``).

peft's ``inject_adapter_in_model`` adds ``lora_A`` / ``lora_B`` to the tower's linear layers in
place, so the model class (and its ``save_pretrained``) stays the HF one; only the adapters
train inside the tower.
"""

from __future__ import annotations

import torch


def add_vision_lora(model: torch.nn.Module, r: int = 8, alpha: int = 16) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
        and (".visual." in f".{n}" or n.startswith("visual."))
        and ".blocks." in n
    ]
    if not names:
        raise ValueError("vision.train=lora: found no linear layers in a vision tower's blocks")
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=names, lora_dropout=0.0)
    inject_adapter_in_model(cfg, model)
