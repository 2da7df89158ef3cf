"""The vision diagnostics of one evaluation, composed per config: blind gap, POPE, drift.

``training_diagnostics`` is what ``GRPOTrainer.evaluate`` adds to its accuracy (switched by
``eval.blind``, ``eval.pope_size``, ``eval.drift``); ``eval_report`` is ``vlmrl eval``.
"""

from __future__ import annotations

from typing import Any

from vlmrl.data import Sample
from vlmrl.errors import UserError
from vlmrl.eval.accuracy import evaluate
from vlmrl.eval.blind import blind_gap, flatten_blind
from vlmrl.eval.blind_monitor import BlindGapMonitor
from vlmrl.eval.drift import DriftMonitor
from vlmrl.eval.errors import error_split
from vlmrl.eval.multiturn import evaluate_multiturn
from vlmrl.eval.pope import flatten_pope, pope_eval


def training_diagnostics(
    policy,
    samples: list[Sample],
    cfg,
    reward_fn,
    drift: DriftMonitor | None = None,
    real: dict[str, Any] | None = None,
    watch: BlindGapMonitor | None = None,
) -> dict[str, float]:
    """Logger-ready metrics: ``eval/blind/<cond>``, ``eval/blind_gap``, ``eval/pope/…``, ``vision/…``.

    ``real`` is the eval's ``evaluate(..., return_outputs=True)`` result, reused by the blind gap;
    ``watch`` adds the blind-gap monitor's ``eval/blind_gap_drop`` and ``eval/blind_gap_alert``.
    """
    out: dict[str, float] = {}
    if cfg.eval.blind and samples:
        out |= flatten_blind(_blind(policy, samples, cfg, reward_fn, real))
        out |= watch.observe(out) if watch is not None else {}
    if cfg.eval.pope_size > 0:
        out |= flatten_pope(_pope(policy, cfg, cfg.eval.pope_size), "eval/pope")
    if drift is not None:
        out |= drift.measure()
    return out


def _blind(policy, samples: list[Sample], cfg, reward_fn, real: dict[str, Any] | None) -> dict[str, Any]:
    """``blind_gap`` with the run's template, decoding budget and seed."""
    e = cfg.eval
    return blind_gap(
        policy,
        samples,
        cfg.data.template,
        reward_fn,
        e.max_new_tokens,
        e.batch_size,
        seed=cfg.data.seed,
        real=real,
    )


def _pope(policy, cfg, n: int) -> dict[str, dict[str, float]]:
    """``pope_eval`` with ``n`` probes per mode, the run's template, budget, seed and scene knobs."""
    e = cfg.eval
    return pope_eval(
        policy, n, cfg.data.seed, cfg.data.template, e.max_new_tokens, e.batch_size, **pope_scene(cfg)
    )


def pope_scene(cfg) -> dict[str, Any]:
    """When training on ``pope`` itself, probe scenes like the training ones (object counts), but
    always balanced yes/no over every mode: that is what makes the hallucination rate comparable."""
    if cfg.data.path is None and cfg.data.task == "pope":
        return {k: v for k, v in cfg.data.task_kwargs.items() if k in ("min_objects", "max_objects", "size")}
    return {}


def eval_report(
    policy, samples: list[Sample], cfg, reward_fn, blind: bool = False, pope: int = 0, errors: bool = False
) -> dict[str, Any]:
    """``vlmrl eval``: ``{"accuracy": evaluate(...), "blind": blind_gap(...)?, "pope": report?,
    "errors": error_split(...)?}`` (``errors``: the greedy answers split by :mod:`vlmrl.eval.errors`).

    With ``env.name`` set the accuracy is of greedy multi-turn episodes (tool calls and all) and
    so are the blind conditions; POPE's yes/no probes are single-turn, so they are refused there.
    """
    e = cfg.eval
    if cfg.env.name is not None:
        if pope > 0:
            raise UserError(
                "vlmrl eval: --pope runs single-turn yes/no probes;"
                f" it does not apply to env.name={cfg.env.name!r}"
            )

        def run(batch: list[Sample]) -> dict[str, Any]:
            return evaluate_multiturn(policy, batch, cfg, e.batch_size, return_outputs=True)

        real = run(samples)
        out = {"accuracy": {k: v for k, v in real.items() if k != "outputs"}}
        if blind:
            out["blind"] = blind_gap(
                policy, samples, cfg.data.template, reward_fn, seed=cfg.data.seed, real=real, run=run
            )
        return out
    real = evaluate(policy, samples, cfg.data.template, reward_fn, e.max_new_tokens, e.batch_size, True)
    out: dict[str, Any] = {"accuracy": {k: v for k, v in real.items() if k != "outputs"}}
    if blind:
        out["blind"] = _blind(policy, samples, cfg, reward_fn, real)
    if pope > 0:
        out["pope"] = _pope(policy, cfg, pope)
    if errors:
        out["errors"] = error_split([o["completion"] for o in real["outputs"]], samples)
    return out
