"""User reward modules: ``reward.modules`` in a config names Python files or modules to import.

Importing one runs its ``@register_reward`` decorators, so its rewards become usable by name
(as EasyR1's ``reward_function: file.py:fn``). These are the user's own files, named in the
user's own config — never anything a model wrote.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from vlmrl.errors import MissingFileError, PluginImportError, UserError


def import_reward_modules(modules: list[str]) -> None:
    """Import each entry: a ``.py`` path or a dotted module name. Errors name the entry."""
    from vlmrl.rewards.registry import reward_names

    for entry in modules:
        if entry.endswith(".py"):
            path = Path(entry)
            if not path.exists():
                raise MissingFileError(f"reward.modules: file {entry!r} does not exist")
            if module_name(path) in sys.modules:
                continue
            before = set(reward_names())
            import_file(path)
            if set(reward_names()) == before:
                raise UserError(
                    f"reward.modules: {entry} registers no reward; decorate a function with "
                    f"@register_reward('name'), or name it in reward.weights as '{entry}:function'"
                )
        else:
            try:
                importlib.import_module(entry)
            except ImportError as e:
                raise PluginImportError(f"reward.modules: cannot import {entry!r}: {e}") from e


def module_name(path: Path) -> str:
    """The ``sys.modules`` name a user's reward file is imported under (one per resolved path)."""
    return f"vlmrl_user_reward_{abs(hash(path.resolve()))}"


def import_file(path: Path) -> ModuleType:
    """Import the Python file ``path`` once (later calls return the same module)."""
    name = module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # a fixed file can be imported again in the same process
        raise
    return module


def reward_from_config(reward_cfg):
    """The run's reward function from its ``reward`` config section (modules first, then weights;
    a ``judge`` key builds the model judge from ``reward.judge``)."""
    from vlmrl.rewards.compose import build_reward
    from vlmrl.rewards.judge import JUDGE, JudgeReward

    import_reward_modules(reward_cfg.modules)
    unknown = sorted(set(reward_cfg.function_kwargs) - set(reward_cfg.weights))
    if unknown:
        raise UserError(
            f"reward.function_kwargs: {unknown} are not keys of reward.weights {sorted(reward_cfg.weights)}"
        )
    extra = {JUDGE: JudgeReward(reward_cfg.judge)} if JUDGE in reward_cfg.weights else {}
    return build_reward(
        reward_cfg.weights, extra=extra, kwargs=reward_cfg.function_kwargs,
        trl_completions=reward_cfg.trl_completions,
    )  # fmt: skip
