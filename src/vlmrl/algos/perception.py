"""PAPO's implicit perception loss and its double-entropy guard, as a pure function.

Perception-Aware Policy Optimization (Wang et al. 2025, arXiv:2507.06448) adds to the GRPO
objective a KL between the policy that sees the real image ``I`` and the same policy that sees a
patch-masked copy ``I_mask``, on the sampled completion tokens, and *maximises* it: a model whose
answer does not change when 60% of the image is gone is not looking.

    KL_prcp_t = k(logp_t, masked_logp_t)      logp_t = log π_θ(o_t | q, I, o_<t)
                                              masked_logp_t = log π_θ(o_t | q, I_mask, o_<t)

with ``k`` one of the KL estimators of :mod:`vlmrl.algos.kl` (``kl_penalty(logp, masked_logp,
k)``; PAPO uses ``k3`` = ``low_var_kl``, an estimate of KL(π_θ(·|I) || π_θ(·|I_mask)) from tokens
sampled under the real image). Maximising it alone is easy to "hack": the model raises the KL
by making its outputs diffuse, worst of all under the masked image (the paper's KL_prcp hacking).
The *Double Entropy Loss* penalises the entropy of both policies. The loss that is minimised is

    L = − γ · agg(KL_prcp) + η · (H̄(π_θ(·|I)) + H̄(π_θ(·|I_mask)))

``agg`` is the run's loss aggregation (:func:`vlmrl.algos.aggregate.agg_loss`), ``H̄`` the token
mean of the exact per-token entropies (:func:`vlmrl.algos.entropy.entropy_from_logits`).

Departures from the paper's code (EasyR1-based), and why:
- the masked log-probs are treated as a constant target *inside the KL* (as there, where they are
  computed once without grad), but they come from a forward inside each micro-batch, so the
  masked entropy term does get its gradient (there it is a constant: the guard is only nominal);
- entropies are exact (from the logits), not the sampled-token estimate ``−mean(logp)``.
"""

from __future__ import annotations

from torch import Tensor

from vlmrl.algos.aggregate import Count, agg_loss
from vlmrl.algos.kl import kl_penalty


def perception_kl(logp: Tensor, masked_logp: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token KL_prcp ``[N, L]``: ``kl_penalty(logp, masked_logp.detach(), estimator)``.

    The gradient flows only through ``logp`` (the real-image policy); exactly 0 where the two
    log-probs are equal (for every estimator).
    """
    return kl_penalty(logp, masked_logp.detach(), estimator)  # [N, L]


def papo_loss(
    logp: Tensor,  # [N, L] real image, with grad
    masked_logp: Tensor,  # [N, L] masked image
    entropy: Tensor,  # [N, L] per-token entropy, real image
    masked_entropy: Tensor,  # [N, L] per-token entropy, masked image
    mask: Tensor,  # [N, L]
    coef: float,
    entropy_coef: float,
    *,
    estimator: str = "k3",
    agg: str = "token_mean",
    norm_const: float | None = None,
    global_tokens: Count | None = None,
    global_seqs: Count | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """``L = − coef · agg(KL_prcp) + entropy_coef · (H̄_real + H̄_masked)`` (see the module docstring).

    ``global_tokens`` / ``global_seqs`` are the optimizer-step batch's counts, so the sum of the
    micro-batch losses is the minibatch loss (as for the policy loss). Metrics (python floats,
    already fractions of that minibatch: sum them over micro-batches): ``papo_kl`` (the aggregated
    KL), ``papo_entropy_masked`` (token-mean entropy under the masked image).
    """
    kl = agg_loss(
        perception_kl(logp, masked_logp, estimator),
        mask,
        agg,
        norm_const,
        global_tokens=global_tokens,
        global_seqs=global_seqs,
    )  # []
    h_real = agg_loss(entropy, mask, "token_mean", global_tokens=global_tokens)  # []
    h_masked = agg_loss(masked_entropy, mask, "token_mean", global_tokens=global_tokens)  # []
    loss = -coef * kl + entropy_coef * (h_real + h_masked)  # []
    return loss, {"papo_kl": kl.item(), "papo_entropy_masked": h_masked.item()}
