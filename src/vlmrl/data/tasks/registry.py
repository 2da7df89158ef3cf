"""Tasks by name, so a config can say ``task: count`` and pass knobs as keyword arguments.

Each sample gets its own ``random.Random`` seeded from ``(task, split, seed, index)`` (a string
seed, which Python hashes with SHA-512, so it is stable across processes and PYTHONHASHSEED).
That makes sample ``i`` independent of how many samples came before it: ``generate(n=10)`` is a
prefix of ``generate(n=100)``, and train/test with the same seed still differ.
"""

from __future__ import annotations

import inspect
import random
from typing import Any, TypeVar

from vlmrl.data.sample import Sample
from vlmrl.data.tasks.base import TaskGenerator
from vlmrl.errors import UserError

TASKS: dict[str, type[TaskGenerator]] = {}

T = TypeVar("T", bound=type[TaskGenerator])


def register_task(cls: T) -> T:
    """Class decorator: make ``cls`` reachable as ``get_task(cls.name)``."""
    if cls.name in TASKS and TASKS[cls.name] is not cls:
        raise ValueError(f"task {cls.name!r} is registered twice ({TASKS[cls.name]} and {cls})")
    TASKS[cls.name] = cls
    return cls


def task_names() -> list[str]:
    """Names of all registered tasks, sorted."""
    return sorted(TASKS)


def get_task(name: str, **knobs: Any) -> TaskGenerator:
    """Build the generator registered as ``name`` with difficulty ``knobs``.

    Raises ``ValueError`` naming the unknown task (or knob) and listing what is allowed.
    """
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; allowed tasks: {task_names()}")
    cls = TASKS[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(knobs) - set(allowed))
    if unknown:
        raise UserError(f"task {name!r} has no knob(s) {unknown}; allowed knobs: {allowed}")
    return cls(**knobs)


def sample_rng(task: str, seed: int, split: str, index: int) -> random.Random:
    """The RNG for one sample; see the module docstring for why it is per sample."""
    return random.Random(f"vlmrl:{task}:{split}:{seed}:{index}")


def generate(
    task: str | TaskGenerator, n: int, seed: int = 0, split: str = "train", start: int = 0, **knobs: Any
) -> list[Sample]:
    """``n`` samples of ``task`` (a name or a built generator); same arguments -> same bytes.

    ``start`` offsets the sample indices, so a stream can be generated in chunks.
    """
    if isinstance(task, TaskGenerator):
        if knobs:
            raise ValueError("pass knobs to get_task(), not generate(), when giving a built generator")
        gen = task
    else:
        gen = get_task(task, **knobs)
    out = []
    for index in range(start, start + n):
        s = gen.sample(sample_rng(gen.name, seed, split, index), index, split)
        s.id = f"{gen.name}-{split}-s{seed}-{index}"
        out.append(s)
    return out
