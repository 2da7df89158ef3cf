"""User reward modules: ``reward.modules`` in a config names Python files or modules to import.

Importing one runs its ``@register_reward`` decorators, so its rewards become usable by name
(as EasyR1's ``reward_function: file.py:fn``). These are the user's own files, named in the
user's own config — never anything a model wrote.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from vlmrl.errors import MissingFileError, PluginImportError, UserError
from vlmrl.rewards.forms import import_file, module_name


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
