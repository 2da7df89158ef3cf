"""SFT warm-start traces: the ideal conversation for a procedural sample, from its ground truth.

``ideal_calls(sample)`` reads the tool calls an expert would make from ``sample.facts`` (the
right zoom region, the right points to measure, the right expression); ``sft_trace`` then plays
them through a real environment — so every tool response and image in the trace is exactly what
the environment returns — and ends with the gold answer. Replaying the trace's assistant turns
through a fresh environment reproduces its observations and scores accuracy 1.
"""

from __future__ import annotations

import json
from typing import Any

from vlmrl.data.sample import Sample
from vlmrl.envs.gui.env import GuiEnv
from vlmrl.envs.gui.traces import GUI_TASKS, gui_calls, gui_trace
from vlmrl.envs.registry import make_env
from vlmrl.envs.spy import SpyGame
from vlmrl.envs.toolcall import CLOSE, OPEN
from vlmrl.envs.types import ToolCall
from vlmrl.errors import UserError


def ideal_calls(sample: Sample) -> list[ToolCall]:
    """The tool calls that answer ``sample`` (empty for tasks that need none).

    >>> from vlmrl.data.tasks import generate
    >>> s = generate("zoom", 1)[0]
    >>> ideal_calls(s) == [ToolCall("zoom_in", {"region": s.facts["region"]})]
    True
    """
    facts = sample.facts or {}
    if sample.task in GUI_TASKS:  # the GUI expert's actions, played on the world
        return gui_calls(sample)
    if sample.task == "zoom":
        return [ToolCall("zoom_in", {"region": facts["region"]})]
    if sample.task == "measure":
        return [ToolCall("measure", {"points": item["points"]}) for item in facts["items"]]
    if sample.task == "chart_calc":
        return [ToolCall("calculate", {"expression": facts["expression"]})]
    return []


def tool_call_text(call: ToolCall) -> str:
    """How the model writes ``call``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``."""
    return f"{OPEN}{json.dumps({'name': call.name, 'arguments': call.arguments})}{CLOSE}"


def sft_trace(sample: Sample, env_name: str = "tools", **kwargs: Any) -> list[dict[str, Any]]:
    """The ideal conversation for ``sample`` in env ``env_name`` (built with ``kwargs``).

    Returns ``[{"role": "user", "text": ..., "images": [...]}, {"role": "assistant", "text": ...},
    ...]``, ending with the assistant's ``<answer>gold</answer>`` (GUI tasks: with ``done()``,
    :func:`vlmrl.envs.gui.traces.gui_trace`). Calls to tools the env does
    not offer are skipped, and calls are cut to fit the env's budgets. Raises ``ValueError`` if
    the finished trace does not score accuracy 1 (a task/env mismatch worth hearing about).
    """
    env = make_env(env_name, **kwargs)()
    if isinstance(env, GuiEnv):  # the screen changes after each action: the expert reads it each turn
        return gui_trace(sample, env)
    if isinstance(env, SpyGame):  # a game has outcomes, not gold turns
        raise UserError(f"env.name={env_name}: self-play games have no ideal trace to SFT on; unset env.name")
    first = env.reset(sample)
    trace: list[dict[str, Any]] = [{"role": "user", "text": first.text, "images": list(first.images)}]
    offered = set(getattr(env, "tools", {}) or {})
    calls = [c for c in ideal_calls(sample) if c.name in offered]
    room = min(getattr(env, "max_tool_calls", len(calls)), env.max_turns - 1)
    for call in calls[: max(0, room)]:
        text = tool_call_text(call)
        result = env.step(text)
        trace.append({"role": "assistant", "text": text})
        if result.done or result.observation is None:
            raise ValueError(f"sample {sample.id!r}: the ideal call {text} ended the episode: {result.info}")
        if not result.info.get("valid", False):
            raise ValueError(
                f"sample {sample.id!r}: the ideal call {text} failed: {result.info.get('error')}"
            )
        trace.append(
            {"role": "user", "text": result.observation.text, "images": list(result.observation.images)}
        )
    answer = f"<answer>{sample.answer}</answer>"
    env.step(answer)
    trace.append({"role": "assistant", "text": answer})
    if env.reward().parts.get("accuracy", 0.0) <= 0:
        raise ValueError(f"sample {sample.id!r}: the gold answer {sample.answer!r} does not score accuracy 1")
    return trace
