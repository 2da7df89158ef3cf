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

from vlmrl.errors import MissingFileError, PluginImportError


def import_reward_modules(modules: list[str]) -> None:
    """Import each entry: a ``.py`` path or a dotted module name. Errors name the entry."""
    for entry in modules:
        if entry.endswith(".py"):
            path = Path(entry)
            if not path.exists():
                raise MissingFileError(f"reward.modules: file {entry!r} does not exist")
            name = f"vlmrl_user_reward_{abs(hash(path.resolve()))}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(entry)
            except ImportError as e:
                raise PluginImportError(f"reward.modules: cannot import {entry!r}: {e}") from e


def reward_from_config(reward_cfg):
    """The run's reward function from its ``reward`` config section (modules first, then weights)."""
    from vlmrl.rewards.compose import build_reward

    import_reward_modules(reward_cfg.modules)
    return build_reward(reward_cfg.weights)
