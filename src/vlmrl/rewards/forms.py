"""Reward functions in the forms other libraries use, turned into one batch scorer each.

A scorer takes a batch, ``(completions, samples, lengths) -> list[RewardBreakdown]``, so a reward
that is cheaper in batches (a judge server, a TRL function) sees the whole step at once. The forms,
told apart by the function's parameter names (the names those libraries call them by):

=====================  ===================================================  =========================
form                   signature                                            returns
=====================  ===================================================  =========================
vlmrl (ours)           ``f(completion, sample)``                            ``RewardBreakdown`` or a
                                                                            float
TRL                    ``f(completions, **columns)`` (may be ``async``)     ``list[float | None]``
EasyR1 batch           ``f(reward_inputs, **kwargs)``                       ``list[dict]`` with
                                                                            ``overall``
EasyR1 sequential      ``f(reward_input, **kwargs)``                        ``dict`` with ``overall``
=====================  ===================================================  =========================

TRL's function gets ``completions`` (strings, or ``[{"role": "assistant", "content": …}]`` lists
with ``reward.trl_completions: messages``), ``prompts`` (each sample's problem text) and one list
per dataset column (``Sample.columns``), plus ``answer`` and ``images`` when no column has those
names. A ``None`` score (TRL: "does not apply") counts 0. EasyR1's inputs are dicts with
``response``, ``response_length`` (tokens), ``ground_truth`` and the row's columns; every key of its
result besides ``overall`` is logged as a part.

A result of the wrong type or length is a :class:`RewardReturnError` naming the file and function:
a bug in the user's reward is theirs to fix, and a silent 0 would train on it.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import math
import numbers
import sys
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from vlmrl.data.sample import Sample
from vlmrl.errors import MissingFileError, PluginImportError, UserError
from vlmrl.rewards.types import RewardBreakdown


class RewardReturnError(UserError):
    """A user's reward function returned something of the wrong type, length or value."""


class Scorer(Protocol):
    def __call__(
        self, completions: Sequence[str | None], samples: Sequence[Sample], lengths: Sequence[int] | None
    ) -> list[RewardBreakdown]: ...


class BatchReward:
    """A reward that scores a whole batch in one call; on one rollout it scores a batch of one,
    so it also fits wherever a ``(completion, sample)`` reward goes."""

    def __call__(self, completion: str | None, sample: Sample) -> RewardBreakdown:
        return self.score_batch([completion], [sample])[0]

    def score_batch(
        self,
        completions: Sequence[str | None],
        samples: Sequence[Sample],
        lengths: Sequence[int] | None = None,
    ) -> list[RewardBreakdown]:
        """One breakdown per completion; ``lengths`` are the completions' token counts when known."""
        raise NotImplementedError


def where(fn: Callable[..., Any]) -> str:
    """``file.py:name`` of a function, for messages."""
    try:
        file = Path(inspect.getsourcefile(fn) or "?").name
    except TypeError:
        file = "?"
    return f"{file}:{getattr(fn, '__qualname__', repr(fn))}"


def form_of(fn: Callable[..., Any]) -> str:
    """``vlmrl`` | ``trl`` | ``easyr1_batch`` | ``easyr1_sequential``, from the parameter names.

    >>> form_of(lambda completions, **kw: [0.0]), form_of(lambda reward_inputs: [])
    ('trl', 'easyr1_batch')
    >>> form_of(lambda completion, sample: 1.0)
    'vlmrl'
    """
    params = list(inspect.signature(fn).parameters)
    if "completions" in params:
        return "trl"
    if params and params[0] == "reward_inputs":
        return "easyr1_batch"
    if params and params[0] == "reward_input":
        return "easyr1_sequential"
    return "vlmrl"


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion from synchronous code, also when a loop already runs here
    (a notebook): then in a fresh loop on a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _number(value: Any, fn: Callable[..., Any], what: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise RewardReturnError(
            f"reward {where(fn)} returned {type(value).__name__} {value!r} for {what}; "
            "expected a finite number"
        )
    return float(value)


def _list_of(result: Any, n: int, fn: Callable[..., Any], item: str) -> list[Any]:
    if not isinstance(result, (list, tuple)) or len(result) != n:
        got = f"{len(result)} items" if isinstance(result, (list, tuple)) else type(result).__name__
        raise RewardReturnError(f"reward {where(fn)} returned {got}; expected a list of {n} {item}")
    return list(result)


def _breakdown_of_dict(d: Any, fn: Callable[..., Any], label: str) -> RewardBreakdown:
    if not isinstance(d, Mapping) or "overall" not in d:
        raise RewardReturnError(
            f"reward {where(fn)} returned {type(d).__name__} {d!r}; expected a dict with an 'overall' score"
        )
    parts = {str(k): _number(v, fn, f"key {k!r}") for k, v in d.items() if k != "overall"}
    total = _number(d["overall"], fn, "key 'overall'")
    return RewardBreakdown(total, {label: total, **parts})


def per_sample(fn: Callable[..., Any], label: str, kwargs: Mapping[str, Any] | None = None) -> Scorer:
    """Our form: ``fn(completion, sample)`` → ``RewardBreakdown`` or a number, called per rollout."""
    kw = dict(kwargs or {})

    def score(completions, samples, lengths=None):
        out = []
        for c, s in zip(completions, samples, strict=True):
            r = fn(c, s, **kw)
            if not isinstance(r, RewardBreakdown):
                total = _number(r, fn, "one completion")
                r = RewardBreakdown(total, {label: total})
            out.append(r)
        return out

    return score


def trl_columns(samples: Sequence[Sample]) -> dict[str, list[Any]]:
    """One list per column of the batch (a column a sample lacks is ``None`` there), plus
    ``answer`` and ``images`` unless a column already has the name."""
    names = dict.fromkeys(k for s in samples for k in s.columns)
    cols = {k: [s.columns.get(k) for s in samples] for k in names}
    cols.setdefault("answer", [s.answer for s in samples])
    cols.setdefault("images", [s.images for s in samples])
    return cols


def trl(fn: Callable[..., Any], label: str, kwargs: Mapping[str, Any] | None = None,
        completions: str = "text") -> Scorer:  # fmt: skip
    """TRL's form: ``fn(completions=[...], prompts=[...], **columns) -> list[float | None]``."""

    def score(texts, samples, lengths=None):
        comps: list[Any] = [t or "" for t in texts]
        if completions == "messages":  # TRL's conversational format
            comps = [[{"role": "assistant", "content": t}] for t in comps]
        cols = trl_columns(samples) | dict(kwargs or {})
        result = fn(completions=comps, prompts=[s.problem for s in samples], **cols)
        if inspect.isawaitable(result):
            result = run_sync(result)
        values = _list_of(result, len(texts), fn, "floats (or None)")
        return [
            RewardBreakdown(v, {label: v})
            for v in (_number(x, fn, f"completion {i}") for i, x in enumerate(values))
        ]

    return score


def _easyr1_inputs(texts, samples, lengths) -> list[dict[str, Any]]:
    lengths = lengths if lengths is not None else [len(t or "") for t in texts]
    return [
        {**s.columns, "response": t or "", "response_length": int(n), "ground_truth": s.answer}
        for t, s, n in zip(texts, samples, lengths, strict=True)
    ]


def easyr1_batch(fn: Callable[..., Any], label: str, kwargs: Mapping[str, Any] | None = None) -> Scorer:
    """EasyR1's ``reward_type: batch``: ``fn(reward_inputs, **kwargs) -> list[dict]``."""

    def score(texts, samples, lengths=None):
        result = fn(_easyr1_inputs(texts, samples, lengths), **dict(kwargs or {}))
        return [_breakdown_of_dict(d, fn, label) for d in _list_of(result, len(texts), fn, "dicts")]

    return score


def easyr1_sequential(fn: Callable[..., Any], label: str, kwargs: Mapping[str, Any] | None = None) -> Scorer:
    """EasyR1's ``reward_type: sequential``: ``fn(reward_input, **kwargs) -> dict``, per rollout."""

    def score(texts, samples, lengths=None):
        kw = dict(kwargs or {})
        return [_breakdown_of_dict(fn(x, **kw), fn, label) for x in _easyr1_inputs(texts, samples, lengths)]

    return score


def scorer_for(fn: Callable[..., Any], label: str, kwargs: Mapping[str, Any] | None = None,
               trl_completions: str = "text") -> Scorer:  # fmt: skip
    """The batch scorer of ``fn`` in whichever form it is written (see the module docstring)."""
    batch = getattr(fn, "score_batch", None)
    if batch is not None:  # an object that scores batches itself (the model judge)
        return batch
    form = form_of(fn)
    if form == "trl":
        return trl(fn, label, kwargs, trl_completions)
    if form == "easyr1_batch":
        return easyr1_batch(fn, label, kwargs)
    if form == "easyr1_sequential":
        return easyr1_sequential(fn, label, kwargs)
    return per_sample(fn, label, kwargs)


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


def is_function_spec(key: str) -> bool:
    """``path/file.py:fn`` or ``package.module:fn`` (EasyR1's ``reward_function`` form)."""
    head, colon, name = key.rpartition(":")
    return bool(colon and head and name.isidentifier())


def load_function(spec: str) -> Callable[..., Any]:
    """The function ``fn`` of ``path/file.py:fn`` or ``package.module:fn``; errors name the spec."""
    target, _, name = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise MissingFileError(f"reward.weights: {spec!r}: file {target!r} does not exist")
        try:
            module = import_file(path)
        except ImportError as e:
            raise PluginImportError(f"reward.weights: {spec!r}: cannot import {target}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise PluginImportError(f"reward.weights: {spec!r}: cannot import {target!r}: {e}") from e
    fn = getattr(module, name, None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items() if inspect.isfunction(v) and not k.startswith("_"))
        raise UserError(f"reward.weights: {spec!r}: {target} has no function {name!r}; functions are {found}")
    return fn
