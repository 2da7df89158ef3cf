"""RL math as pure tensor functions: advantages, policy losses, loss aggregation, KL, entropy, PAPO.

Imports only torch. Each family is a small registry keyed by a ``str`` enum, so a config string
picks the variant (``compute_advantages("grpo", ...)``, ``compute_policy_loss("gspo", ...)`` or
``policy_loss(LossSpec("gspo", 3e-4, 4e-4), ...)``,
``agg_loss(..., "seq_mean_token_sum_norm")``, ``kl_penalty(..., "k3")``).
"""

from vlmrl.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageEstimator,
    broadcast_advantages,
    compute_advantages,
    drgrpo_advantages,
    group_stats,
    grpo_advantages,
    grpo_passk_advantages,
    reinforce_pp_advantages,
    reinforce_pp_baseline_advantages,
    rloo_advantages,
    segment_advantages,
)
from vlmrl.algos.aggregate import AGGREGATORS, LossAgg, agg_loss, global_counts, masked_mean
from vlmrl.algos.entropy import entropy_from_logits, entropy_from_logits_chunked
from vlmrl.algos.gated_losses import cispo_loss, sapo_loss
from vlmrl.algos.kl import KL_ESTIMATORS, KLEstimator, kl_in_reward, kl_k1, kl_k2, kl_k3, kl_penalty
from vlmrl.algos.lagrangian import CostMode, CostSpec, lagrange_update, shaped_rewards
from vlmrl.algos.logprobs import token_logprobs
from vlmrl.algos.losses import (
    CLIP_RANGES,
    POLICY_LOSSES,
    ClipRange,
    LossSpec,
    PolicyLoss,
    compute_policy_loss,
    dual_clip_loss,
    gspo_loss,
    policy_loss,
    ppo_clip_loss,
)
from vlmrl.algos.perception import papo_loss, perception_kl

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATORS",
    "CLIP_RANGES",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "AdvantageEstimator",
    "ClipRange",
    "CostMode",
    "CostSpec",
    "KLEstimator",
    "LossAgg",
    "LossSpec",
    "PolicyLoss",
    "agg_loss",
    "broadcast_advantages",
    "cispo_loss",
    "compute_advantages",
    "compute_policy_loss",
    "drgrpo_advantages",
    "dual_clip_loss",
    "entropy_from_logits",
    "entropy_from_logits_chunked",
    "global_counts",
    "group_stats",
    "grpo_advantages",
    "grpo_passk_advantages",
    "gspo_loss",
    "kl_in_reward",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_penalty",
    "lagrange_update",
    "masked_mean",
    "papo_loss",
    "perception_kl",
    "policy_loss",
    "ppo_clip_loss",
    "reinforce_pp_advantages",
    "reinforce_pp_baseline_advantages",
    "rloo_advantages",
    "sapo_loss",
    "segment_advantages",
    "shaped_rewards",
    "token_logprobs",
]
