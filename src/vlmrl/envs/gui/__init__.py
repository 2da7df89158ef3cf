"""A procedural GUI world for agents: seeded apps rendered with PIL, actions as tool calls,
ground truth for every widget, and a safety cost for unsafe, irreversible actions.

``GuiEnv`` is registered as environment ``gui``; importing this package also registers the
sample generators ``gui`` (multi-step tasks) and ``gui_ground`` (single-click grounding) in
``vlmrl.data``'s task registry. See ``docs/guides/gui.md``.
"""

from vlmrl.envs.gui.actions import (
    ACTION_NAMES,
    Action,
    clip_point,
    from_processor,
    processor_size,
    read_action,
    to_processor,
)
from vlmrl.envs.gui.apps import APPS, make_app
from vlmrl.envs.gui.env import GuiEnv
from vlmrl.envs.gui.render import mark_click, render
from vlmrl.envs.gui.tasks import (
    TASK_KINDS,
    build_world,
    expert_action,
    goal_met,
    register_gui_tasks,
    shortcut_action,
)

register_gui_tasks()

__all__ = [
    "ACTION_NAMES",
    "APPS",
    "TASK_KINDS",
    "Action",
    "GuiEnv",
    "build_world",
    "clip_point",
    "expert_action",
    "from_processor",
    "goal_met",
    "make_app",
    "mark_click",
    "processor_size",
    "read_action",
    "register_gui_tasks",
    "render",
    "shortcut_action",
    "to_processor",
]
