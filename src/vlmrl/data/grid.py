"""A contact sheet of samples: each image with its question and answer underneath.

Looking at the data is the cheapest bug check there is (an unreadable label or an answer that
disagrees with the picture shows up at a glance), so the docs carry one for every task:
``write_tasks_grid("docs/tasks_grid.png")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from vlmrl.data.sample import IMAGE_PLACEHOLDER, Sample
from vlmrl.data.tasks import generate, task_names
from vlmrl.data.tasks.base import font

CAPTION_INK = (20, 20, 20)
ANSWER_INK = (0, 110, 40)


def save_grid(
    samples: Sequence[Sample], path: str | Path, cols: int | None = None, cell: int = 224, font_size: int = 13
) -> Path:
    """Tile the first image of each sample (scaled to ``cell`` px) above its task, question and answer.

    Small images are upscaled with nearest-neighbour so pixels stay sharp, as a model sees them.
    Returns the written path.
    """
    if not samples:
        raise ValueError("save_grid needs at least one sample")
    cols = cols or min(len(samples), 6)
    rows = -(-len(samples) // cols)
    f = font(font_size)
    line_h = font_size + 4
    pad = 8
    captions = [_caption(s, f, cell) for s in samples]
    cap_h = max(len(c) for c in captions) * line_h + pad
    tile_w, tile_h = cell + 2 * pad, cell + cap_h + 2 * pad
    sheet = Image.new("RGB", (cols * tile_w, rows * tile_h), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    for i, (s, lines) in enumerate(zip(samples, captions, strict=True)):
        x0, y0 = (i % cols) * tile_w + pad, (i // cols) * tile_h + pad
        if s.images:
            img = s.images[0].convert("RGB")
            scale = cell / max(img.size)
            resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)
            sheet.paste(img, (x0 + (cell - img.width) // 2, y0 + (cell - img.height) // 2))
            draw.rectangle([x0 - 1, y0 - 1, x0 + cell, y0 + cell], outline=(180, 180, 180))
        for j, (text, ink) in enumerate(lines):
            draw.text((x0, y0 + cell + pad // 2 + j * line_h), text, fill=ink, font=f)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def write_tasks_grid(path: str | Path, per_task: int = 3, seed: int = 0, cols: int | None = None) -> Path:
    """The docs' sample sheet: ``per_task`` samples of every registered task, one task per row."""
    samples = [s for name in task_names() for s in generate(name, per_task, seed=seed)]
    return save_grid(samples, path, cols=cols or per_task * 2)


def _caption(s: Sample, f, width: int) -> list[tuple[str, tuple[int, int, int]]]:
    """Caption lines (text, colour): task, the wrapped question, the answer."""
    question = s.problem.replace(IMAGE_PLACEHOLDER, " ").strip()
    size = f" {s.images[0].width}x{s.images[0].height}" if s.images else ""
    lines = [(f"[{s.task}]{size}", (90, 90, 90))]
    lines += [(t, CAPTION_INK) for t in _wrap(question, f, width)]
    lines += [(t, ANSWER_INK) for t in _wrap(f"answer: {s.answer}", f, width)]
    return lines


def _wrap(text: str, f, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels with font ``f``."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and f.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    if line:
        lines.append(line)
    return lines
