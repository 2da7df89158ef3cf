"""LoRA adapters via peft: on the vision tower (``vision.train: lora``) and on the language model
(``model.lora.r > 0``), plus the two things a trainer needs from them.

peft's ``inject_adapter_in_model`` adds ``lora_A`` / ``lora_B`` to the chosen linear layers in
place, so the model class (and ``generate``) stays the HF one. peft marks only adapters as
trainable when it injects; we restore every other parameter's ``requires_grad`` afterwards, so
LoRA on one part never silently freezes another (the tower follows ``vision.train``, the
language model ``model.lora``).

- :func:`adapters_disabled`: the policy with every adapter switched off *is* the base model when
  only adapters train, so the KL reference needs no second copy of the weights.
- :func:`merged_state_dict`: ``W + (α/r)·B·A`` per adapted layer under the plain HF names, for a
  checkpoint directory any ``from_pretrained`` (and vLLM) can load; computed out of place, so the
  live model's weights are never merged and unmerged (which would round them).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import torch

from vlmrl.models.params import is_vision_param

#: Qwen2/2.5/3-VL language-model linear layers (attention and MLP): the usual LoRA targets.
LM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _inject(model: torch.nn.Module, names: list[str], r: int, alpha: float, dropout: float) -> None:
    """Add adapters to the named linear layers; keep every other parameter's ``requires_grad``."""
    from peft import LoraConfig, inject_adapter_in_model

    before = {n: p.requires_grad for n, p in model.named_parameters()}
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=names, lora_dropout=dropout)
    with warnings.catch_warnings():  # a second injection (tower, then LM) is intended
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(cfg, model)
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.requires_grad_(True)
        else:  # peft renames an adapted layer's weight to ``….base_layer.weight``
            p.requires_grad_(before.get(n, before.get(n.replace(".base_layer.", "."), True)))


def add_vision_lora(model: torch.nn.Module, r: int = 8, alpha: int = 16) -> None:
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
        and (".visual." in f".{n}" or n.startswith("visual."))
        and ".blocks." in n
    ]
    if not names:
        raise ValueError("vision.train=lora: found no linear layers in a vision tower's blocks")
    _inject(model, names, r, alpha, 0.0)


def add_lm_lora(
    model: torch.nn.Module,
    r: int,
    alpha: float,
    dropout: float = 0.0,
    target_modules: Sequence[str] = LM_TARGETS,
) -> list[str]:
    """LoRA on the language model's linear layers whose last name is in ``target_modules``.

    The vision tower and ``lm_head`` are never targeted (the tower has its own ``vision.train``).
    Every non-vision base parameter (embeddings, norms, ``lm_head``, adapted weights) is frozen;
    returns the adapted module names.
    """
    targets = set(target_modules)
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
        and not is_vision_param(n + ".weight")
        and n.split(".")[-1] in targets
        and "lora_" not in n
    ]
    if not names:
        raise ValueError(
            f"model.lora.target_modules: {sorted(targets)} match no linear layer of the language model"
        )
    _inject(model, names, r, alpha, dropout)
    for n, p in model.named_parameters():
        if not is_vision_param(n):
            p.requires_grad_("lora_" in n)
    return names


def lora_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(name, layer)`` of every peft LoRA layer in the model."""
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def has_lora(model: torch.nn.Module) -> bool:
    return any("lora_" in n for n, _ in model.named_parameters())


def only_adapters_train(model: torch.nn.Module) -> bool:
    """True when every trainable parameter is a LoRA adapter (then adapters-off = the base model)."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    return bool(trainable) and all("lora_" in n for n in trainable)


@contextlib.contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``model`` with every LoRA adapter off (in eval mode); restores adapters, grads, mode."""
    layers = [m for _, m in lora_layers(model)]
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    model.eval()
    for m in layers:
        m.enable_adapters(False)
    try:
        yield model
    finally:
        for m in layers:
            m.enable_adapters(True)
        for n, p in model.named_parameters():
            p.requires_grad_(grads[n])
        model.train(was_training)


@torch.no_grad()
def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with adapters folded in: ``W' = W + ΔW`` under the plain layer names.

    ``ΔW`` is peft's ``get_delta_weight`` (``B·A·α/r``, fan-in/fan-out aware) of each active
    adapter; adapter tensors are dropped and ``….base_layer.x`` is renamed ``….x``. Tensors are
    new (on the weight's device: a GPU policy syncs to vLLM without a trip through host memory) for
    adapted weights and shared with the model otherwise. No module is mutated.
    """
    layers = dict(lora_layers(model))
    out: dict[str, torch.Tensor] = {}
    for key, val in model.state_dict().items():
        if "lora_" in key:
            continue
        if ".base_layer." in key:
            owner, leaf = key.split(".base_layer.", 1)
            layer = layers[owner]
            if leaf == "weight":
                val = val.detach().clone()
                for name in layer.active_adapters:
                    if name in layer.lora_A:
                        val += layer.get_delta_weight(name).detach().to(val.dtype)
            key = f"{owner}.{leaf}"
        out[key] = val
    return out
