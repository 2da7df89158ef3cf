"""A labelled grid of generated images: one row per prompt (the report's "samples" section)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

LABEL_W = 190  # px for the prompt text left of each row


def grid_image(
    rows: Sequence[np.ndarray], labels: Sequence[str], scale: int = 3, pad: int = 2
) -> Image.Image:
    """``rows[i]``: uint8 ``[k_i, H, W, 3]`` images of prompt ``labels[i]`` → one RGB image
    (nearest-neighbour upscaled ×``scale``, so single pixels stay visible)."""
    if len(rows) != len(labels):
        raise ValueError(f"grid: {len(rows)} rows but {len(labels)} labels")
    h, w = (rows[0].shape[1], rows[0].shape[2]) if rows and len(rows[0]) else (32, 32)
    cols = max((len(r) for r in rows), default=0)
    cell_h, cell_w = h * scale + pad, w * scale + pad
    out = Image.new("RGB", (LABEL_W + cols * cell_w, max(1, len(rows)) * cell_h), (245, 245, 245))
    draw = ImageDraw.Draw(out)
    for i, (imgs, label) in enumerate(zip(rows, labels, strict=True)):
        y = i * cell_h
        draw.text((4, y + cell_h // 2 - 6), label[:32], fill=(20, 20, 20))
        for j, im in enumerate(imgs):
            tile = Image.fromarray(np.ascontiguousarray(im)).resize(
                (w * scale, h * scale), Image.Resampling.NEAREST
            )
            out.paste(tile, (LABEL_W + j * cell_w, y))
    return out


def save_grid(path: Path, rows: Sequence[np.ndarray], labels: Sequence[str], scale: int = 3) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(rows, labels, scale).save(path)
    return path
