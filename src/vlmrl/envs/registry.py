"""Environments by name, so a config can say ``env: {name: tools, kwargs: {max_turns: 4}}``.

``make_env(name, **kwargs)`` checks the name and builds one environment right away (so a bad
keyword fails at load time, naming it and the allowed ones), then returns a zero-argument
factory: the rollout loop calls it once per trajectory.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from vlmrl.envs.env import ToolEnv
from vlmrl.envs.gui import GuiEnv
from vlmrl.envs.spy import SpyGame
from vlmrl.envs.types import VisualEnv
from vlmrl.errors import UserError

EnvFactory = Callable[..., VisualEnv]
ENVS: dict[str, EnvFactory] = {}


def register_env(name: str, factory: EnvFactory | None = None) -> Any:
    """Register ``factory`` (a class or function taking keyword arguments) as ``name``.

    Usable as ``register_env("name", factory)`` or as a decorator ``@register_env("name")``.
    """

    def add(f: EnvFactory) -> EnvFactory:
        if name in ENVS and ENVS[name] is not f:
            raise ValueError(f"environment {name!r} is registered twice")
        ENVS[name] = f
        return f

    return add(factory) if factory is not None else add


def env_names() -> list[str]:
    """Names of all registered environments, sorted."""
    return sorted(ENVS)


def make_env(name: str, **kwargs: Any) -> Callable[[], VisualEnv]:
    """A factory of fresh ``name`` environments built with ``kwargs``.

    Raises ``ValueError`` for an unknown name (listing the known ones) or a bad keyword.
    """
    if name not in ENVS:
        raise UserError(f"unknown environment {name!r}; known environments: {env_names()}")
    factory = ENVS[name]
    target = factory.func if isinstance(factory, partial) else factory
    params = inspect.signature(target).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = [p for p in params if p != "self"]
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise UserError(f"environment {name!r} has no option(s) {unknown}; allowed: {allowed}")
    built = partial(factory, **kwargs)
    built()  # fail now, at config time, on a bad value rather than mid-rollout
    return built


register_env("tools", ToolEnv)
register_env("no_tools", partial(ToolEnv, tools=()))
register_env("gui", GuiEnv)
register_env("spy", SpyGame)
