"""Tool arguments against a small JSON-schema subset: the first problem as a message, or ``None``.

The validator never raises on any JSON value: its messages go back to the model as the tool's
answer (``vlmrl.envs.tools.run_tool``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from vlmrl.envs.calc import format_number

#: Longest string an argument may be when its schema gives no ``maxLength``.
MAX_STRING_CHARS = 10_000


def validate(schema: Mapping[str, Any], value: Any, path: str = "arguments") -> str | None:
    """The first way ``value`` breaks ``schema`` (a small JSON-schema subset), or ``None``.

    Handles ``type`` (object, array, number, integer, string), ``properties``, ``required``,
    ``additionalProperties: false``, ``enum``, ``items``, ``minItems``/``maxItems``,
    ``minimum``/``maximum``, ``maxLength`` (default :data:`MAX_STRING_CHARS`). Booleans are not
    numbers; numbers must be finite.

    >>> validate({"type": "object", "properties": {"n": {"type": "integer"}}}, {"n": "3"})
    'arguments.n: expected integer, got string'
    """
    kind = schema.get("type")
    got = _type_name(value)
    if kind == "number" and got in ("integer", "number"):
        pass
    elif kind is not None and kind != got:
        return f"{path}: expected {kind}, got {got}"
    if got in ("integer", "number"):
        if not math.isfinite(value):
            return f"{path}: must be a finite number"
        if "minimum" in schema and value < schema["minimum"]:
            return f"{path}: must be >= {schema['minimum']}, got {format_number(value)}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{path}: must be <= {schema['maximum']}, got {format_number(value)}"
    limit = schema.get("maxLength", MAX_STRING_CHARS)
    if got == "string" and len(value) > limit:
        return f"{path}: at most {limit} characters, got {len(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: {short(value)} is not allowed; allowed: {', '.join(map(str, schema['enum']))}"
    if got == "array":
        lo, hi = schema.get("minItems", 0), schema.get("maxItems", 10_000)
        if not lo <= len(value) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            return f"{path}: expected {want} items, got {len(value)}"
        if "items" in schema:
            for i, item in enumerate(value):
                err = validate(schema["items"], item, f"{path}[{i}]")
                if err:
                    return err
    if got == "object":
        props = schema.get("properties", {})
        if schema.get("additionalProperties", True) is False:
            extra = sorted(k for k in value if k not in props)
            if extra:
                return f"{path}: unknown argument {short(extra[0])}; allowed: {', '.join(props) or 'none'}"
        for key in schema.get("required", []):
            if key not in value:
                return f"{path}: missing required argument {key!r}"
        for key, sub in props.items():
            if key in value:
                err = validate(sub, value[key], f"{path}.{key}")
                if err:
                    return err
    return None


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if value is None:
        return "null"
    return {str: "string", list: "array", tuple: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def short(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters with ``...``: safe to put in a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
