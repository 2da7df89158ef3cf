"""The tool-argument validator: every bad argument is a message for the model, never an exception."""

from __future__ import annotations

from PIL import Image

from vlmrl.envs import ToolContext, build_tools, run_tool
from vlmrl.envs.validate import MAX_STRING_CHARS, validate


def _ctx() -> ToolContext:
    return ToolContext(images=[Image.new("RGB", (112, 112), "white")])


def test_an_overlong_string_without_max_length_is_a_message_not_a_key_error():
    """``region`` has no ``maxLength`` of its own: a 10,001-character string used to raise KeyError
    while formatting the message (``schema['maxLength']``), though ``run_tool`` promises never to raise."""
    crop = build_tools()["crop"]
    out = run_tool(crop, {"region": "x" * (MAX_STRING_CHARS + 1)}, _ctx())
    assert out == f"crop: arguments.region: at most {MAX_STRING_CHARS} characters, got {MAX_STRING_CHARS + 1}"


def test_a_schema_max_length_wins_over_the_default():
    assert validate({"type": "string", "maxLength": 3}, "abcd") == "arguments: at most 3 characters, got 4"
    assert validate({"type": "string", "maxLength": 3}, "abc") is None
    assert validate({"type": "string"}, "a" * MAX_STRING_CHARS) is None
