"""Load HF image-text-to-text models; build the tiny offline Qwen2.5-VL.

The names below load lazily (PEP 562), so importing a torch-free submodule such as
``vlmrl.models.base_mix`` (the CLI's cheap checks do) does not import torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlmrl.models.loading import Policy, load_policy
    from vlmrl.models.tiny import TinyConfig, make_tiny

__all__ = ["Policy", "TinyConfig", "load_policy", "make_tiny"]

_HOME = {"Policy": "loading", "load_policy": "loading", "TinyConfig": "tiny", "make_tiny": "tiny"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"vlmrl.models.{_HOME[name]}"), name)
    raise AttributeError(f"module 'vlmrl.models' has no attribute {name!r}")
