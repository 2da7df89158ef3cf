"""Token advantages ``[N, C]`` for one GRPO step: one scalar per response, or per segment.

``algo.credit`` picks how the step's rewards become token advantages:

* ``scalar`` (default, GRPO as published): ``A[i, t] = adv(r)[i]`` on every completion token,
  with ``adv`` the configured estimator (``algo.advantage``) of the total reward ``r``.
* ``segment`` (perception-vs-reasoning credit): was the error in seeing or in reasoning? The
  ``<look>`` span's tokens (tags included, :mod:`vlmrl.vision.spans`) get the advantage of the
  perception reward ``p`` = the ``perception`` part (its F1); every other completion token gets
  the advantage of the outcome reward ``o = r − w_p · p``, the total minus its weighted
  perception part (so accuracy, format, overlong penalty, KL-in-reward all stay in ``o``):

      A[i, t] = adv(p)[i] · look[i, t] + adv(o)[i] · (mask[i, t] − look[i, t])

  Both are normalised within the group by the same estimator (``segment_advantages``). When
  every response of a group has the same ``p``, its look tokens get 0: no perception signal, no
  push. A response with *no* look span (p = 0) has no tokens to carry ``adv(p)``; dropping it
  would make skipping the span free of perception blame, so such a response's tokens get
  ``adv(o)[i] + adv(p)[i]`` (the two segments overlap on it): not looking is charged to the whole
  response.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from vlmrl.algos import broadcast_advantages, compute_advantages, segment_advantages
from vlmrl.config.schema import CREDITS
from vlmrl.errors import UserError
from vlmrl.rollout.batch import RolloutBatch
from vlmrl.vision.spans import look_span_mask

#: The reward (name in ``reward.weights``, part of the composed breakdown) the look span is scored by.
PERCEPTION = "perception"


def check_credit(credit: str, weights: Mapping[str, float]) -> None:
    """Fail at start-up, naming the keys, when ``credit`` cannot work with ``reward.weights``."""
    if credit not in CREDITS:
        raise UserError(f"algo.credit: unknown value {credit!r}; allowed: {list(CREDITS)}")
    if credit == "segment" and PERCEPTION not in weights:
        raise UserError(
            f"algo.credit=segment needs a {PERCEPTION!r} entry in reward.weights (the look span's reward), "
            f"got {sorted(weights)}"
        )


def token_advantages(
    credit: str,
    estimator: str,
    rewards: torch.Tensor,  # [N] total reward per response (after any penalties)
    parts: Mapping[str, torch.Tensor],  # name -> [N] unweighted reward parts
    weights: Mapping[str, float],
    batch: RolloutBatch,
    tokenizer,
    texts: Sequence[str] | None = None,
    advantages_fn: Callable[..., torch.Tensor] = compute_advantages,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token advantages ``[N, C]`` and a few metrics (``credit/…``); see the module docstring.

    ``advantages_fn`` has :func:`vlmrl.algos.compute_advantages`' signature; the trainer passes
    :func:`vlmrl.run.dist.global_advantages` so batch-wide statistics span every rank.
    """
    mask = batch.completion_mask  # [N, C]
    if credit == "scalar":
        adv = advantages_fn(estimator, rewards, batch.prompt_index)  # [N]
        return broadcast_advantages(adv, mask), {}
    check_credit(credit, weights)
    perception = parts[PERCEPTION].to(rewards.dtype)  # [N]
    outcome = rewards - float(weights[PERCEPTION]) * perception  # [N]
    adv_p = advantages_fn(estimator, perception, batch.prompt_index)  # [N]
    adv_o = advantages_fn(estimator, outcome, batch.prompt_index)  # [N]
    look = look_span_mask(batch.completion_ids, batch.completion_lengths, tokenizer, texts) * mask  # [N, C]
    no_look = (look.sum(1, keepdim=True) == 0).to(mask.dtype) * mask  # [N, C] rows without a span
    adv_tok = segment_advantages(  # [N, C]
        {"perception": adv_p, "outcome": adv_o}, {"perception": look + no_look, "outcome": mask - look}
    )
    n_tok = float(mask.sum().clamp(min=1))
    metrics = {
        "credit/look_token_frac": float(look.sum()) / n_tok,
        "credit/with_look_frac": float((look.sum(1) > 0).float().mean()),
        "credit/adv_perception_abs": float(adv_p.abs().mean()),
        "credit/adv_outcome_abs": float(adv_o.abs().mean()),
    }
    return adv_tok, metrics
