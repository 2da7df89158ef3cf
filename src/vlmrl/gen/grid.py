"""A labelled grid of generated images, one row per prompt (pretraining samples, the RL report)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def image_grid(
    rows: Sequence[np.ndarray], labels: Sequence[str] | None = None, scale: int = 2
) -> Image.Image:
    """A PIL image: row ``i`` holds the uint8 images ``rows[i]`` ``[K, H, W, 3]`` side by side.

    Images are upscaled ``scale``x with nearest neighbour and separated by 2 px of grey; with
    ``labels``, each row starts with its label text.
    """
    if not rows:
        raise ValueError("image_grid: no rows")
    k = max(len(r) for r in rows)
    h, w = rows[0].shape[1] * scale, rows[0].shape[2] * scale
    pad, label_w = 2, (170 if labels else 0)
    grid = Image.new("RGB", (label_w + k * (w + pad) + pad, len(rows) * (h + pad) + pad), (128, 128, 128))
    draw = ImageDraw.Draw(grid)
    for i, row in enumerate(rows):
        y = pad + i * (h + pad)
        if labels:
            draw.rectangle([0, y, label_w - 1, y + h - 1], fill=(255, 255, 255))
            draw.text((4, y + h // 2 - 6), labels[i], fill=(0, 0, 0))
        for j, img in enumerate(row):
            tile = Image.fromarray(img).resize((w, h), Image.NEAREST)
            grid.paste(tile, (label_w + pad + j * (w + pad), y))
    return grid


def save_grid(path: Path, rows: Sequence[np.ndarray], labels: Sequence[str], scale: int = 3) -> Path:
    """:func:`image_grid` written to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, labels, scale).save(path)
    return path
