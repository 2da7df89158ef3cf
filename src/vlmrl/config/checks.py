"""Checks that need no model: run by the command line before torch loads anything.

A typo in a reward name or a path must cost the user seconds, not the minute a model load takes;
so ``vlmrl train / sft / eval`` call :func:`check_before_loading` right after the config loads.
"""

from __future__ import annotations

from pathlib import Path

from vlmrl.config.schema import TrainConfig
from vlmrl.errors import MissingFileError


def looks_like_hub_id(path: str) -> bool:
    """``owner/name`` that is not a local path: only the hub can tell whether it exists.

    >>> looks_like_hub_id("Qwen/Qwen2.5-VL-3B-Instruct"), looks_like_hub_id("/nonexistent")
    (True, False)
    """
    return path.count("/") == 1 and not path.startswith((".", "/", "~"))


def check_path(key: str, path: str | None) -> None:
    """Raise :class:`MissingFileError` naming ``key`` when ``path`` is neither on disk nor a hub id."""
    if path is None or Path(path).expanduser().exists() or looks_like_hub_id(path):
        return
    raise MissingFileError(f"{key}: {path!r} does not exist (a local path, or a hub id owner/name)")


def check_before_loading(cfg: TrainConfig, model_path: str | None = None) -> None:
    """Reward names and plugin modules, then every path the run reads (``model_path`` defaults to
    ``model.path``); raises the project's user errors, each naming the key."""
    from vlmrl.rewards.judge import JUDGE, JudgeReward
    from vlmrl.rewards.plugins import reward_from_config

    reward_from_config(cfg.reward)  # unknown names and unimportable reward.modules
    if JUDGE in cfg.reward.weights:  # a judge server that is down fails now, not after the model loads
        JudgeReward(cfg.reward.judge).probe()
    check_path("model.path", model_path or cfg.model.path)
    check_path("sft.init", cfg.sft.init)
    from vlmrl.data.loading import split_spec

    for key, value in (("data.path", cfg.data.path), ("data.eval_path", cfg.data.eval_path)):
        check_path(key, None if value is None else split_spec(value, "")[0])  # NAME@SPLIT
    check_path("data.image_dir", cfg.data.image_dir)
