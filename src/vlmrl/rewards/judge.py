"""A model judge as a reward: an OpenAI-compatible ``/chat/completions`` server scores each completion.

Any server that speaks that API works (``vllm serve MODEL``, SGLang, llama.cpp's server, a hosted
API). One step's completions are judged together: requests go out concurrently, at most
``concurrency`` in flight; each attempt has a hard ``timeout_s``; timeouts, connection errors,
HTTP 429 / 5xx and non-JSON bodies are retried ``retries`` times with exponential backoff.

The judge's reply is untrusted text: the score is its *last* number divided by ``max_score``; a reply
without one, or outside ``[0, max_score]``, is *unparsed*. A completion whose judgement failed or was
unparsed takes the mean of the successful judgements of its own group (0 when there are none),
so a server hiccup neither rewards nor punishes it within the group. Each rollout's breakdown
carries ``failed``, ``unparsed`` and ``cached`` (0/1) beside the score, so the training metrics
show ``reward/judge/failed`` etc. as fractions of the step's rollouts.

A server that cannot be reached at all is a :class:`JudgeUnavailableError` (a user error): at
start-up (:meth:`JudgeReward.probe`, run before any model loads) and whenever every request of a
batch fails to connect.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vlmrl.config.schema import JudgeConfig
from vlmrl.data.sample import Sample
from vlmrl.errors import UserError
from vlmrl.rewards.forms import BatchReward, run_sync
from vlmrl.rewards.types import RewardBreakdown

#: The ``reward.weights`` key that selects the judge.
JUDGE = "judge"

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class JudgeUnavailableError(UserError):
    """The judge server cannot be reached."""


@dataclass
class Verdict:
    """One judgement: ``score`` in [0, 1] or None, and how it went."""

    score: float | None
    failed: bool = False
    unparsed: bool = False
    cached: bool = False
    error: str = ""


def parse_score(text: Any, max_score: float) -> float | None:
    """The reply's last number / ``max_score``; None when there is none or it is out of range.

    >>> parse_score("Reasoning... Score: 7", 10), parse_score("no idea", 10), parse_score("11", 10)
    (0.7, None, None)
    """
    if not isinstance(text, str):
        return None
    found = _NUMBER.findall(text)
    if not found:
        return None
    value = float(found[-1])
    if not 0 <= value <= max_score:
        return None
    return value / max_score


def render(template: str, completion: str | None, sample: Sample) -> str:
    """Fill ``{problem}``, ``{answer}``, ``{completion}`` and ``{COLUMN}``; other braces stay.

    >>> s = Sample(id="0", images=[], problem="1+1?", answer="2", columns={"level": 3})
    >>> render("{problem} [{answer}] {completion} L{level} {x}", "2", s)
    '1+1? [2] 2 L3 {x}'
    """
    values = {str(k): str(v) for k, v in sample.columns.items()}
    values |= {"problem": sample.problem, "answer": sample.answer, "completion": completion or ""}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def _check(cfg: JudgeConfig) -> None:
    if not cfg.url:
        raise UserError("reward.judge.url: reward.weights has 'judge' but no judge server URL is set")
    if not cfg.url.startswith(("http://", "https://")):
        raise UserError(f"reward.judge.url: {cfg.url!r} must start with http:// or https://")
    for key, value, lo in (("concurrency", cfg.concurrency, 1), ("retries", cfg.retries, 0),
                           ("cache_size", cfg.cache_size, 0), ("max_tokens", cfg.max_tokens, 1)):  # fmt: skip
        if value < lo:
            raise UserError(f"reward.judge.{key}: must be ≥ {lo}, got {value}")
    for key, value in (("timeout_s", cfg.timeout_s), ("max_score", cfg.max_score)):
        if not value > 0:
            raise UserError(f"reward.judge.{key}: must be > 0, got {value}")
    if cfg.backoff_s < 0:
        raise UserError(f"reward.judge.backoff_s: must be ≥ 0, got {cfg.backoff_s}")


class JudgeReward(BatchReward):
    """``score_batch(completions, samples)`` → one :class:`RewardBreakdown` per completion."""

    def __init__(self, cfg: JudgeConfig):
        _check(cfg)
        self.cfg = cfg
        self.endpoint = cfg.url.rstrip("/") + "/chat/completions"
        self.cache: OrderedDict[str, float | None] = OrderedDict()
        self.__name__ = f"judge({cfg.model} at {cfg.url})"

    # ------------------------------------------------------------------ public
    def score_batch(
        self,
        completions: Sequence[str | None],
        samples: Sequence[Sample],
        lengths: Sequence[int] | None = None,
    ) -> list[RewardBreakdown]:
        """Judge every completion (concurrently), then fill failures with their group's mean."""
        verdicts = self.judge([self._body(c, s) for c, s in zip(completions, samples, strict=True)])
        if verdicts and all(v.failed and v.error.startswith("connect") for v in verdicts):
            raise JudgeUnavailableError(
                f"reward.judge.url {self.cfg.url}: cannot connect ({verdicts[0].error})"
            )
        filled = _fill_by_group([v.score for v in verdicts], [id(s) for s in samples])
        return [
            RewardBreakdown(
                score,
                {
                    JUDGE: score,
                    "failed": float(v.failed),
                    "unparsed": float(v.unparsed),
                    "cached": float(v.cached),
                },
            )
            for score, v in zip(filled, verdicts, strict=True)
        ]

    def judge(self, bodies: list[dict[str, Any]]) -> list[Verdict]:
        """One :class:`Verdict` per request body, in order."""
        return run_sync(self._judge_all(bodies))

    def probe(self) -> None:
        """Raise :class:`JudgeUnavailableError` unless something answers HTTP at ``url`` (any status)."""
        import httpx

        url = self.cfg.url.rstrip("/") + "/models"
        try:
            httpx.get(url, timeout=min(self.cfg.timeout_s, 10.0), headers=self._headers())
        except httpx.HTTPError as e:
            raise JudgeUnavailableError(
                f"reward.judge.url {self.cfg.url}: cannot connect ({type(e).__name__}: {e}); "
                "start the judge server first (e.g. `vllm serve MODEL`)"
            ) from None

    # ------------------------------------------------------------------ requests
    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _body(self, completion: str | None, sample: Sample) -> dict[str, Any]:
        messages = [] if self.cfg.system is None else [{"role": "system", "content": self.cfg.system}]
        messages.append({"role": "user", "content": render(self.cfg.prompt, completion, sample)})
        return {
            "model": self.cfg.model,
            "messages": messages,
            "max_tokens": self.cfg.max_tokens,
            "temperature": self.cfg.temperature,
        }

    async def _judge_all(self, bodies: list[dict[str, Any]]) -> list[Verdict]:
        import httpx

        limit = asyncio.Semaphore(self.cfg.concurrency)
        limits = httpx.Limits(max_connections=self.cfg.concurrency)
        async with httpx.AsyncClient(
            timeout=self.cfg.timeout_s, limits=limits, headers=self._headers()
        ) as client:
            return list(await asyncio.gather(*(self._judge_one(client, limit, b) for b in bodies)))

    async def _judge_one(self, client: Any, limit: asyncio.Semaphore, body: dict[str, Any]) -> Verdict:
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if key in self.cache:
            self.cache.move_to_end(key)
            score = self.cache[key]
            return Verdict(score, unparsed=score is None, cached=True)
        async with limit:
            verdict = await self._attempts(client, body)
        if not verdict.failed and self.cfg.cache_size:  # only real answers are worth keeping
            self.cache[key] = verdict.score
            while len(self.cache) > self.cfg.cache_size:
                self.cache.popitem(last=False)
        return verdict

    async def _attempts(self, client: Any, body: dict[str, Any]) -> Verdict:
        import httpx

        error = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                await asyncio.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            try:
                # wait_for bounds the whole attempt, also a server that trickles its body slowly
                response = await asyncio.wait_for(client.post(self.endpoint, json=body), self.cfg.timeout_s)
            except (TimeoutError, httpx.TimeoutException):
                error = f"timeout after {self.cfg.timeout_s:g} s"
                continue
            except httpx.TransportError as e:
                error = f"connect: {type(e).__name__}: {e}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                error = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:  # a request the server refuses will not pass on retry
                return Verdict(None, failed=True, error=f"HTTP {response.status_code}: {response.text[:200]}")
            try:
                content = response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                error = "a body that is not a chat completion"
                continue
            score = parse_score(content, self.cfg.max_score)
            return Verdict(score, unparsed=score is None)
        return Verdict(None, failed=True, error=error)


def _fill_by_group(scores: list[float | None], groups: list[int]) -> list[float]:
    """Each None becomes the mean of its group's numbers (0 when the group has none).

    >>> _fill_by_group([1.0, None, 0.5, None], [0, 0, 0, 1])
    [1.0, 0.75, 0.5, 0.0]
    """
    sums: dict[int, list[float]] = {}
    for s, g in zip(scores, groups, strict=True):
        if s is not None:
            sums.setdefault(g, []).append(s)
    return [s if s is not None else (sum(sums[g]) / len(sums[g]) if g in sums else 0.0)
            for s, g in zip(scores, groups, strict=True)]  # fmt: skip
