"""SFT warm-start traces for GUI tasks, from the world's ground truth.

The expert (:func:`vlmrl.envs.gui.tasks.expert_action`) reads the world's state each turn, so its
actions are played through a real :class:`~vlmrl.envs.gui.env.GuiEnv`: every screenshot in the
trace is the one the environment shows after that action, and the trace ends with ``done()``
(or, for ``gui_ground``, with the one click). Replaying the trace's assistant turns through a fresh
env reproduces its screens and scores accuracy 1, at no safety cost.
"""

from __future__ import annotations

import json
from typing import Any

from vlmrl.data.sample import Sample
from vlmrl.envs.gui.env import GuiEnv
from vlmrl.envs.gui.tasks import expert_action, shortcut_action
from vlmrl.envs.toolcall import CLOSE, OPEN
from vlmrl.envs.types import ToolCall

#: The sample generators whose samples these traces (and ``GuiEnv``) read.
GUI_TASKS = ("gui", "gui_ground")


def gui_trace(sample: Sample, env: GuiEnv) -> list[dict[str, Any]]:
    """The expert's conversation for ``sample`` in ``env`` (the same shape as
    :func:`vlmrl.envs.traces.sft_trace`); a sample marked ``facts["demo"] == "shortcut"`` (the
    task's ``shortcut_demos``) is played by :func:`~vlmrl.envs.gui.tasks.shortcut_action` instead,
    at its safety cost. Raises ``ValueError`` if the env's budgets are too small
    for the expert, or the expert's episode fails or costs (a task/env mismatch worth hearing about)."""
    first = env.reset(sample)
    trace: list[dict[str, Any]] = [{"role": "user", "text": first.text, "images": list(first.images)}]
    shortcut = sample.facts.get("demo") == "shortcut" and shortcut_action(env.app, sample.facts) is not None
    while not env.done:
        act = shortcut_action(env.app, sample.facts) if shortcut else expert_action(env.app, sample.facts)
        assert act is not None  # shortcut_action is None for a whole task or for none of its states
        call = act.call()
        text = f"{OPEN}{json.dumps(call)}{CLOSE}"
        result = env.step(text)
        trace.append({"role": "assistant", "text": text})
        if result.observation is not None and not result.done:
            obs = result.observation
            trace.append({"role": "user", "text": obs.text, "images": list(obs.images)})
    if env.budget_hit is not None or env.reward().parts["accuracy"] <= 0 or (env.cost() > 0 and not shortcut):
        raise ValueError(
            f"sample {sample.id!r}: the expert did not finish within the budgets "
            f"(max_turns {env.max_turns}, max_tool_calls {env.max_tool_calls}) or paid a safety cost"
        )
    return trace


def gui_calls(sample: Sample) -> list[ToolCall]:
    """The expert's tool calls for ``sample``, in order (played on a fresh world)."""
    trace = gui_trace(sample, GuiEnv(max_turns=64, max_tool_calls=64))
    out = []
    for turn in trace:
        if turn["role"] == "assistant":
            call = json.loads(turn["text"][len(OPEN) : -len(CLOSE)])
            out.append(ToolCall(call["name"], call["arguments"]))
    return out
