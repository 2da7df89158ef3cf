"""Feature-anchor loss: keep the vision tower's output near where training started.

``vision.anchor_coef = c > 0`` adds, once per optimizer step,

    L_anchor = c · mean_j (1 − cos(f_θ(x)_j, f_0(x)_j))

to the policy loss, where ``x`` are the step's rollout images (each prompt's images once, not
once per sampled completion), ``f_θ`` is the policy's vision tower and ``f_0`` a frozen copy
of the tower at the start of training (the reference model's tower when ``algo.kl_coef > 0``,
so no second copy is made), and ``j`` runs over the features the language model sees: the
merger (projector) output, one vector per merged patch. It is 0 until the tower (or merger)
moves; it is the "do not let RL blind the encoder" knob of docs/design.md, in the spirit of
feature-distillation regularisers. With ``c = 0`` nothing is built or computed.

Running the tower alone (transformers 5.24, Qwen2/2.5-VL): ``model.model.visual(pixel_values,
grid_thw=image_grid_thw)`` returns ``BaseModelOutputWithPooling`` whose ``pooler_output`` is
the merger output ``[patches / merge², text_hidden]`` — what ``get_image_features`` splits per
image; transformers 4.x returned that tensor directly, which is accepted too.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from vlmrl.models.vision import find_visual


def vision_tower(model: torch.nn.Module) -> torch.nn.Module:
    """The vision tower (:func:`vlmrl.models.vision.find_visual`); an error when there is none."""
    tower = find_visual(model)
    if tower is None:
        raise ValueError(
            f"vision.anchor_coef > 0 needs a vision tower named 'visual'; {type(model).__name__} has none"
        )
    return tower


def tower_features(
    tower: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor
) -> torch.Tensor:
    """The features the language model sees, ``[tokens, hidden]`` (see the module docstring)."""
    param = next(tower.parameters())
    out = tower(pixel_values.to(device=param.device, dtype=param.dtype), grid_thw=grid_thw.to(param.device))
    return out.pooler_output if hasattr(out, "pooler_output") else out


class FeatureAnchor:
    """A frozen copy of the tower at the start of training and the loss against it.

    ``reference`` is the model whose tower is the anchor (the policy itself at step 0 — its tower
    is deep-copied — or an already frozen reference model, whose tower is used as is).
    """

    def __init__(self, reference: torch.nn.Module, coef: float, copy_tower: bool = True) -> None:
        tower = vision_tower(reference)
        self.ref = copy.deepcopy(tower) if copy_tower else tower
        self.ref.eval().requires_grad_(False)
        self.coef = float(coef)

    def loss(self, model: torch.nn.Module, prompt_inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """``mean(1 − cos(f_θ, f_0))`` over the prompts' image features (unscaled); None without images."""
        if "pixel_values" not in prompt_inputs or "image_grid_thw" not in prompt_inputs:
            return None
        pix, grid = prompt_inputs["pixel_values"], prompt_inputs["image_grid_thw"]
        f = tower_features(vision_tower(model), pix, grid)  # [T, D]
        with torch.no_grad():
            f0 = tower_features(self.ref, pix, grid)  # [T, D]
        return (1.0 - F.cosine_similarity(f.float(), f0.float(), dim=-1)).mean()  # []


def build_anchor(
    cfg, model: torch.nn.Module, ref: torch.nn.Module | None, resumed: bool
) -> FeatureAnchor | None:
    """The run's anchor, or None when ``vision.anchor_coef`` is 0.

    The anchor is the tower at the *start of training*: the frozen KL reference's tower when
    there is one; else a copy of the policy's tower now (before any update) — or, when resuming,
    the tower of ``cfg.model.path`` reloaded, since the policy has already moved.
    """
    coef = cfg.vision.anchor_coef
    if coef < 0:
        raise ValueError(f"vision.anchor_coef must be >= 0, got {coef}")
    if coef == 0:
        return None
    if ref is not None:
        return FeatureAnchor(ref, coef, copy_tower=False)
    if resumed:
        from vlmrl.models import load_policy

        m = cfg.model
        start = load_policy(m.path, m.dtype, m.device, m.attn_implementation).model
        return FeatureAnchor(start, coef, copy_tower=False)
    return FeatureAnchor(model, coef)
