"""Rewards by name, so a config can say ``reward: {accuracy: 0.9, format: 0.1}``.

Every reward has one signature, ``(completion, sample) -> RewardBreakdown``; it never raises
on any completion (``None`` included) and returns a finite ``total`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from vlmrl.data.sample import Sample
from vlmrl.errors import UserError
from vlmrl.rewards.types import RewardBreakdown

RewardFn: TypeAlias = Callable[[str | None, Sample], RewardBreakdown]

_REWARDS: dict[str, RewardFn] = {}


class UnknownRewardError(UserError, KeyError):
    """An unknown reward name; catchable as ``KeyError`` or ``ValueError``.

    ``str()`` gives the plain message (a bare ``KeyError`` would print it in quotes).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def register_reward(*names: str) -> Callable[[RewardFn], RewardFn]:
    """Register the decorated reward under each of ``names`` (aliases share one function).

    Registering a different function under a taken name raises ``ValueError``.

    >>> @register_reward("doc_always_one")
    ... def always_one(completion, sample):
    ...     return RewardBreakdown(1.0, {"doc_always_one": 1.0})
    >>> get_reward("doc_always_one")(None, None).total
    1.0
    >>> _ = _REWARDS.pop("doc_always_one")
    """
    if not names:
        raise ValueError("register_reward needs at least one name")

    def decorator(fn: RewardFn) -> RewardFn:
        for name in names:
            old = _REWARDS.get(name)
            # Same module and name means a re-import of the same definition, not a clash.
            if old is not None and _qualname(old) != _qualname(fn):
                raise ValueError(f"reward {name!r} is already registered to {_qualname(old)}")
            _REWARDS[name] = fn
        return fn

    return decorator


def _qualname(fn: Callable[..., object]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def reward_names() -> list[str]:
    """All registered names, sorted.

    >>> {"format", "math", "auto", "accuracy", "iou"} <= set(reward_names())
    True
    """
    return sorted(_REWARDS)


def get_reward(name: str) -> RewardFn:
    """The reward registered as ``name``; an unknown name raises :class:`UnknownRewardError`.

    >>> get_reward("fromat")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    vlmrl.rewards.registry.UnknownRewardError: unknown reward 'fromat'; allowed: ...
    """
    try:
        return _REWARDS[name]
    except (KeyError, TypeError):
        allowed = ", ".join(reward_names())
        raise UnknownRewardError(f"unknown reward {name!r}; allowed: {allowed}") from None
