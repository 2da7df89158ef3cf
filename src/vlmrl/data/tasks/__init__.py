"""Procedural visual tasks: seeded generators that render with PIL and return scene facts.

Importing this package registers every task; ``get_task(name, **knobs)`` builds one and
``generate(name, n, seed, split)`` draws samples from it.
"""

# Imported for their @register_task side effect.
from vlmrl.data.tasks import (  # noqa: F401
    chart,
    chart_calc,
    count,
    count_probe,
    geometry,
    ground,
    measure,
    motion,
    pope,
    shortcut,
    simple,
    spatial,
    zoom,
)
from vlmrl.data.tasks.base import COLORS, PALETTE, SHAPES, TaskGenerator
from vlmrl.data.tasks.registry import TASKS, generate, get_task, register_task, task_names

__all__ = [
    "COLORS",
    "PALETTE",
    "SHAPES",
    "TASKS",
    "TaskGenerator",
    "generate",
    "get_task",
    "register_task",
    "task_names",
]
