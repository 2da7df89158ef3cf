"""Which processor outputs belong to images and videos, and how a prompt's share is found.

Qwen2-VL-family processors return, beside the token-aligned tensors, one block per kind of
media: rows of patches (``pixel_values`` / ``pixel_values_videos``, ``[Σ t·h·w, D]``), one grid
per item (``image_grid_thw`` / ``video_grid_thw``, ``[n, 3]``) and, for videos, one value per
item (``second_per_grid_ts``, ``[n]``: seconds per temporal patch, which sets the temporal M-RoPE
step). Prompt b owns ``counts[b]`` consecutive items; its patch rows are the sum of its grids'
``t·h·w``. Each kind is described once here (:data:`MEDIA`) and every gather reads that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MediaKind:
    """The processor outputs of one kind of media and the per-prompt count that splits them."""

    pixels: str  # [Σ t·h·w, D] patch rows
    grid: str  # [n, 3] (t, h, w) per item
    count: str  # [B] items per prompt (added by encode_prompts)
    per_item: tuple[str, ...] = ()  # [n] one value per item

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.pixels, self.grid, *self.per_item)


IMAGES = MediaKind("pixel_values", "image_grid_thw", "images_per_prompt")
VIDEOS = MediaKind("pixel_values_videos", "video_grid_thw", "videos_per_prompt", ("second_per_grid_ts",))
MEDIA = (IMAGES, VIDEOS)
#: Every media-aligned key (not token-aligned), and the per-prompt counts.
MEDIA_KEYS = tuple(k for kind in MEDIA for k in kind.keys)
COUNT_KEYS = tuple(kind.count for kind in MEDIA)


def media_rows(prompt_inputs: dict[str, torch.Tensor], kind: MediaKind) -> tuple[list[slice], list[slice]]:
    """Per prompt: its slice of ``kind.pixels`` rows and of item rows (grids, per-item values)."""
    counts = prompt_inputs[kind.count].tolist()
    grid = prompt_inputs.get(kind.grid)
    patches = grid.prod(-1).tolist() if grid is not None else []
    pix, items, item, row = [], [], 0, 0
    for c in counts:
        n_rows = int(sum(patches[item : item + c]))
        pix.append(slice(row, row + n_rows))
        items.append(slice(item, item + c))
        item += c
        row += n_rows
    return pix, items


def gather_media(
    prompt_inputs: dict[str, torch.Tensor], prompts: list[int], kinds: tuple[MediaKind, ...] = MEDIA
) -> dict[str, torch.Tensor]:
    """The media outputs of ``prompts`` (indices, repeats allowed), concatenated in that order."""
    out: dict[str, torch.Tensor] = {}
    for kind in kinds:
        if kind.pixels not in prompt_inputs:
            continue
        pix, items = media_rows(prompt_inputs, kind)
        out[kind.pixels] = torch.cat([prompt_inputs[kind.pixels][pix[p]] for p in prompts], dim=0)
        for key in (kind.grid, *kind.per_item):
            if key in prompt_inputs:
                out[key] = torch.cat([prompt_inputs[key][items[p]] for p in prompts], dim=0)
    return out
