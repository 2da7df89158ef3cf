"""Is the vision encoder degrading? Features and weights of the tower vs. the initial model.

``DriftMonitor`` runs the vision tower alone on a fixed probe batch (a few eval images) at
construction, keeps its outputs as the reference, and keeps a CPU copy of the tower's initial
weights θ₀. ``measure()`` reruns the tower and compares:

- ``vision/cos_sim``: mean over tokens of cos(f_ref[i], f_now[i]) for the last vision block's
  output (one vector per patch): 1 when nothing moved;
- ``vision/cka``: linear CKA (Kornblith et al. 2019, "Similarity of Neural Network
  Representations Revisited") between the reference and current token features: invariant to
  rotations and isotropic scaling of the features, so it flags changes of *structure*, which
  cosine alone mixes up with harmless rotations;
- ``vision/merger_cos_sim``, ``vision/merger_cka``: the same for the merger (projector) output,
  i.e. the image embeddings the language model actually sees;
- ``vision/weight_change``: ||θ − θ₀|| / ||θ₀|| over the tower's parameters (LoRA adapters are
  merged in: W + s·B·A, so a LoRA run's change shows here too);
- ``vision/drift_alert``: 1.0 while 1 − cos_sim exceeds ``vision.drift_warn`` (a warning is logged
  once each time it crosses the threshold), else 0.0.

Running the Qwen2/2.5-VL tower alone (transformers 5.24): ``model.model.visual(pixel_values,
grid_thw=image_grid_thw)`` returns ``BaseModelOutputWithPooling`` with ``last_hidden_state``
(the last block's output, ``[patches, vision_hidden]``, in the tower's window order — the same
order for the same images, so rows stay paired) and ``pooler_output`` (the merger output,
``[patches / merge², text_hidden]``); transformers 4.x returned the merger output as a tensor,
which is accepted too (then only the merger metrics exist and they are also the main ones).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from vlmrl.models.vision import find_visual

log = logging.getLogger(__name__)

#: How many eval images form the fixed probe batch.
PROBE_IMAGES = 4


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two feature matrices over the same n examples: ``x`` [n, d1], ``y`` [n, d2].

    With column-centred X, Y: CKA = ||Yᵀ X||_F² / (||Xᵀ X||_F · ||Yᵀ Y||_F), in [0, 1];
    1 for Y = X·Q·c (Q orthogonal, c ≠ 0). For one feature it is the squared correlation:

    >>> linear_cka(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[1.0], [3.0], [2.0]]))
    0.25
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"linear_cka: need [n, d1] and [n, d2] with the same n, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    x = x.double() - x.double().mean(0, keepdim=True)  # [n, d1]
    y = y.double() - y.double().mean(0, keepdim=True)  # [n, d2]
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2  # ||YᵀX||_F²
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norm) if norm > 0 else 0.0


def mean_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over rows of cos(x[i], y[i]) for paired token features ``x``, ``y`` [n, d]."""
    return float(torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1).mean())


def vision_weights(visual: torch.nn.Module, copy: bool = True) -> dict[str, torch.Tensor]:
    """The tower's effective weights by plain name, detached, on the CPU (``copy=False``: CPU
    parameters are shared, not copied — for reading only).

    peft LoRA layers (``…qkv.base_layer.weight`` + ``lora_A`` / ``lora_B``) are merged into
    ``…qkv.weight`` = W + ``get_delta_weight`` (s·B·A), so names match a model without adapters
    (the one a resumed run loads its reference from).
    """
    out = {
        n.replace(".base_layer.", "."): p.detach().to("cpu", copy=copy)
        for n, p in visual.named_parameters()
        if "lora_" not in n
    }
    for name, mod in visual.named_modules():
        if hasattr(mod, "base_layer") and hasattr(mod, "get_delta_weight"):
            key = f"{name}.weight"
            for adapter in getattr(mod, "active_adapters", []):
                if adapter in getattr(mod, "lora_A", {}):
                    out[key] = out[key] + mod.get_delta_weight(adapter).detach().to("cpu", out[key].dtype)
    return out


def probe_batch(processor, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
    """``pixel_values`` and ``image_grid_thw`` for ``images`` from the processor's image processor."""
    enc = processor.image_processor(images=list(images), return_tensors="pt")
    if "image_grid_thw" not in enc:
        raise ValueError(
            f"drift monitor: {type(processor.image_processor).__name__} returned {sorted(enc)}; "
            "need pixel_values and image_grid_thw (a Qwen2/2.5-VL style processor)"
        )
    return {"pixel_values": enc["pixel_values"], "image_grid_thw": enc["image_grid_thw"]}


@torch.no_grad()
def tower_features(visual: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run the tower alone: ``{"block": last block output, "merger": merger output}`` (float32, CPU)."""
    p = next(visual.parameters())
    was_training = visual.training
    visual.eval()
    try:
        out = visual(
            batch["pixel_values"].to(p.device, p.dtype), grid_thw=batch["image_grid_thw"].to(p.device)
        )
    finally:
        visual.train(was_training)
    if isinstance(out, torch.Tensor):  # transformers 4.x: the merger output only
        return {"merger": out.float().cpu()}
    feats = {"merger": out.pooler_output}
    if getattr(out, "last_hidden_state", None) is not None:
        feats["block"] = out.last_hidden_state
    return {k: v.float().cpu() for k, v in feats.items()}


class DriftMonitor:
    """Vision-feature and weight drift vs. a reference tower on a fixed probe batch.

    ``reference`` (a model with the initial tower) gives the reference features and θ₀ when
    ``model`` is not the initial model any more (a resumed run); by default ``model`` itself, as
    it is at construction, is the reference.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        probe_images: Sequence[Image.Image],
        processor,
        warn: float = 0.1,
        reference: torch.nn.Module | None = None,
    ):
        self.visual = find_visual(model)
        if self.visual is None:
            raise ValueError(f"drift monitor: {type(model).__name__} has no `visual` vision tower")
        if not probe_images:
            raise ValueError("drift monitor: no probe images")
        ref_visual = self.visual if reference is None else find_visual(reference)
        if ref_visual is None:
            raise ValueError(f"drift monitor: reference {type(reference).__name__} has no `visual` tower")
        self.warn = warn
        self.batch = probe_batch(processor, probe_images)
        self.reference = tower_features(ref_visual, self.batch)
        self.theta0 = vision_weights(ref_visual)
        self.alerting = False

    def features(self) -> dict[str, torch.Tensor]:
        """The tower's current outputs on the probe batch."""
        return tower_features(self.visual, self.batch)

    def weight_change(self) -> float:
        """||θ − θ₀|| / ||θ₀|| over the parameters present in both (by plain name)."""
        now = vision_weights(self.visual, copy=False)
        diff = ref = 0.0
        for name, p0 in self.theta0.items():
            if name in now:
                diff += float((now[name].double() - p0.double()).pow(2).sum())
                ref += float(p0.double().pow(2).sum())
        return (diff**0.5) / (ref**0.5) if ref > 0 else 0.0

    def measure(self) -> dict[str, float]:
        """The ``vision/*`` metrics of the module docstring; logs a warning on crossing ``warn``."""
        now = self.features()
        out: dict[str, float] = {}
        main = "block" if "block" in now else "merger"
        for kind in (main, "merger"):
            prefix = "vision/" if kind == main else "vision/merger_"
            out[f"{prefix}cos_sim"] = mean_cosine(self.reference[kind], now[kind])
            out[f"{prefix}cka"] = linear_cka(self.reference[kind], now[kind])
        out["vision/weight_change"] = self.weight_change()
        drift = 1.0 - out["vision/cos_sim"]
        if drift > self.warn and not self.alerting:
            log.warning(
                "vision encoder drift: 1 - cos_sim = %.4f exceeds vision.drift_warn = %.4f "
                "(CKA %.4f, relative weight change %.4f)",
                drift,
                self.warn,
                out["vision/cka"],
                out["vision/weight_change"],
            )
        self.alerting = drift > self.warn
        out["vision/drift_alert"] = float(self.alerting)
        return out


def probe_images(samples: Sequence[Any], n: int = PROBE_IMAGES) -> list[Image.Image]:
    """The first ``n`` images of ``samples`` (in order): the fixed probe batch."""
    return [im for s in samples for im in s.images][:n]


def build_drift_monitor(
    policy, samples: Sequence[Any], cfg, resumed: bool = False, reference: torch.nn.Module | None = None
) -> DriftMonitor | None:
    """The trainer's monitor per ``cfg`` (a TrainConfig), or None when off / impossible.

    On a resumed run the policy holds checkpoint weights, so the reference tower must come from
    the initial model ``cfg.model.path``: ``reference`` if given (the KL reference model already
    is that model), else it is loaded here and dropped after θ₀ and the features are copied.
    """
    if not cfg.eval.drift:
        return None
    if find_visual(policy.model) is None:
        log.debug(
            "eval.drift: %s has no `visual` vision tower; drift not measured", type(policy.model).__name__
        )
        return None
    images = probe_images(samples)
    if not images:
        log.debug("eval.drift: no eval images to probe the vision tower with; drift not measured")
        return None
    if resumed and reference is None:
        from vlmrl.models import load_policy

        m = cfg.model
        reference = load_policy(m.path, m.dtype, m.device, m.attn_implementation).model
    return DriftMonitor(policy.model, images, policy.processor, cfg.vision.drift_warn, reference)
