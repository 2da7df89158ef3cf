"""GUI actions as tool calls, their checking and clipping, and the screen's coordinate spaces.

The model acts with one tool call per turn, read by the strict parser of
:mod:`vlmrl.envs.toolcall` and checked against the schemas below:

* ``click(x, y)``: a point of the screenshot the model was shown, in its pixels (``x`` right,
  ``y`` down, origin at the top-left corner);
* ``type(text)``: printable text into the focused field; ``scroll(dir)``: ``up`` / ``down``;
* ``key(name)``: ``enter``, ``escape``, ``backspace`` or ``tab``; ``done()``: the task is finished.

Clipping: a click up to ``CLICK_MARGIN`` px outside the screen is moved onto its edge (a model
aiming at a border should not be punished for one pixel); farther out it is an error the model
is told about. Nothing here raises on any input: :func:`read_action` returns an :class:`Action`
or an error string.

Coordinates: actions use the screenshot's own pixels (``screen`` space, e.g. 224×224). A Qwen-VL
processor resizes the image before the vision tower sees it (the tiny model: 224 → 112);
:func:`processor_size` computes that size as Qwen's ``smart_resize`` does, and
:func:`to_processor` / :func:`from_processor` map points between the two spaces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vlmrl.envs.gui.app import KEYS, SCROLL_DIRS
from vlmrl.envs.toolcall import parse_tool_call
from vlmrl.envs.types import ToolCallError
from vlmrl.envs.validate import validate

#: How far (px) outside the screen a click is clipped onto the edge rather than refused.
CLICK_MARGIN = 4
MAX_TYPE_CHARS = 32
ACTION_NAMES = ("click", "type", "scroll", "key", "done")

_NUM = {"type": "number", "minimum": -1e6, "maximum": 1e6}
SCHEMAS: dict[str, dict[str, Any]] = {
    "click": {
        "type": "object",
        "properties": {"x": _NUM, "y": _NUM},
        "required": ["x", "y"],
        "additionalProperties": False,
    },
    "type": {
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": MAX_TYPE_CHARS}},
        "required": ["text"],
        "additionalProperties": False,
    },
    "scroll": {
        "type": "object",
        "properties": {"dir": {"type": "string", "enum": list(SCROLL_DIRS)}},
        "required": ["dir"],
        "additionalProperties": False,
    },
    "key": {
        "type": "object",
        "properties": {"name": {"type": "string", "enum": list(KEYS)}},
        "required": ["name"],
        "additionalProperties": False,
    },
    "done": {"type": "object", "properties": {}, "additionalProperties": False},
}
DESCRIPTIONS = {
    "click": "Click the point (x, y) of the screenshot, in its pixels: x right, y down from the top-left.",
    "type": "Type text into the focused text field (click the field first).",
    "scroll": "Scroll the list on the screen one row up or down.",
    "key": "Press a key: enter, escape, backspace or tab.",
    "done": "Say the task is finished; ends the episode.",
}


@dataclass(frozen=True)
class Action:
    """One checked action: ``name`` and its arguments (``x``/``y`` already clipped, in screen px)."""

    name: str
    x: int = 0
    y: int = 0
    text: str = ""

    def call(self) -> dict[str, Any]:
        """The tool call that writes this action (for SFT traces)."""
        args: dict[str, Any] = {
            "click": {"x": self.x, "y": self.y},
            "type": {"text": self.text},
            "scroll": {"dir": self.text},
            "key": {"name": self.text},
            "done": {},
        }[self.name]
        return {"name": self.name, "arguments": args}


def tool_schemas() -> list[dict[str, Any]]:
    """The actions in the OpenAI / Qwen ``tools`` format."""
    return [
        {
            "type": "function",
            "function": {"name": n, "description": DESCRIPTIONS[n], "parameters": SCHEMAS[n]},
        }
        for n in ACTION_NAMES
    ]


def tool_signatures() -> str:
    """The actions as one line of signatures, from the same schemas (a short system prompt).

    >>> tool_signatures()
    'click(x, y); type(text); scroll(dir: up|down); key(name: enter|escape|backspace|tab); done()'
    """
    sigs = []
    for n in ACTION_NAMES:
        props = SCHEMAS[n].get("properties", {})
        args = [f"{k}: {'|'.join(v['enum'])}" if "enum" in v else k for k, v in props.items()]
        sigs.append(f"{n}({', '.join(args)})")
    return "; ".join(sigs)


def clip_point(
    x: float, y: float, size: tuple[int, int], margin: int = CLICK_MARGIN
) -> tuple[int, int] | str:
    """``(x, y)`` as integer pixels on a ``size`` screen, clipped within ``margin``; else an error.

    >>> clip_point(10.7, 223.9, (224, 224)), clip_point(-3, 226, (224, 224))
    ((10, 223), (0, 223))
    >>> clip_point(300, 5, (224, 224))
    'click (300, 5) is outside the 224x224 screen (x in 0..223, y in 0..223)'
    """
    w, h = size
    if not (math.isfinite(x) and math.isfinite(y)):
        return "click coordinates must be finite numbers"
    if not (-margin <= x < w + margin and -margin <= y < h + margin):
        return f"click ({x:g}, {y:g}) is outside the {w}x{h} screen (x in 0..{w - 1}, y in 0..{h - 1})"
    return min(max(math.floor(x), 0), w - 1), min(max(math.floor(y), 0), h - 1)


def read_action(text: str, size: tuple[int, int]) -> Action | str:
    """The action in one model turn, or why there is none (a message for the model). Never raises."""
    try:
        call = parse_tool_call(text)
        if isinstance(call, ToolCallError):
            return call.message
        if call.name not in SCHEMAS:
            return f"unknown action {call.name!r}; allowed: {', '.join(ACTION_NAMES)}"
        err = validate(SCHEMAS[call.name], call.arguments)
        if err is not None:
            return f"{call.name}: {err}"
        a = call.arguments
        if call.name == "click":
            p = clip_point(float(a["x"]), float(a["y"]), size)
            return p if isinstance(p, str) else Action("click", p[0], p[1])
        if call.name == "type":
            return Action("type", text=a["text"])
        if call.name == "scroll":
            return Action("scroll", text=a["dir"])
        if call.name == "key":
            return Action("key", text=a["name"])
        return Action("done")
    except Exception as e:  # defence in depth: a bad action is an observation, never a crash
        return f"the action could not be read ({type(e).__name__})"


# ---- coordinate spaces ---------------------------------------------------------------------------
def processor_size(
    width: int, height: int, min_pixels: int, max_pixels: int, factor: int = 28
) -> tuple[int, int]:
    """The ``(width, height)`` a Qwen-VL processor resizes an image to (``smart_resize``): sides
    rounded to ``factor``, then scaled so the area lies in ``[min_pixels, max_pixels]``.

    >>> processor_size(224, 224, 112 * 112, 112 * 112), processor_size(640, 480, 3136, 1003520)
    ((112, 112), (644, 476))
    """
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return w, h


def to_processor(
    x: float, y: float, screen: tuple[int, int], processed: tuple[int, int]
) -> tuple[float, float]:
    """A screen point in the processor's resized image (each axis scaled by processed / screen).

    >>> to_processor(100, 50, (224, 224), (112, 112))
    (50.0, 25.0)
    """
    return x * processed[0] / screen[0], y * processed[1] / screen[1]


def from_processor(
    x: float, y: float, screen: tuple[int, int], processed: tuple[int, int]
) -> tuple[float, float]:
    """The inverse of :func:`to_processor`: a point of the resized image back on the screen."""
    return x * screen[0] / processed[0], y * screen[1] / processed[1]
