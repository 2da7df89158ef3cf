r"""The reward-hacking watch: image statistics logged during RL next to the rewards.

A policy that games the verifiers (:mod:`vlmrl.gen.rewards`) drifts away from the pictures it
was pretrained on: it floods the canvas with colour, turns up saturation, or collapses to one
image. These numbers make that visible; none of them is a reward. :func:`image_stats` returns,
for a uint8 batch ``[B, H, W, 3]``:

* ``watch/saturation``: mean HSV saturation over all pixels (white background: 0, palette
  colours: ~0.82);
* ``watch/pixel_var``: mean over images of the variance of their pixels in ``[0, 1]`` (contrast;
  uniform noise ≈ 1/12);
* ``watch/batch_var``: mean over pixels of the variance across the batch (0 when every image is
  the same: mode collapse);
* ``watch/ink``: share of ink pixels (``rewards.ink_mask``);
* with a :class:`ReferenceSet`: ``watch/ref_distance``, the mean over images of the L2 distance
  of their 8×8 area-downsampled ``[0, 1]`` pixels (a 192-vector) to the nearest reference image,
  and ``watch/ref_distance_base``, the same number for a second rendered set against the
  references, computed once at build time: the distance an in-distribution image has. A
  ``ref_distance`` well above the base means the samples left the pretraining distribution.

The reference images come from a ``render_fn(prompt, rng) -> uint8 [H, W, 3]`` (e.g.
``vlmrl.gen.prompts.render``) over a list of prompts, so the watch depends on no model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlmrl.gen.rewards import hsv, ink_mask

RenderFn = Callable[[Any, np.random.Generator], np.ndarray]
SIDE = 8
"""Reference features are ``SIDE × SIDE × 3`` area means of the image in ``[0, 1]``."""


def check_batch(imgs: np.ndarray, what: str = "watch images") -> np.ndarray:
    """Return ``imgs`` if it is a uint8 ``[B, H, W, 3]`` array with ``B, H, W >= 1``; else ``ValueError``."""
    if not isinstance(imgs, np.ndarray) or imgs.dtype != np.uint8:
        got = imgs.dtype if isinstance(imgs, np.ndarray) else type(imgs).__name__
        raise ValueError(f"{what}: expected a numpy uint8 array [B, H, W, 3], got {got}")
    if imgs.ndim != 4 or imgs.shape[3] != 3 or min(imgs.shape[:3]) < 1:
        raise ValueError(f"{what}: expected shape [B, H, W, 3] with B, H, W >= 1, got {list(imgs.shape)}")
    return imgs


def downsample(imgs: np.ndarray, side: int = SIDE) -> np.ndarray:
    """Area means on a ``side × side`` grid: uint8 ``[B, H, W, 3]`` → float64 ``[B, side*side*3]`` in [0, 1].

    ``H`` and ``W`` must be multiples of ``side`` (32 and 16 px are, for the default 8).

    >>> imgs = np.zeros((2, 16, 16, 3), np.uint8); imgs[1] = 255
    >>> f = downsample(imgs); f.shape, f.min(1).tolist(), f.max(1).tolist()
    ((2, 192), [0.0, 1.0], [0.0, 1.0])
    """
    check_batch(imgs)
    b, h, w, _ = imgs.shape
    if h % side or w % side:
        raise ValueError(f"watch images: height and width must be multiples of {side}, got {h}x{w}")
    x = imgs.astype(np.float64).reshape(b, side, h // side, side, w // side, 3) / 255.0
    return x.mean(axis=(2, 4)).reshape(b, side * side * 3)  # [B, side*side*3]


def nearest_distance(feats: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """L2 distance of each row of ``feats [B, D]`` to its nearest row of ``ref [N, D]`` → ``[B]``.

    >>> nearest_distance(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 1.0], [3.0, 4.0]])).tolist()
    [1.0, 0.0]
    """
    d2 = (feats**2).sum(1)[:, None] + (ref**2).sum(1)[None, :] - 2.0 * feats @ ref.T  # [B, N]
    return np.sqrt(np.maximum(d2.min(1), 0.0))


def _render(render_fn: RenderFn, prompts: Sequence[Any], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` images, prompt ``i % len(prompts)`` for image ``i``, stacked into uint8 ``[n, H, W, 3]``."""
    imgs = [np.asarray(render_fn(prompts[i % len(prompts)], rng)) for i in range(n)]
    shapes = {(im.shape, im.dtype) for im in imgs}
    if len(shapes) != 1:
        raise ValueError(f"reference render_fn: images differ in shape/dtype: {sorted(map(str, shapes))}")
    return check_batch(np.stack(imgs), "reference render_fn output")


@dataclass(frozen=True)
class ReferenceSet:
    """Downsampled rendered images from the pretraining distribution, and their own baseline distance."""

    feats: np.ndarray
    """``[N, side*side*3]`` float64 features (:func:`downsample`) of the reference images."""
    base: float
    """Mean nearest-reference distance of a second, independent rendered set: the in-distribution level."""
    side: int = SIDE
    """Downsampling grid of ``feats``."""

    @classmethod
    def build(
        cls, render_fn: RenderFn, prompts: Sequence[Any], n: int = 256, seed: int = 0, side: int = SIDE
    ) -> ReferenceSet:
        """Render ``n`` references and ``n`` baseline images (prompts cycled) from ``default_rng(seed)``.

        Deterministic for a seed: the references are the first ``n`` draws, the baseline the next ``n``.
        """
        if n < 1 or not prompts:
            raise ValueError(f"ReferenceSet.build: need n >= 1 and prompts, got n={n} and {len(prompts)}")
        rng = np.random.default_rng(seed)
        feats = downsample(_render(render_fn, prompts, n, rng), side)
        fresh = downsample(_render(render_fn, prompts, n, rng), side)
        return cls(feats=feats, base=float(nearest_distance(fresh, feats).mean()), side=side)

    def distance(self, imgs: np.ndarray) -> np.ndarray:
        """Nearest-reference L2 distance of each image of a uint8 ``[B, H, W, 3]`` batch → ``[B]``."""
        feats = downsample(imgs, self.side)
        if feats.shape[1] != self.feats.shape[1]:
            got, want = feats.shape[1], self.feats.shape[1]
            raise ValueError(f"watch images: {got} features per image, the references have {want}")
        return nearest_distance(feats, self.feats)


def image_stats(imgs: np.ndarray, ref: ReferenceSet | None = None) -> dict[str, float]:
    """The watch numbers (module docstring) of a uint8 ``[B, H, W, 3]`` batch; ref keys only with ``ref``."""
    check_batch(imgs)
    x = imgs.astype(np.float64) / 255.0  # [B, H, W, 3]
    _, s, _ = hsv(imgs)  # [B, H, W]
    stats = {
        "watch/saturation": float(s.mean()),
        "watch/pixel_var": float(x.reshape(len(x), -1).var(1).mean()),
        "watch/batch_var": float(x.var(0).mean()),
        "watch/ink": float(np.mean([ink_mask(im).mean() for im in imgs])),
    }
    if ref is not None:
        stats["watch/ref_distance"] = float(ref.distance(imgs).mean())
        stats["watch/ref_distance_base"] = ref.base
    return stats
