"""Where prompts come from during training, with a position that a checkpoint can store.

A procedural task draws sample ``i`` from its own seeded RNG (``vlmrl.data.tasks.generate``),
so the stream is a pure function of its position: resuming at position p replays exactly.
A finite dataset is walked in a seeded permutation per epoch, the position counting samples.
"""

from __future__ import annotations

import random

from vlmrl.config.schema import DataConfig
from vlmrl.data import Sample


class PromptStream:
    """``next(k)`` returns the next k training samples and advances ``position``."""

    def __init__(self, cfg: DataConfig, position: int = 0):
        self.cfg = cfg
        self.position = position
        self._dataset: list[Sample] | None = None
        if cfg.path:
            self._dataset = load_data(cfg, cfg.path, "train")
            if cfg.train_size:
                self._dataset = self._dataset[: cfg.train_size]
            if not self._dataset:
                raise ValueError(f"data.path {cfg.path!r}: no samples")
        else:
            from vlmrl.data.tasks import get_task

            self._task = get_task(cfg.task, **cfg.task_kwargs)

    def _at(self, i: int) -> Sample:
        if self._dataset is not None:
            n = len(self._dataset)
            epoch, j = divmod(i, n)
            order = list(range(n))
            random.Random(f"vlmrl-stream:{self.cfg.seed}:{epoch}").shuffle(order)
            return self._dataset[order[j]]
        from vlmrl.data.tasks import generate

        idx = i % self.cfg.train_size if self.cfg.train_size else i
        return generate(self._task, 1, seed=self.cfg.seed, split="train", start=idx)[0]

    def next(self, k: int) -> list[Sample]:
        out = [self._at(self.position + j) for j in range(k)]
        self.position += k
        return out

    def next_shard(self, total: int, rank: int = 0, world: int = 1) -> list[Sample]:
        """Rank ``rank``'s contiguous share of the next ``total`` samples: positions
        ``[p + rank·k, p + (rank+1)·k)`` with ``k = total / world``; advances by ``total`` (the
        position stays global, so a checkpoint resumes at any world size)."""
        if total % world:
            raise ValueError(f"train.batch_prompts: {total} must be divisible by the {world} processes")
        k = total // world
        out = [self._at(self.position + rank * k + j) for j in range(k)]
        self.position += total
        return out


def load_data(cfg: DataConfig, path: str, split: str) -> list[Sample]:
    """``path`` (``NAME@SPLIT`` overrides ``split``) read with the config's column names and image root."""
    from vlmrl.data import load_dataset
    from vlmrl.data.video import FrameSpec

    frames = FrameSpec(cfg.video_fps, cfg.video_max_frames, cfg.video_max_pixels)
    return load_dataset(
        path, split, cfg.image_key, cfg.prompt_key, cfg.answer_key, cfg.image_dir, cfg.image_bounds,
        cfg.video_key, frames,
    )  # fmt: skip


def eval_samples(cfg: DataConfig) -> list[Sample]:
    """The held-out split: a disjoint procedural split, or ``data.eval_path``."""
    if cfg.path:
        if not cfg.eval_path:
            return []
        return load_data(cfg, cfg.eval_path, "test")[: cfg.eval_size]
    from vlmrl.data.tasks import generate, get_task

    knobs = cfg.task_kwargs if cfg.eval_task_kwargs is None else cfg.eval_task_kwargs
    return generate(get_task(cfg.task, **knobs), cfg.eval_size, seed=cfg.seed, split="test")
