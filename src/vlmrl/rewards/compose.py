"""Weighted sums of rewards, the form configs use (``{accuracy: 0.9, format: 0.1}``).

total = Σᵢ wᵢ · rᵢ.total over the named rewards. ``parts`` keeps every component unweighted,
``parts[name] = rᵢ.total``, plus each component's own parts as ``"name/part"`` (when they say
more than the total), so each can be logged. ``spans`` add up weighted, key by key:
``spans[k] = Σᵢ wᵢ · rᵢ.spans[k]``. With non-negative weights the total lies in
[0, Σ wᵢ]; EasyR1's default ``{"accuracy": 0.9, "format": 0.1}`` keeps it in [0, 1].
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vlmrl.data.sample import Sample
from vlmrl.rewards.forms import BatchReward, Scorer, is_function_spec, load_function, scorer_for
from vlmrl.rewards.registry import RewardFn, UnknownRewardError, get_reward, reward_names
from vlmrl.rewards.types import RewardBreakdown

#: EasyR1's default mixture.
DEFAULT_WEIGHTS: dict[str, float] = {"accuracy": 0.9, "format": 0.1}


class ComposedReward(BatchReward):
    """Weighted sum of scorers; ``reward(completion, sample)`` for one rollout, ``score_batch`` for many.

    Each component scores the whole batch in one call (a judge server or a TRL function sees the
    step at once), then totals and parts are combined rollout by rollout.
    """

    def __init__(self, components: list[tuple[str, float, Scorer]]):
        self.components = components
        self.__name__ = self.__qualname__ = (
            "compose(" + ", ".join(f"{name}={weight:g}" for name, weight, _ in components) + ")"
        )

    def score_batch(
        self,
        completions: Sequence[str | None],
        samples: Sequence[Sample],
        lengths: Sequence[int] | None = None,
    ) -> list[RewardBreakdown]:
        results = [scorer(completions, samples, lengths) for _, _, scorer in self.components]
        out = []
        for i in range(len(completions)):
            total = 0.0
            parts: dict[str, float] = {}
            spans: dict[str, float] = {}
            for (name, weight, _), per_rollout in zip(self.components, results, strict=True):
                result = per_rollout[i]
                total += weight * result.total
                parts[name] = result.total
                for key, value in result.parts.items():
                    if key != name:
                        parts[f"{name}/{key}"] = value
                for key, value in result.spans.items():
                    spans[key] = spans.get(key, 0.0) + weight * value
            out.append(RewardBreakdown(total, parts, spans))
        return out


def compose(
    weights: Mapping[str, float],
    extra: Mapping[str, Any] | None = None,
    kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    trl_completions: str = "text",
) -> ComposedReward:
    """A reward whose total is the weighted sum of the named rewards' totals.

    A key is a registered name, a name in ``extra`` (rewards built outside the registry, e.g. the
    model judge), or ``path/file.py:fn`` / ``module:fn`` (EasyR1's ``reward_function`` form; its
    parts are named after the function). Each function may be in any form of
    ``vlmrl.rewards.forms``; ``kwargs[key]`` are passed to it at every call. Raises
    ``ValueError`` (or ``UnknownRewardError``, also a ``KeyError``) at build time for an empty
    mapping, an unknown name or a weight that is not a finite number.

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
    extra, kwargs = extra or {}, kwargs or {}
    components: list[tuple[str, float, Scorer]] = []
    for key, weight in weights.items():
        w = _check_weight(key, weight)
        if isinstance(key, str) and key in extra:
            fn, label = extra[key], key
        elif isinstance(key, str) and is_function_spec(key) and key not in reward_names():
            fn = load_function(key)
            label = getattr(fn, "__name__", key)
        else:
            fn, label = _lookup(key), key
        components.append((label, w, scorer_for(fn, label, kwargs.get(key), trl_completions)))
    return ComposedReward(components)


def score_all(
    reward_fn: Callable[..., Any],
    completions: Sequence[str | None],
    samples: Sequence[Sample],
    lengths: Sequence[int] | None = None,
) -> list[RewardBreakdown]:
    """Score a batch with ``reward_fn``: in one call when it scores batches (``score_batch``),
    else rollout by rollout."""
    batch = getattr(reward_fn, "score_batch", None)
    if batch is not None:
        return batch(completions, samples, lengths)
    return [reward_fn(c, s) for c, s in zip(completions, samples, strict=True)]


def build_reward(spec: str | Mapping[str, float], **options: Any) -> RewardFn:
    """The reward a config names: one registered name, or a name → weight mapping (``compose``;
    ``options`` are its keyword arguments).

    >>> build_reward("format").__name__, build_reward({"format": 1.0}).__name__
    ('format_reward', 'compose(format=1)')
    """
    if isinstance(spec, str):
        return get_reward(spec)
    return compose(spec, **options)


def _lookup(name: object) -> RewardFn:
    if not isinstance(name, str) or name not in reward_names():
        allowed = ", ".join(reward_names())
        raise UnknownRewardError(f"reward spec key {name!r} is not a reward; allowed: {allowed}")
    return get_reward(name)


def _check_weight(name: str, weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise ValueError(f"reward spec key {name!r}: weight must be a finite number, got {weight!r}")
    return float(weight)
