"""``ToolEnv``: a visual question with tools — the model may call tools, then must answer.

Turn protocol (one assistant turn per ``step``):

* a turn with one ``<tool_call>{...}</tool_call>`` runs the tool; the next user turn is
  ``<tool_response>{json}</tool_response>`` plus ``<image>`` when the tool returned an image;
  a malformed or failing call gets ``<tool_response>{"error": "..."}</tool_response>``;
* a turn with ``<answer>…</answer>`` (and no tool call) ends the episode;
* anything else is an invalid turn: an error observation, and it counts against the budget.

Budgets: ``max_turns`` model turns and ``max_tool_calls`` tool calls. A call beyond
``max_tool_calls`` is not run, and a turn that uses up ``max_turns`` without answering ends the
episode; both end it with ``info["kind"] == "budget"``. A token budget is the rollout loop's to
enforce; it calls :meth:`ToolEnv.stop` to end the episode the same way.

Trajectory reward (each part logged apart; ``total`` is their sum)::

    accuracy       = w_acc · acc            acc ∈ {0, 1}: the final answer by vlmrl.rewards accuracy
    format         = w_fmt · [every model turn was a valid tool call or an answer]
    tool_bonus     = b · acc · [≥ 1 tool call ran]        (DeepEyes: reward tools only when right)
    call_cost      = −c · (number of tool calls, valid or not)
    budget_penalty = −p · [a budget ended the episode]
"""

from __future__ import annotations

import inspect
import json
import time
from typing import Any

from PIL import Image

from vlmrl.data.sample import IMAGE_PLACEHOLDER, Sample
from vlmrl.envs.toolcall import CLOSE, OPEN, has_tool_call, parse_tool_call
from vlmrl.envs.tools import REGIONS, TOOL_NAMES, Tool, ToolContext, ToolOutput, build_tools, run_tool
from vlmrl.envs.types import Observation, StepResult, ToolCallError, step_info
from vlmrl.rewards.accuracy import accuracy_reward
from vlmrl.rewards.parse import ANSWER_CLOSE, ANSWER_OPEN
from vlmrl.rewards.types import RewardBreakdown

RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
DEFAULT_SUFFIX = "You may call a tool first. Put the final answer inside <answer> </answer>."
NO_TOOL_SUFFIX = "Put the answer inside <answer> </answer>."


class ToolEnv:
    """The standard tool-using environment; see the module docstring for protocol and reward.

    Example:
        >>> from vlmrl.data.tasks import generate
        >>> env = ToolEnv()
        >>> s = generate("zoom", 1)[0]
        >>> obs = env.reset(s)
        >>> call = {"name": "zoom_in", "arguments": {"region": s.facts["region"]}}
        >>> r = env.step(f"<tool_call>{json.dumps(call)}</tool_call>")
        >>> r.info["kind"], r.info["valid"], len(r.observation.images)
        ('tool', True, 1)
        >>> env.step(f"<answer>{s.answer}</answer>").done, env.reward().parts["tool_bonus"]
        (True, 0.2)
    """

    def __init__(
        self,
        tools: tuple[str, ...] | list[str] = ("zoom_in", "crop", "rotate", "measure", "calculate"),
        max_turns: int = 4,
        max_tool_calls: int = 3,
        grid: int | None = None,
        zoom_pixels: int = 112 * 112,
        min_crop: int = 16,
        accuracy_weight: float = 1.0,
        format_weight: float = 0.1,
        tool_bonus: float = 0.2,
        call_cost: float = 0.02,
        budget_penalty: float = 0.2,
        prompt_suffix: str | None = None,
    ) -> None:
        """Arguments (all are ``env.kwargs`` in a config):

        tools: names of the tools offered (any of ``TOOL_NAMES``; empty = answer-only baseline).
        max_turns: most model turns per episode (the answer turn included).
        max_tool_calls: most tool calls per episode; one more ends it with the budget penalty.
        grid: 2 or 3, the region grid of crop/zoom_in; ``None`` takes ``sample.facts["grid"]``,
            else 3.
        zoom_pixels: pixel budget of zoomed/rotated images (the processor's, 112×112 for the tiny model).
        min_crop: smallest crop side in pixels.
        accuracy_weight, format_weight, tool_bonus, call_cost, budget_penalty: the reward
            weights ``w_acc, w_fmt, b, c, p`` of the module docstring (costs are given positive).
        prompt_suffix: the instruction appended to the question (default depends on ``tools``).
        """
        unknown = [t for t in tools if t not in TOOL_NAMES]
        if unknown:
            raise ValueError(f"env: unknown tool(s) {unknown}; allowed: {list(TOOL_NAMES)}")
        if max_turns < 1 or max_tool_calls < 0:
            raise ValueError(
                f"env: need max_turns >= 1 and max_tool_calls >= 0, got {max_turns}, {max_tool_calls}"
            )
        if grid is not None and grid not in REGIONS:
            raise ValueError(f"env: grid must be one of {sorted(REGIONS)} or null, got {grid!r}")
        if zoom_pixels < 28 * 28 or min_crop < 1:
            raise ValueError(f"env: need zoom_pixels >= 784 and min_crop >= 1, got {zoom_pixels}, {min_crop}")
        self.tool_names = tuple(tools)
        self.max_turns, self.max_tool_calls = int(max_turns), int(max_tool_calls)
        self.grid, self.zoom_pixels, self.min_crop = grid, int(zoom_pixels), int(min_crop)
        self.weights = {
            "accuracy": float(accuracy_weight),
            "format": float(format_weight),
            "tool_bonus": float(tool_bonus),
            "call_cost": float(call_cost),
            "budget_penalty": float(budget_penalty),
        }
        self.prompt_suffix = (
            prompt_suffix
            if prompt_suffix is not None
            else (DEFAULT_SUFFIX if self.tool_names else NO_TOOL_SUFFIX)
        )
        self.tools: dict[str, Tool] = {}
        self._set_grid(grid or 3)
        self.sample: Sample | None = None

    def _set_grid(self, grid: int) -> None:
        every = build_tools(grid)
        self.active_grid = grid
        self.tools = {name: every[name] for name in self.tool_names}

    # ---- the VisualEnv API --------------------------------------------------------------------
    def reset(self, sample: Sample) -> Observation:
        """Start an episode on ``sample``; the first user turn is its question plus the instruction."""
        self.sample = sample
        facts = sample.facts if isinstance(sample.facts, dict) else {}
        grid = self.grid or facts.get("grid", 3)
        self._set_grid(grid if grid in REGIONS else 3)
        self.images: list[Image.Image] = list(sample.images)
        self.turns = 0
        self.tool_calls = 0
        self.valid_tool_calls = 0
        self.all_well_formed = True
        self.answer_text: str | None = None
        self.done = False
        self.budget_hit: str | None = None
        self.log: list[dict[str, Any]] = []
        text = (
            sample.problem
            if IMAGE_PLACEHOLDER in sample.problem
            else IMAGE_PLACEHOLDER * len(sample.images) + sample.problem
        )
        return Observation(f"{text} {self.prompt_suffix}".strip(), list(sample.images))

    def step(self, model_text: str) -> StepResult:
        """One assistant turn; never raises (any text, any tool arguments)."""
        start = time.perf_counter()
        if self.sample is None:
            raise RuntimeError("call reset(sample) before step()")
        if self.done:
            return StepResult(None, True, self._info("invalid", None, False, "the episode is over", start))
        self.turns += 1
        try:
            result = self._turn(model_text if isinstance(model_text, str) else "", start)
        except Exception as e:
            self.all_well_formed = False
            result = StepResult(
                Observation(f"environment error ({type(e).__name__})"),
                False,
                self._info("invalid", None, False, f"environment error ({type(e).__name__})", start),
            )
        if not result.done and self.turns >= self.max_turns:
            self.budget_hit = "max_turns"
            self.done = True
            info = {**result.info, "kind": "budget", "budget": "max_turns"}
            result = StepResult(None, True, info)
        self.log.append({"model": model_text if isinstance(model_text, str) else "", **result.info})
        return result

    def stop(self, reason: str = "tokens") -> None:
        """End the episode from outside (e.g. the rollout loop's token budget ran out)."""
        if not self.done:
            self.done = True
            self.budget_hit = reason

    def reward(self) -> RewardBreakdown:
        """The trajectory reward; parts ``accuracy``, ``format``, ``tool_bonus``, ``call_cost``,
        ``budget_penalty`` (weighted, summing to ``total``)."""
        if self.sample is None:
            raise RuntimeError("call reset(sample) before reward()")
        w = self.weights
        acc = accuracy_reward(self.answer_text, self.sample).total if self.answer_text is not None else 0.0
        parts = {
            "accuracy": w["accuracy"] * acc,
            "format": w["format"] * float(self.all_well_formed and self.answer_text is not None),
            "tool_bonus": w["tool_bonus"] * acc * float(self.valid_tool_calls > 0),
            "call_cost": 0.0 - w["call_cost"] * self.tool_calls,  # 0.0 - x: never a logged -0.0
            "budget_penalty": 0.0 - w["budget_penalty"] * float(self.budget_hit is not None),
        }
        return RewardBreakdown(sum(parts.values()), parts)

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The offered tools in the OpenAI/Qwen ``tools`` format (for ``apply_chat_template(tools=...)``)."""
        return [t.schema() for t in self.tools.values()]

    def system_prompt(self) -> str:
        """The tools as JSON schemas, one per line, and how to call them and answer."""
        if not self.tools:
            return "Answer the question. Put the final answer inside <answer> </answer>."
        lines = [json.dumps(schema, separators=(", ", ": ")) for schema in self.tool_schemas()]
        return (
            "You can call tools to look closer before answering.\n\n<tools>\n"
            + "\n".join(lines)
            + "\n</tools>\n\n"
            "To call a tool, reply with exactly one "
            f'{OPEN}{{"name": <tool name>, "arguments": <JSON object>}}'
            f"{CLOSE} and nothing else in that turn; its result comes back inside {RESPONSE_OPEN} "
            f"{RESPONSE_CLOSE}. At most {self.max_tool_calls} tool calls and {self.max_turns} turns. "
            f"When you know the answer, reply with {ANSWER_OPEN} {ANSWER_CLOSE}."
        )

    # ---- internals ----------------------------------------------------------------------------
    def _turn(self, text: str, start: float) -> StepResult:
        calls = has_tool_call(text)
        answers = ANSWER_OPEN in text and ANSWER_CLOSE in text
        if calls and answers:
            return self._invalid("a turn must either call one tool or answer, not both", start)
        if answers:
            self.answer_text = text
            self.done = True
            return StepResult(None, True, self._info("answer", None, True, None, start))
        if not calls:
            return self._invalid(
                f"reply with one {OPEN}{{...}}{CLOSE} or with {ANSWER_OPEN}...{ANSWER_CLOSE}", start
            )
        self.tool_calls += 1
        parsed = parse_tool_call(text)
        name = parsed.name if parsed.name in self.tools else None
        if self.tool_calls > self.max_tool_calls:
            self.budget_hit = "max_tool_calls"
            self.done = True
            info = self._info("budget", name, False, f"more than {self.max_tool_calls} tool calls", start)
            return StepResult(None, True, {**info, "budget": "max_tool_calls"})
        if isinstance(parsed, ToolCallError):
            return self._tool_error(parsed.message, name, start)
        tool = self.tools.get(parsed.name)
        if tool is None:
            offered = ", ".join(self.tools) or "none"
            return self._tool_error(f"unknown tool {parsed.name!r}; available tools: {offered}", None, start)
        ctx = ToolContext(self.images, self.active_grid, self.zoom_pixels, min_crop=self.min_crop)
        out = run_tool(tool, parsed.arguments, ctx)
        if isinstance(out, str):
            return self._tool_error(out, tool.name, start)
        self.valid_tool_calls += 1
        return StepResult(self._response(out), False, self._info("tool", tool.name, True, None, start))

    def _response(self, out: ToolOutput) -> Observation:
        body = json.dumps(out.data, separators=(", ", ": "))
        if out.image is None:
            return Observation(f"{RESPONSE_OPEN}{body}{RESPONSE_CLOSE}")
        self.images.append(out.image)
        return Observation(f"{RESPONSE_OPEN}{body}{RESPONSE_CLOSE}\n{IMAGE_PLACEHOLDER}", [out.image])

    def _tool_error(self, message: str, name: str | None, start: float) -> StepResult:
        self.all_well_formed = False
        body = json.dumps({"error": message}, ensure_ascii=True)
        return StepResult(
            Observation(f"{RESPONSE_OPEN}{body}{RESPONSE_CLOSE}"),
            False,
            self._info("tool", name, False, message, start),
        )

    def _invalid(self, message: str, start: float) -> StepResult:
        self.all_well_formed = False
        return StepResult(
            Observation(f"Invalid turn: {message}."),
            False,
            self._info("invalid", None, False, message, start),
        )

    def _info(
        self, kind: str, tool: str | None, valid: bool, error: str | None, start: float
    ) -> dict[str, Any]:
        return step_info(kind, tool, valid, error, start, turn=self.turns, tool_calls=self.tool_calls)


def env_kwarg_names() -> list[str]:
    """The keyword arguments ``ToolEnv`` accepts (for config validation)."""
    return [p for p in inspect.signature(ToolEnv.__init__).parameters if p != "self"]
