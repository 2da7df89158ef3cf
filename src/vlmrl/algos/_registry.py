"""Name lookup shared by the ``algos`` registries: one error message for every unknown name."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


def resolve(enum_cls: type[E], name: str | E, what: str) -> E:
    """Turn a config string (or an enum member) into ``enum_cls``'s member.

    Raises a ``ValueError`` that names the bad value and lists the allowed ones, e.g.
    ``unknown advantage estimator 'gpro'; allowed: grpo, drgrpo, rloo, ...``.
    """
    try:
        return enum_cls(name)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise ValueError(f"unknown {what} {name!r}; allowed: {allowed}") from None
