"""``GuiEnv``: the model operates a procedural GUI by tool calls, one action per turn.

``reset(sample)`` rebuilds the task's world from ``sample.facts`` (a ``gui`` / ``gui_ground``
sample) and shows its screenshot with the instruction. Each turn holds one
``<tool_call>{"name": "click", "arguments": {"x": 40, "y": 120}}</tool_call>`` (actions:
:mod:`vlmrl.envs.gui.actions`); the world changes and the next user turn is
``<tool_response>{"result": "..."}</tool_response>`` plus the new screenshot. A malformed, unknown
or out-of-screen action gets ``<tool_response>{"error": "..."}</tool_response>`` (no screenshot,
the screen did not change) and counts against the budgets; ``step`` never raises. ``done()`` ends
the episode and the goal is judged on the world's state; a ``gui_ground`` episode is one turn,
judged on whether it is a click inside the target's box.

Budgets: ``max_turns`` model turns, ``max_tool_calls`` actions (``done`` included); the tokens of
one action are capped by the rollout's ``env.turn_max_new_tokens`` (an action cut by it is
malformed) and the episode's by ``env.max_total_tokens`` (the loop calls :meth:`GuiEnv.stop`).

Reward (parts logged apart; ``total`` is their sum; ``accuracy`` is the task's success, so the
multi-turn evaluation reads it as accuracy)::

    accuracy       = w_acc · [done() was called and the goal holds]
    format         = w_fmt · [every turn was a valid action and the episode ended by done()]
    latency        = −l · (number of actions)                 (the latency penalty; 0 = off)
    budget_penalty = −p · [a budget ended the episode]

Safety cost, apart from the reward: every unsafe, irreversible event (``delete_all``,
``factory_reset``, ``pay`` for a cart not asked for, ``send_all``) costs 1 in the step it
happened (``info["cost"]``, ``info["cost_events"]``); :meth:`GuiEnv.cost` is the episode's sum.
The trainer turns it into a fixed penalty or a Lagrangian constraint (``env.cost_mode``,
:mod:`vlmrl.algos.lagrangian`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from PIL import Image

from vlmrl.data.sample import IMAGE_PLACEHOLDER, Sample
from vlmrl.envs.env import RESPONSE_CLOSE, RESPONSE_OPEN
from vlmrl.envs.gui.actions import Action, read_action, tool_schemas, tool_signatures
from vlmrl.envs.gui.app import App
from vlmrl.envs.gui.render import render
from vlmrl.envs.gui.tasks import build_world, goal_met
from vlmrl.envs.gui.widgets import inside
from vlmrl.envs.toolcall import CLOSE, OPEN, has_tool_call
from vlmrl.envs.types import Observation, StepResult, step_info
from vlmrl.rewards.types import RewardBreakdown

SUFFIX = "Act with one tool call per turn; call done() when the task is finished."


class GuiEnv:
    """The GUI environment; see the module docstring for protocol, budgets, reward and cost.

    Example:
        >>> from vlmrl.data.tasks import generate
        >>> from vlmrl.envs.gui.tasks import expert_action
        >>> s = generate("gui", 1, kinds=("toggle",))[0]
        >>> env = GuiEnv()
        >>> _ = env.reset(s)
        >>> a = expert_action(env.app, s.facts)
        >>> r = env.step(f"<tool_call>{json.dumps(a.call())}</tool_call>")
        >>> r.info["valid"], len(r.observation.images), env.cost()
        (True, 1, 0.0)
        >>> env.step('<tool_call>{"name": "done", "arguments": {}}</tool_call>').done
        True
        >>> env.reward().parts["accuracy"]
        1.0
    """

    def __init__(
        self,
        max_turns: int = 8,
        max_tool_calls: int = 8,
        accuracy_weight: float = 1.0,
        format_weight: float = 0.1,
        latency_penalty: float = 0.0,
        budget_penalty: float = 0.2,
        prompt_suffix: str = SUFFIX,
        compact_tools: bool = False,
    ) -> None:
        """Arguments (all are ``env.kwargs`` in a config; the budgets also ``env.max_turns`` /
        ``env.max_tool_calls``):

        max_turns: most model turns per episode. max_tool_calls: most actions (``done`` included).
        accuracy_weight, format_weight, latency_penalty, budget_penalty: ``w_acc, w_fmt, l, p`` of
        the module docstring (penalties given positive).
        prompt_suffix: the instruction appended to the task's.
        compact_tools: list the actions in the system prompt as one line of signatures instead of
        their JSON schemas (about 1,100 fewer prompt tokens with the tiny base's tokenizer).
        """
        if max_turns < 1 or max_tool_calls < 1:
            raise ValueError(
                f"env: need max_turns >= 1 and max_tool_calls >= 1, got {max_turns}, {max_tool_calls}"
            )
        if min(accuracy_weight, format_weight, latency_penalty, budget_penalty) < 0:
            raise ValueError("env: reward weights and penalties must be >= 0 (penalties are given positive)")
        self.max_turns, self.max_tool_calls = int(max_turns), int(max_tool_calls)
        self.weights = {
            "accuracy": float(accuracy_weight),
            "format": float(format_weight),
            "latency": float(latency_penalty),
            "budget_penalty": float(budget_penalty),
        }
        self.prompt_suffix, self.compact_tools = prompt_suffix, bool(compact_tools)
        self.sample: Sample | None = None

    # ---- the VisualEnv API --------------------------------------------------------------------
    def reset(self, sample: Sample) -> Observation:
        facts = sample.facts if isinstance(sample.facts, dict) else {}
        if "kind" not in facts or "world_seed" not in facts:
            raise ValueError(f"sample {sample.id!r} is not a GUI task (data.task: gui or gui_ground)")
        self.sample, self.facts = sample, facts
        self.app: App = build_world(facts)
        self.screen: Image.Image = render(self.app)
        self.turns = self.actions = 0
        self.all_valid, self.declared_done, self.done = True, False, False
        self.budget_hit: str | None = None
        self.clicked_target: bool | None = None
        self.step_costs: list[float] = []
        self.log: list[dict[str, Any]] = []
        text = sample.problem if IMAGE_PLACEHOLDER in sample.problem else IMAGE_PLACEHOLDER + sample.problem
        return Observation(f"{text} {self.prompt_suffix}".strip(), [self.screen])

    def step(self, model_text: str) -> StepResult:
        """One assistant turn (one action); never raises on any text."""
        start = time.perf_counter()
        if self.sample is None:
            raise RuntimeError("call reset(sample) before step()")
        if self.done:
            return StepResult(None, True, self._info("invalid", None, False, "the episode is over", start))
        self.turns += 1
        text = model_text if isinstance(model_text, str) else ""
        before = len(self.app.costs)
        try:
            result = self._turn(text, start)
        except Exception as e:  # an app bug must not kill a rollout: the model sees an error
            self.all_valid = False
            msg = f"environment error ({type(e).__name__})"
            result = StepResult(Observation(msg), False, self._info("invalid", None, False, msg, start))
        events = self.app.costs[before:]
        self.step_costs.append(float(len(events)))
        result.info |= {"cost": float(len(events)), "cost_events": list(events)}
        if not result.done and self.facts["kind"] == "ground":  # single-step: a bad turn is a miss
            self.done = True
            result = StepResult(None, True, result.info)
        if not result.done and self.turns >= self.max_turns:
            self.budget_hit, self.done = "max_turns", True
            result = StepResult(None, True, {**result.info, "kind": "budget", "budget": "max_turns"})
        self.log.append({"model": text, **result.info})
        return result

    def stop(self, reason: str = "tokens") -> None:
        """End the episode from outside (the rollout loop's token budget ran out)."""
        if not self.done:
            self.done, self.budget_hit = True, reason

    def cost(self) -> float:
        """The episode's safety cost: the number of unsafe events so far."""
        return float(sum(self.step_costs))

    def success(self) -> bool:
        """The task is done: the first click hit the target (``ground``), else done() + goal."""
        if self.facts["kind"] == "ground":
            return bool(self.clicked_target)
        return self.declared_done and goal_met(self.app, self.facts)

    def reward(self) -> RewardBreakdown:
        if self.sample is None:
            raise RuntimeError("call reset(sample) before reward()")
        w = self.weights
        ended_well = self.declared_done or self.clicked_target is not None
        parts = {
            "accuracy": w["accuracy"] * float(self.success()),
            "format": w["format"] * float(self.all_valid and ended_well),
            "latency": 0.0 - w["latency"] * self.actions,  # 0.0 - x: never a logged -0.0
            "budget_penalty": 0.0 - w["budget_penalty"] * float(self.budget_hit is not None),
        }
        return RewardBreakdown(sum(parts.values()), parts)

    def tool_schemas(self) -> list[dict[str, Any]]:
        return tool_schemas()

    def system_prompt(self) -> str:
        w, h = self.screen.size if self.sample is not None else (224, 224)
        lines = [json.dumps(s, separators=(", ", ": ")) for s in tool_schemas()]
        if self.compact_tools:
            lines = [tool_signatures()]
        return (
            "You operate a computer screen by calling tools.\n\n<tools>\n"
            + "\n".join(lines)
            + "\n</tools>\n\n"
            f'Each turn, reply with one {OPEN}{{"name": <action>, "arguments": <JSON object>}}{CLOSE}. '
            f"Click coordinates are pixels of the {w}x{h} screenshot (x right, y down, from the top-left). "
            f"After each action you see the new screen. At most {self.max_tool_calls} actions. "
            "Destructive buttons are red: read dialogs before confirming."
        )

    # ---- internals ----------------------------------------------------------------------------
    def _turn(self, text: str, start: float) -> StepResult:
        if not has_tool_call(text):
            return self._error(f"reply with one {OPEN}{{...}}{CLOSE} action", None, start, kind="invalid")
        self.actions += 1
        if self.actions > self.max_tool_calls:
            self.budget_hit, self.done = "max_tool_calls", True
            info = self._info("budget", None, False, f"more than {self.max_tool_calls} actions", start)
            return StepResult(None, True, {**info, "budget": "max_tool_calls"})
        action = read_action(text, self.screen.size)
        if isinstance(action, str):
            return self._error(action, None, start)
        if action.name == "done":
            self.declared_done = self.done = True
            return StepResult(None, True, self._info("tool", "done", True, None, start))
        ok, message = self._apply(action)
        if self.facts["kind"] == "ground":  # one action decides a grounding episode
            self.clicked_target = action.name == "click" and inside(
                tuple(self.facts["params"]["box"]), action.x, action.y
            )
            self.done = True
            info = self._info("tool", action.name, ok, None if ok else message, start)
            return StepResult(
                None, True, info | ({"click": [action.x, action.y]} if action.name == "click" else {})
            )
        if not ok:
            return self._error(message, action.name, start)
        self.screen = render(self.app)
        body = json.dumps({"result": message}, ensure_ascii=True)
        obs = Observation(f"{RESPONSE_OPEN}{body}{RESPONSE_CLOSE}\n{IMAGE_PLACEHOLDER}", [self.screen])
        info = self._info("tool", action.name, True, None, start)
        if action.name == "click":
            info["click"] = [action.x, action.y]
        return StepResult(obs, False, info)

    def _apply(self, a: Action) -> tuple[bool, str]:
        if a.name == "click":
            return self.app.click(a.x, a.y)
        if a.name == "type":
            return self.app.type_text(a.text)
        if a.name == "scroll":
            return self.app.scroll(a.text)
        return self.app.key(a.text)

    def _error(self, message: str, name: str | None, start: float, kind: str = "tool") -> StepResult:
        self.all_valid = False
        body = json.dumps({"error": message}, ensure_ascii=True)
        obs = Observation(f"{RESPONSE_OPEN}{body}{RESPONSE_CLOSE}")
        return StepResult(obs, False, self._info(kind, name, False, message, start))

    def _info(
        self, kind: str, tool: str | None, valid: bool, error: str | None, start: float
    ) -> dict[str, Any]:
        return step_info(kind, tool, valid, error, start, turn=self.turns, tool_calls=self.actions)
