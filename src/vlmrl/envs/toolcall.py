"""Strict parsing of Qwen-style tool calls: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

``parse_tool_call`` never raises and never evaluates anything: it finds exactly one tag pair,
bounds the payload's size and nesting depth *before* handing it to ``json.loads`` (so a depth
bomb cannot reach the recursive decoder), rejects ``NaN``/``Infinity`` and duplicate keys, and
checks the shape ``{"name": str, "arguments": object}``. Every failure becomes a
:class:`ToolCallError` whose message is fed back to the model, so it says what was wrong and
what is allowed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from vlmrl.envs.types import ToolCall, ToolCallError

OPEN, CLOSE = "<tool_call>", "</tool_call>"
#: Longest JSON payload accepted between the tags (characters).
MAX_PAYLOAD_CHARS = 2048
#: Deepest nesting of ``[`` / ``{`` accepted in the payload (the call object itself is depth 1).
MAX_DEPTH = 5
#: Longest tool name.
MAX_NAME_CHARS = 64
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXAMPLE = '<tool_call>{"name": "zoom_in", "arguments": {"region": "top-left"}}</tool_call>'


def has_tool_call(text: str) -> bool:
    """Whether ``text`` tries to call a tool at all (an opening tag is present)."""
    return isinstance(text, str) and OPEN in text


def parse_tool_call(text: str) -> ToolCall | ToolCallError:
    """The one tool call in ``text``, or a :class:`ToolCallError` saying why not. Never raises.

    >>> parse_tool_call('<tool_call>{"name": "calculate", "arguments": {"expression": "2+3"}}</tool_call>')
    ToolCall(name='calculate', arguments={'expression': '2+3'})
    >>> parse_tool_call('<tool_call>{"name": "calculate"}</tool_call>').message.split(";")[0]
    'tool call has no "arguments" object'
    """
    try:
        return _parse(text)
    except Exception as e:
        return ToolCallError(f"tool call could not be read ({type(e).__name__})")


def _parse(text: Any) -> ToolCall | ToolCallError:
    if not isinstance(text, str):
        return ToolCallError(f"a turn must be text, got {type(text).__name__}")
    n_open, n_close = text.count(OPEN), text.count(CLOSE)
    if n_open == 0:
        return ToolCallError(f"no {OPEN} tag; write {_EXAMPLE}")
    if n_open > 1:
        return ToolCallError(f"one tool call per turn, found {n_open} {OPEN} tags")
    if n_close != 1:
        return ToolCallError(f"the {OPEN} tag must be closed by exactly one {CLOSE} tag, found {n_close}")
    start = text.index(OPEN) + len(OPEN)
    end = text.find(CLOSE, start)
    if end < 0:
        return ToolCallError(f"{CLOSE} must come after {OPEN}")
    payload = text[start:end].strip()
    if not payload:
        return ToolCallError(f"empty tool call; write {_EXAMPLE}")
    if len(payload) > MAX_PAYLOAD_CHARS:
        return ToolCallError(
            f"tool call is {len(payload)} characters long; at most {MAX_PAYLOAD_CHARS} allowed"
        )
    depth = json_depth(payload)
    if depth > MAX_DEPTH:
        return ToolCallError(f"tool call nests {depth} levels deep; at most {MAX_DEPTH} allowed")
    try:
        obj = json.loads(payload, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except _JSONRejected as e:
        return ToolCallError(f"tool call is not valid JSON: {e}")
    except (ValueError, RecursionError) as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else type(e).__name__
        return ToolCallError(f"tool call is not valid JSON ({msg}); write {_EXAMPLE}")
    if not isinstance(obj, dict):
        return ToolCallError(f"tool call must be a JSON object, got {_json_type(obj)}; write {_EXAMPLE}")
    extra = sorted(set(obj) - {"name", "arguments"})
    if extra:
        return ToolCallError(f"tool call has unknown key(s) {_short(extra)}; allowed: name, arguments")
    name = obj.get("name")
    if not isinstance(name, str):
        return ToolCallError(f'tool call needs a string "name", got {_json_type(name)}')
    if len(name) > MAX_NAME_CHARS or not _NAME_RE.fullmatch(name):
        return ToolCallError(f"tool name {_short(name)} is not a plain identifier (letters, digits, _)")
    if "arguments" not in obj:
        return ToolCallError(f'tool call has no "arguments" object; write {_EXAMPLE}', name)
    args = obj["arguments"]
    if not isinstance(args, dict):
        return ToolCallError(f'"arguments" must be a JSON object, got {_json_type(args)}', name)
    return ToolCall(name=name, arguments=args)


def json_depth(payload: str) -> int:
    """Deepest ``[``/``{`` nesting in ``payload``, ignoring brackets inside JSON strings (one pass).

    >>> json_depth('{"a": [1, {"b": "[[["}]}')
    3
    """
    depth = best = 0
    in_string = escaped = False
    for ch in payload:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


class _JSONRejected(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _JSONRejected(f"{name} is not allowed; use a finite number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JSONRejected(f"key {_short(key)} appears twice")
        out[key] = value
    return out


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 40) -> str:
    """``repr`` cut to ``limit`` characters, so a 1 MB argument never floods an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
