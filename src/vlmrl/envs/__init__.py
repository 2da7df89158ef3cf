"""Multi-turn visual environments: tool-call parsing, tools, trajectory rewards, SFT traces.

``make_env("tools", max_turns=4)()`` builds a :class:`ToolEnv`; ``parse_tool_call`` reads one
``<tool_call>`` block; ``sft_trace(sample, "tools")`` writes the ideal conversation for a
procedural sample from its ground truth. No model code is imported here.
"""

from vlmrl.envs.calc import CalcError, calculate
from vlmrl.envs.env import ToolEnv
from vlmrl.envs.registry import ENVS, env_names, make_env, register_env
from vlmrl.envs.toolcall import parse_tool_call
from vlmrl.envs.tools import (
    REGIONS,
    TOOL_NAMES,
    Tool,
    ToolContext,
    ToolOutput,
    build_tools,
    region_box,
    run_tool,
)
from vlmrl.envs.traces import ideal_calls, sft_trace
from vlmrl.envs.types import Observation, StepResult, ToolCall, ToolCallError, VisualEnv

__all__ = [
    "ENVS",
    "REGIONS",
    "TOOL_NAMES",
    "CalcError",
    "Observation",
    "StepResult",
    "Tool",
    "ToolCall",
    "ToolCallError",
    "ToolContext",
    "ToolEnv",
    "ToolOutput",
    "VisualEnv",
    "build_tools",
    "calculate",
    "env_names",
    "ideal_calls",
    "make_env",
    "parse_tool_call",
    "region_box",
    "register_env",
    "run_tool",
    "sft_trace",
]
