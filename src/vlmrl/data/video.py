"""Videos at the data edge: frame sampling, frame size, and decoding a row's ``videos`` field.

A video reaches the model as a :class:`~vlmrl.data.sample.Video`: frames in time order plus the
rate they were sampled at. Three knobs shape it (``data.video_fps``, ``data.video_max_frames``,
``data.video_max_pixels``, EasyR1's names):

- **frame sampling** (:func:`sample_frame_indices`): a clip of ``total`` frames recorded at
  ``src_fps`` lasts ``total / src_fps`` s; we keep ``n = min(max_frames, ⌊duration · fps⌋)``
  frames, rounded down to a multiple of ``multiple`` (Qwen2.5-VL's ``temporal_patch_size`` = 2:
  frames enter the vision tower in pairs), at least ``multiple``; the kept indices are evenly
  spaced, ``round(k · (total − 1) / (n − 1))``. The video's rate is then ``n / duration``.
- **frame size** (:func:`fit_frame`): a frame larger than ``max_pixels`` is scaled down, aspect
  kept, to ``⌊w·s⌋ × ⌊h·s⌋`` with ``s = √(max_pixels / (w·h))`` (as EasyR1 scales images).
- **decoding** (:func:`read_video`): a row's video is a list of frames (PIL images, bytes,
  ``{"bytes"}``/``{"path"}`` structs or paths, at ``data.video_fps`` unless given as
  ``{"frames": [...], "fps": F}``) or a path to a video file, decoded by transformers'
  ``load_video`` with whichever backend is installed (PyAV: ``pip install av``).

Every problem is one :class:`~vlmrl.errors.UserError` line naming the row and field: no frames,
frames of different sizes, an undecodable frame or file, a rate that is not a positive number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vlmrl.data.sample import VIDEO_PLACEHOLDER, Video
from vlmrl.errors import UserError

#: Frames enter Qwen2.5-VL's vision tower in pairs (``temporal_patch_size``).
TEMPORAL_PATCH = 2


@dataclass(frozen=True)
class FrameSpec:
    """How a dataset's videos are sampled: ``data.video_fps``, ``video_max_frames``, ``video_max_pixels``."""

    fps: float = 2.0
    max_frames: int = 16
    max_pixels: int | None = None


def sample_frame_indices(
    total: int, src_fps: float, fps: float, max_frames: int, multiple: int = TEMPORAL_PATCH
) -> list[int]:
    """Indices of the frames to keep from a clip of ``total`` frames at ``src_fps`` (see module doc).

    A clip shorter than ``multiple`` frames repeats its last frame, so the result always has a
    multiple of ``multiple`` entries.

    >>> sample_frame_indices(30, src_fps=30.0, fps=4.0, max_frames=16)  # 1 s at 4 fps -> 4 frames
    [0, 10, 19, 29]
    >>> sample_frame_indices(300, src_fps=30.0, fps=2.0, max_frames=8)  # 10 s: capped at 8
    [0, 43, 85, 128, 171, 214, 256, 299]
    >>> sample_frame_indices(1, src_fps=1.0, fps=2.0, max_frames=8)  # one frame, shown twice
    [0, 0]
    """
    if total < 1:
        raise UserError(f"video: a video needs at least one frame, got {total}")
    if not (src_fps > 0 and fps > 0 and math.isfinite(src_fps) and math.isfinite(fps)):
        raise UserError(f"video: frame rates must be positive numbers, got src_fps={src_fps}, fps={fps}")
    if max_frames < multiple:
        raise UserError(
            f"data.video_max_frames: {max_frames} is below the temporal patch of {multiple} frames"
        )
    want = min(max_frames, total, math.floor(total / src_fps * fps))
    n = max(multiple, want // multiple * multiple)
    if total == 1:
        return [0] * n
    return [min(total - 1, round(k * (total - 1) / (n - 1))) for k in range(n)]


def fit_frame(frame: Image.Image, max_pixels: int | None) -> Image.Image:
    """``frame`` scaled down (aspect kept) so that ``w·h ≤ max_pixels``; unchanged if it fits.

    >>> fit_frame(Image.new("RGB", (448, 224)), 112 * 112).size
    (158, 79)
    """
    w, h = frame.size
    if max_pixels is None or w * h <= max_pixels:
        return frame
    s = math.sqrt(max_pixels / (w * h))
    return frame.resize((max(1, math.floor(w * s)), max(1, math.floor(h * s))), Image.Resampling.BICUBIC)


def make_video(
    frames: list[Image.Image],
    src_fps: float,
    where: str,
    fps: float = 2.0,
    max_frames: int = 16,
    max_pixels: int | None = None,
) -> Video:
    """Sample, check and resize decoded ``frames`` into a :class:`Video` (``where`` names the row)."""
    if not frames:
        raise UserError(f"{where}: the video has no frames")
    sizes = {f.size for f in frames}
    if len(sizes) > 1:
        raise UserError(
            f"{where}: the video's frames differ in size {sorted(sizes)[:3]}; all frames must match"
        )
    try:
        idx = sample_frame_indices(len(frames), src_fps, fps, max_frames)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    duration = len(frames) / src_fps
    rate = len(idx) / duration if len(frames) > 1 else fps
    return Video([fit_frame(frames[i].convert("RGB"), max_pixels) for i in idx], fps=rate)


def read_video(
    value: Any,
    where: str,
    decode_frame: Callable[[Any, str], Image.Image],
    resolve: Callable[[Path, str], Path],
    spec: FrameSpec = FrameSpec(),
) -> Video:
    """One entry of a row's ``videos`` field as a :class:`Video` (see the module docstring).

    ``decode_frame(item, where)`` decodes one frame (the loader's image decoder, with its path
    rules); ``resolve(path, where)`` checks a video file's path the same way.
    """
    src_fps = spec.fps
    if isinstance(value, dict) and "frames" in value:
        src_fps = value.get("fps", spec.fps)
        if isinstance(src_fps, bool) or not isinstance(src_fps, (int, float)):
            raise UserError(f"{where}: 'fps' must be a number, got {src_fps!r}")
        value = value["frames"]
    if isinstance(value, (str, Path)):
        frames, src_fps = _decode_file(resolve(Path(value), where), where)
    elif isinstance(value, (list, tuple)):
        frames = [decode_frame(item, f"{where}[{j}]") for j, item in enumerate(value)]
    else:
        raise UserError(
            f"{where}: a video must be a list of frames or a video file path, got {type(value).__name__}"
        )
    return make_video(frames, float(src_fps), where, spec.fps, spec.max_frames, spec.max_pixels)


def row_videos(
    value: Any,
    problem: str,
    where: str,
    spec: FrameSpec,
    decode_frame: Callable[[Any, str], Image.Image],
    resolve: Callable[[Path, str], Path],
) -> list[Video]:
    """A row's videos field (None, or a list of videos) read with :func:`read_video`; the prompt
    must hold one ``<video>`` per video."""
    if value is not None and not isinstance(value, (list, tuple)):
        raise UserError(f"{where}: expected a list of videos, got {type(value).__name__}")
    videos = [read_video(v, f"{where}[{j}]", decode_frame, resolve, spec) for j, v in enumerate(value or [])]
    n = problem.count(VIDEO_PLACEHOLDER)
    if n != len(videos):
        raise UserError(
            f"{where}: {len(videos)} video(s) but the prompt has {n} {VIDEO_PLACEHOLDER!r} placeholder(s); "
            "they must match (one placeholder per video)"
        )
    return videos


def _decode_file(path: Path, where: str) -> tuple[list[Image.Image], float]:
    """All frames of a video file and its frame rate, through transformers' ``load_video``."""
    from transformers.video_utils import load_video

    try:
        array, meta = load_video(str(path), backend=_backend(where))
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{where}: cannot decode video file '{path.name}': {str(e).splitlines()[0]}") from e
    frames = [Image.fromarray(a).convert("RGB") for a in array]
    return frames, float(getattr(meta, "fps", None) or 0) or 1.0


def _backend(where: str) -> str:
    """The first installed decoder transformers' ``load_video`` can use."""
    import importlib.util

    for module, name in (
        ("av", "pyav"),
        ("decord", "decord"),
        ("cv2", "opencv"),
        ("torchcodec", "torchcodec"),
    ):
        if importlib.util.find_spec(module) is not None:
            return name
    raise UserError(
        f"{where}: decoding a video file needs a decoder (pip install av), or give the video as frames"
    )
