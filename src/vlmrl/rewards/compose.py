"""Weighted sums of registered rewards, the form configs use (``{accuracy: 0.9, format: 0.1}``).

total = Σᵢ wᵢ · rᵢ.total over the named rewards. ``parts`` keeps every component unweighted,
``parts[name] = rᵢ.total``, plus each component's own parts as ``"name/part"`` (when they say
more than the total), so each can be logged. ``spans`` add up weighted, key by key:
``spans[k] = Σᵢ wᵢ · rᵢ.spans[k]``. With non-negative weights the total lies in
[0, Σ wᵢ]; EasyR1's default ``{"accuracy": 0.9, "format": 0.1}`` keeps it in [0, 1].
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

from vlmrl.data.sample import Sample
from vlmrl.rewards.registry import RewardFn, UnknownRewardError, get_reward, reward_names
from vlmrl.rewards.types import RewardBreakdown

#: EasyR1's default mixture.
DEFAULT_WEIGHTS: dict[str, float] = {"accuracy": 0.9, "format": 0.1}


def compose(weights: Mapping[str, float]) -> RewardFn:
    """A reward whose total is the weighted sum of the named rewards' totals.

    Raises ``ValueError`` (or ``UnknownRewardError``, also a ``KeyError``) at build time for an
    empty mapping, an unknown name or a weight that is not a finite number.

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="", answer="3", answer_type="number")
    >>> r = compose({"accuracy": 0.9, "format": 0.1})("<think>1+2</think><answer>3</answer>", s)
    >>> round(r.total, 6), r.parts["accuracy"], r.parts["format"]
    (1.0, 1.0, 1.0)
    >>> compose({"acuracy": 1.0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    vlmrl.rewards.registry.UnknownRewardError: reward spec key 'acuracy' is not a reward; allowed: ...
    """
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"reward weights must be a non-empty mapping of name → weight, got {weights!r}")
    components: list[tuple[str, float, RewardFn]] = []
    for name, weight in weights.items():
        components.append((name, _check_weight(name, weight), _lookup(name)))

    def composed(completion: str | None, sample: Sample) -> RewardBreakdown:
        total = 0.0
        parts: dict[str, float] = {}
        spans: dict[str, float] = {}
        for name, weight, fn in components:
            result = fn(completion, sample)
            total += weight * result.total
            parts[name] = result.total
            for key, value in result.parts.items():
                if key != name:
                    parts[f"{name}/{key}"] = value
            for key, value in result.spans.items():
                spans[key] = spans.get(key, 0.0) + weight * value
        return RewardBreakdown(total, parts, spans)

    composed.__name__ = composed.__qualname__ = (
        "compose(" + ", ".join(f"{name}={weight:g}" for name, weight, _ in components) + ")"
    )
    return composed


def build_reward(spec: str | Mapping[str, float]) -> RewardFn:
    """The reward a config names: one registered name, or a name → weight mapping (``compose``).

    >>> build_reward("format").__name__, build_reward({"format": 1.0}).__name__
    ('format_reward', 'compose(format=1)')
    """
    if isinstance(spec, str):
        return get_reward(spec)
    return compose(spec)


def _lookup(name: object) -> RewardFn:
    if not isinstance(name, str) or name not in reward_names():
        allowed = ", ".join(reward_names())
        raise UnknownRewardError(f"reward spec key {name!r} is not a reward; allowed: {allowed}")
    return get_reward(name)


def _check_weight(name: str, weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise ValueError(f"reward spec key {name!r}: weight must be a finite number, got {weight!r}")
    return float(weight)
