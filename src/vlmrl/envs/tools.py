"""The tools a model may call: ``crop`` / ``zoom_in``, ``rotate``, ``measure``, ``calculate``.

Each tool is a :class:`Tool`: a name, a description and a JSON schema (shown to the model in the
system prompt) and a plain function ``(arguments, context) -> ToolOutput``. ``run_tool`` first
checks the arguments against the schema (:mod:`vlmrl.envs.validate`), then runs the function; every bad
argument, and every :class:`ToolError` a function raises, becomes a one-line message for the
model — ``run_tool`` never raises, reads no file and evaluates no code.

Coordinates are pixels of the chosen image (``image``: 0 is the sample's image, 1, 2, … are
the images earlier tool calls returned), with ``x`` to the right and ``y`` down; a box is
``[x1, y1, x2, y2]`` with ``x2``/``y2`` exclusive (PIL's crop convention), or four fractions
in ``[0, 1]`` of the width/height. A named region is one cell of a ``grid × grid`` split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from vlmrl.envs.calc import MAX_CHARS, CalcError, calculate, format_number
from vlmrl.envs.validate import short as _short
from vlmrl.envs.validate import validate

#: Region names of a 3x3 and of a 2x2 grid, row-major.
REGIONS: dict[int, tuple[str, ...]] = {
    3: ("top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right"),
    2: ("top-left", "top-right", "bottom-left", "bottom-right"),
}
#: Largest absolute coordinate accepted before clipping (anything bigger is surely a mistake).
MAX_COORD = 1e6
WHITE = (255, 255, 255)


class ToolError(ValueError):
    """A message for the model: why this call cannot run."""


@dataclass
class ToolContext:
    """What tools may see and how they shape their images (one per trajectory).

    ``zoom_pixels``: pixel budget a zoomed/rotated image is resized to (the tiny processor's
    112×112 by default, so a crop costs the same image tokens as the original); ``multiple``:
    both sides are rounded to a multiple of it (Qwen's 14-px patch × 2 merge); ``min_crop``:
    smallest crop side in pixels (smaller boxes grow around their centre).
    """

    images: list[Image.Image]
    grid: int = 3
    zoom_pixels: int = 112 * 112
    multiple: int = 28
    min_crop: int = 16


@dataclass
class ToolOutput:
    """A tool's result: JSON-able ``data`` for the ``<tool_response>`` and an optional image."""

    data: dict[str, Any]
    image: Image.Image | None = None


@dataclass
class Tool:
    """One callable tool: ``fn(arguments, context)`` runs after ``parameters`` validated them."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[[dict[str, Any], ToolContext], ToolOutput] = field(repr=False)

    def schema(self) -> dict[str, Any]:
        """The function description the chat template shows (OpenAI / Qwen ``tools`` format)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


# ---- geometry helpers (pure) --------------------------------------------------------------------
def region_box(name: str, size: tuple[int, int], grid: int = 3) -> list[int]:
    """The pixel box ``[x1, y1, x2, y2]`` (x2/y2 exclusive) of a named cell of a ``grid × grid`` split.

    >>> region_box("top-right", (448, 448), 2), region_box("center", (300, 300), 3)
    ([224, 0, 448, 224], [100, 100, 200, 200])
    """
    names = REGIONS[grid]
    if name not in names:
        raise ToolError(f"unknown region {_short(name)}; allowed: {', '.join(names)}")
    row, col = divmod(names.index(name), grid)
    w, h = size
    return [
        round(col * w / grid),
        round(row * h / grid),
        round((col + 1) * w / grid),
        round((row + 1) * h / grid),
    ]


def resolve_box(box: Sequence[float], size: tuple[int, int], min_size: int = 16) -> list[int]:
    """A requested box as integer pixels inside the image: normalised if all four are in [0, 1],
    then clipped, then grown around its centre to ``min_size`` per side (shifted to stay inside).

    >>> resolve_box([0.5, 0.5, 1.0, 1.0], (200, 100)), resolve_box([-50, 10, 60, 70], (200, 100))
    ([100, 50, 200, 100], [0, 10, 60, 70])
    >>> resolve_box([100, 50, 102, 52], (200, 100))
    [93, 43, 109, 59]
    """
    w, h = size
    x1, y1, x2, y2 = (float(v) for v in box)
    if any(abs(v) > MAX_COORD for v in (x1, y1, x2, y2)):
        raise ToolError(f"box coordinates must lie within ±{MAX_COORD:g}")
    if x2 <= x1 or y2 <= y1:
        raise ToolError(f"box must have x2 > x1 and y2 > y1, got {[format_number(v) for v in box]}")
    if all(0.0 <= v <= 1.0 for v in (x1, y1, x2, y2)):
        x1, x2, y1, y2 = x1 * w, x2 * w, y1 * h, y2 * h
    cx1, cy1 = max(0, math.floor(x1)), max(0, math.floor(y1))
    cx2, cy2 = min(w, math.ceil(x2)), min(h, math.ceil(y2))
    if cx2 <= cx1 or cy2 <= cy1:
        raise ToolError(f"box {[format_number(v) for v in box]} lies outside the {w}x{h} image")
    cx1, cx2 = _grow(cx1, cx2, min(min_size, w), w)
    cy1, cy2 = _grow(cy1, cy2, min(min_size, h), h)
    return [cx1, cy1, cx2, cy2]


def _grow(lo: int, hi: int, need: int, limit: int) -> tuple[int, int]:
    """Widen ``[lo, hi)`` to ``need`` around its centre, shifted to stay in ``[0, limit)``."""
    if hi - lo >= need:
        return lo, hi
    lo = (lo + hi) // 2 - need // 2
    lo = min(max(0, lo), limit - need)
    return lo, lo + need


def fit_to_budget(image: Image.Image, pixels: int, multiple: int = 28) -> Image.Image:
    """Resize (up or down, bicubic, aspect kept) so the area is about ``pixels``, sides rounded to
    ``multiple`` (at least one ``multiple``): what the processor would do, done once here.

    >>> fit_to_budget(Image.new("RGB", (149, 149)), 112 * 112).size
    (112, 112)
    """
    w, h = image.size
    scale = math.sqrt(pixels / (w * h))
    nw = max(multiple, round(w * scale / multiple) * multiple)
    nh = max(multiple, round(h * scale / multiple) * multiple)
    return image.resize((nw, nh), Image.Resampling.BICUBIC) if (nw, nh) != (w, h) else image.copy()


def distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Euclidean distance in pixels. ``distance((0, 0), (3, 4))`` is ``5.0``."""
    return math.hypot(q[0] - p[0], q[1] - p[1])


def angle_at(a: Sequence[float], vertex: Sequence[float], b: Sequence[float]) -> float:
    """The angle ``a–vertex–b`` in degrees, in ``[0, 180]``.

    >>> angle_at((1, 0), (0, 0), (0, 1)), round(angle_at((1, 0), (0, 0), (-1, 1e-12)), 6)
    (90.0, 180.0)
    """
    ux, uy = a[0] - vertex[0], a[1] - vertex[1]
    vx, vy = b[0] - vertex[0], b[1] - vertex[1]
    if (ux == 0 and uy == 0) or (vx == 0 and vy == 0):
        raise ToolError("an angle's end point coincides with its vertex")
    return abs(math.degrees(math.atan2(ux * vy - uy * vx, ux * vx + uy * vy)))


# ---- the tools ----------------------------------------------------------------------------------
def _image_arg(args: Mapping[str, Any], ctx: ToolContext) -> tuple[int, Image.Image]:
    index = args.get("image", 0)
    if not 0 <= index < len(ctx.images):
        raise ToolError(f"image {index} does not exist; images 0 to {len(ctx.images) - 1} are available")
    return index, ctx.images[index]


def _box_arg(args: Mapping[str, Any], ctx: ToolContext, image: Image.Image) -> list[int]:
    if ("box" in args) == ("region" in args):
        raise ToolError('give exactly one of "box" or "region"')
    if "region" in args:
        return region_box(args["region"], image.size, ctx.grid)
    return resolve_box(args["box"], image.size, ctx.min_crop)


def _crop(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    index, image = _image_arg(args, ctx)
    box = _box_arg(args, ctx, image)
    out = image.crop(tuple(box))
    return ToolOutput({"image": len(ctx.images), "source": index, "box": box, "size": list(out.size)}, out)


def _zoom(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    index, image = _image_arg(args, ctx)
    box = _box_arg(args, ctx, image)
    out = fit_to_budget(image.crop(tuple(box)), ctx.zoom_pixels, ctx.multiple)
    return ToolOutput({"image": len(ctx.images), "source": index, "box": box, "size": list(out.size)}, out)


def _rotate(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    index, image = _image_arg(args, ctx)
    angle = float(args["angle"])
    rotated = image.convert("RGB").rotate(
        angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=WHITE
    )
    out = fit_to_budget(rotated, ctx.zoom_pixels, ctx.multiple)
    return ToolOutput(
        {"image": len(ctx.images), "source": index, "angle": angle, "size": list(out.size)}, out
    )


def _measure(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    index, image = _image_arg(args, ctx)
    w, h = image.size
    points = [(float(x), float(y)) for x, y in args["points"]]
    for x, y in points:
        if not (0 <= x <= w and 0 <= y <= h):
            raise ToolError(
                f"point [{format_number(x)}, {format_number(y)}] lies outside the {w}x{h} image {index}"
            )
    if len(points) == 2:
        return ToolOutput({"distance_px": round(distance(*points), 2)})
    return ToolOutput({"angle_deg": round(angle_at(*points), 2)})


def _calculate(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    try:
        return ToolOutput({"result": format_number(calculate(args["expression"]))})
    except CalcError as e:
        raise ToolError(str(e)) from e


_IMAGE = {
    "type": "integer",
    "minimum": 0,
    "maximum": 64,
    "description": "which image: 0 is the original (default); 1, 2, ... are earlier tool calls' images",
}
_BOX = {
    "type": "array",
    "items": {"type": "number"},
    "minItems": 4,
    "maxItems": 4,
    "description": "[x1, y1, x2, y2] in pixels (x right, y down), or four fractions in [0, 1] of the size",
}


def _region_schema(grid: int) -> dict[str, Any]:
    return {"type": "string", "enum": list(REGIONS[grid]), "description": f"a cell of a {grid}x{grid} grid"}


def _box_params(grid: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"box": _BOX, "region": _region_schema(grid), "image": _IMAGE},
        "additionalProperties": False,
    }


def build_tools(grid: int = 3) -> dict[str, Tool]:
    """Every built-in tool, by name; ``grid`` (2 or 3) fixes the region names crop/zoom accept."""
    if grid not in REGIONS:
        raise ValueError(f"grid must be one of {sorted(REGIONS)}, got {grid!r}")
    tools = [
        Tool(
            "zoom_in",
            "Crop a box or a named region of an image and enlarge it to full resolution; "
            "returns the new image. Give exactly one of box or region.",
            _box_params(grid),
            _zoom,
        ),
        Tool(
            "crop",
            "Crop a box or a named region of an image at its original pixels; returns the new image.",
            _box_params(grid),
            _crop,
        ),
        Tool(
            "rotate",
            "Rotate an image counter-clockwise by an angle in degrees (canvas grows); returns the new image.",
            {
                "type": "object",
                "properties": {"angle": {"type": "number", "minimum": -360, "maximum": 360}, "image": _IMAGE},
                "required": ["angle"],
                "additionalProperties": False,
            },
            _rotate,
        ),
        Tool(
            "measure",
            "Two points: their distance in pixels. Three points: the angle at the middle one, in degrees.",
            {
                "type": "object",
                "properties": {
                    "points": {
                        "type": "array",
                        "items": {
                            "type": "array",
                            "items": {"type": "number", "minimum": -MAX_COORD, "maximum": MAX_COORD},
                            "minItems": 2,
                            "maxItems": 2,
                        },
                        "minItems": 2,
                        "maxItems": 3,
                        "description": "[[x, y], [x, y]] or [[x, y], [vertex_x, vertex_y], [x, y]] in pixels",
                    },
                    "image": _IMAGE,
                },
                "required": ["points"],
                "additionalProperties": False,
            },
            _measure,
        ),
        Tool(
            "calculate",
            "Evaluate arithmetic: numbers, + - * / ^, parentheses, sqrt, abs, round, min, max, log, exp, "
            "sin/cos/tan (degrees).",
            {
                "type": "object",
                "properties": {"expression": {"type": "string", "maxLength": MAX_CHARS}},
                "required": ["expression"],
                "additionalProperties": False,
            },
            _calculate,
        ),
    ]
    return {t.name: t for t in tools}


#: Names of the built-in tools.
TOOL_NAMES: tuple[str, ...] = tuple(build_tools())


def run_tool(tool: Tool, arguments: Any, ctx: ToolContext) -> ToolOutput | str:
    """Validate and run ``tool``; an error message (``str``) instead of raising, for any input."""
    err = validate(tool.parameters, arguments)
    if err is not None:
        return f"{tool.name}: {err}"
    try:
        return tool.fn(arguments, ctx)
    except ToolError as e:
        return f"{tool.name}: {e}"
    except Exception as e:
        return f"{tool.name}: internal error ({type(e).__name__})"
