"""The ``reward`` section of the config tree (its own file to keep ``schema.py`` short; re-exported there)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The image replacements of the blind gap (``vlmrl.eval.blind``) and of ``reward.counterfactual``.
BLIND_CONDITIONS: tuple[str, ...] = ("blank", "noise", "shuffled")
#: ``reward.counterfactual``: off, or the blind condition whose greedy answer is not paid.
COUNTERFACTUAL: tuple[str, ...] = ("none", *BLIND_CONDITIONS)


@dataclass
class JudgeConfig:
    """A model judge behind an OpenAI-compatible ``/chat/completions`` endpoint (``vlmrl.rewards.judge``);
    used when ``reward.weights`` has a ``judge`` key."""

    url: str | None = None
    """Base URL of the server, e.g. ``http://127.0.0.1:8000/v1`` (vLLM's ``vllm serve``); the judge
    posts to ``{url}/chat/completions``."""
    model: str = "judge"
    """The ``model`` field of each request (the served model's name)."""
    prompt: str = (
        "Question: {problem}\nReference answer: {answer}\nResponse: {completion}\n"
        "How correct is the response? Reply with one number from 0 to 10."
    )
    """The user message; ``{problem}``, ``{answer}``, ``{completion}`` and ``{COLUMN}`` (any dataset
    column) are replaced, other braces are left alone."""
    system: str | None = None
    """An optional system message."""
    max_score: float = 10.0
    """The last number of the judge's reply divided by this is the score; outside [0, max_score]
    the reply counts as unparsed."""
    max_tokens: int = 16
    """Completion tokens the judge may write."""
    temperature: float = 0.0
    """Judge sampling temperature (0: the same reply for the same request, so caching is sound)."""
    concurrency: int = 8
    """Requests in flight at once; a step's completions are judged together under this limit."""
    timeout_s: float = 30.0
    """Hard limit on one attempt (connect, send, wait, read); a slower reply is a failed attempt."""
    retries: int = 2
    """Further attempts after a failed one (timeouts, connection errors, HTTP 429 / 5xx, non-JSON)."""
    backoff_s: float = 0.5
    """Wait before retry k (k = 0, 1, …): ``backoff_s · 2^k``."""
    cache_size: int = 100_000
    """Judgements kept in memory, keyed by the request (0: no cache)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the server's API key (sent as a Bearer token);
    the key itself never goes in a config file."""


@dataclass
class RewardConfig:
    weights: dict[str, float] = field(default_factory=lambda: {"accuracy": 0.9, "format": 0.1})
    """Reward → weight (EasyR1's default: 0.9 accuracy + 0.1 format). A key is a registered name
    (``vlmrl.rewards``), ``judge`` (see ``reward.judge``), or ``path/file.py:fn`` / ``module:fn``: a
    function in our, TRL's or EasyR1's form (see the rewards guide)."""
    modules: list[str] = field(default_factory=list)
    """Python files / modules to import first; their ``@register_reward`` functions become usable by name."""
    function_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Keyword arguments per ``reward.weights`` key, passed at every call (EasyR1's
    ``reward_function_kwargs``, e.g. ``{"math.py:compute_score": {format_weight: 0.1}}``)."""
    trl_completions: str = "text"
    """What a TRL-form function gets as ``completions``: text (strings) | messages
    (``[{"role": "assistant", "content": …}]`` per completion, TRL's conversational format)."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """The model judge, used when ``weights`` has a ``judge`` key."""
    temporal_contrast: float = 0.0
    """Video-R1's T-GRPO bonus α (0: off): right answers to a video prompt earn α more when the group
    does at least ``temporal_mu`` times as well with the frames in order as shuffled
    (``vlmrl.eval.temporal``; costs a second generation over the video prompts)."""
    temporal_mu: float = 0.8
    """The T-GRPO ratio μ: the bonus is paid when p(ordered) ≥ μ · p(shuffled)."""
    counterfactual: str = "none"
    """none | blank | noise | shuffled: one greedy pass per step answers the prompts with the image
    replaced so; a right answer the model also gives that way earns no accuracy reward
    (``vlmrl.eval.counterfactual``). Pays only what the image is responsible for."""
