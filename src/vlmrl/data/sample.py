"""The one record every data source produces and every reward consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"


@dataclass
class Video:
    """One video as the model sees it: its sampled frames in time order and the rate they were
    sampled at (frames per second), which sets the temporal M-RoPE step of Qwen2.5-VL
    (``tokens_per_second · temporal_patch_size / fps`` positions per temporal patch)."""

    frames: list[Image.Image]
    fps: float = 2.0


#: How a sample's answer is checked; picks the accuracy reward when a config says ``auto``.
ANSWER_TYPES = ("math", "number", "choice", "yesno", "box", "text")


@dataclass
class Sample:
    """One prompt with its images (and videos) and ground truth.

    ``problem`` carries one ``<image>`` placeholder per image (EasyR1 / geometry3k schema) and one
    ``<video>`` per video (EasyR1's ``videos`` column convention);
    ``facts`` holds the scene's ground truth when the task is procedural (objects, colours,
    boxes, numbers), which the perception and hallucination rewards score against.
    ``columns`` keeps every field of a dataset row except the decoded image column, under the
    dataset's own names, so a reward can read any of them (TRL passes columns as keyword
    arguments the same way); procedural samples leave it empty.
    """

    id: str
    images: list[Image.Image]
    problem: str
    answer: str
    task: str = "custom"
    answer_type: str = "math"
    facts: dict[str, Any] = field(default_factory=dict)
    split: str = "train"
    columns: dict[str, Any] = field(default_factory=dict)
    videos: list[Video] = field(default_factory=list)
