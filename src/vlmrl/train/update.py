"""The policy update of one GRPO step: K epochs × minibatches × micro-batches of the clipped loss.

Old log-probs: when the step is fully on-policy (one epoch, one minibatch) the ratio's
denominator is ``logp.detach()`` — exactly 1, whatever the numerics of the sampler. Otherwise
it is the sampler's log-probs, which equal the training forward's to ~1e-6 on CPU fp32 (tested;
every processor output is carried, see ``vlmrl.rollout.batch``). A stale asynchronous batch
(``batch.behaviour_logprobs`` set, :mod:`vlmrl.rollout.async_worker`) is trained with decoupled
PPO: each token's advantage times ``min(π_prox / μ, algo.tis_cap)`` (:mod:`vlmrl.algos.offpolicy`),
π_prox being the policy at this update's start (recomputed once when the update is off-policy).

Micro-batches are normalised by the token / sequence counts of the whole minibatch, so the
summed micro-batch gradients equal the full minibatch gradient (tested: 1×4 vs 4×1). Under
torch.distributed the counts are summed over ranks and so are the gradients, once per optimizer
step (:mod:`vlmrl.run.dist`): W processes make the update one process makes (tested, gloo).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlmrl.algos import LossSpec, agg_loss, entropy_from_logits, global_counts, kl_penalty, policy_loss
from vlmrl.algos.offpolicy import truncated_is_weights
from vlmrl.config.schema import AlgoConfig, LoopConfig
from vlmrl.rollout.batch import RolloutBatch
from vlmrl.rollout.shared_prompt import rollout_logprobs
from vlmrl.run.dist import SUM_KEYS, minibatch_rows, rank_share, reduce_counts, sync_grads
from vlmrl.run.fsdp import clip_sharded_grads, idle_backward, idle_micro_batches, is_sharded
from vlmrl.run.seeding import derived_generator
from vlmrl.vision.anchor import FeatureAnchor
from vlmrl.vision.papo import masked_batch, merge_size, papo_micro_batch

#: Mixed into the seed of the default minibatch-permutation generator (its own stream).
_MINIBATCH_STREAM = 0x3B17


@dataclass(frozen=True)
class UpdateSpec:
    """What the update needs besides the batch; built from the config by the trainer."""

    algo: AlgoConfig
    """The loss, KL, entropy and PAPO settings."""
    loop: LoopConfig
    """Epochs, minibatches, micro-batch, gradient clip, seed."""
    temperature: float
    """The sampling temperature: the training forward's log-probs are of ``logits / T``."""
    token_budget: int
    """The most completion tokens one rollout can hold: ``rollout.max_new_tokens``, or a whole
    multi-turn episode's ``env.max_total_tokens``. The ``C`` of token-sum loss normalisation."""

    @property
    def loss(self) -> LossSpec:
        """The policy loss as :func:`vlmrl.algos.policy_loss` takes it (read from ``algo`` each
        time, so it cannot drift from the config it came from)."""
        a = self.algo
        return LossSpec(a.loss, a.clip_low, a.clip_high, a.dual_clip_c, a.loss_agg, float(self.token_budget))


def _image_tokens(prompt_inputs: dict[str, torch.Tensor]) -> float:
    """Patches of the prompts' images (0 without images): the anchor loss averages over them."""
    grid = prompt_inputs.get("image_grid_thw")
    return float(grid.prod(-1).sum()) if grid is not None else 0.0


@torch.no_grad()
def reference_logprobs(ref_model, batch: RolloutBatch, micro_batch: int, temperature: float) -> torch.Tensor:
    """log π_ref of every completion token, ``[N, C]`` (micro-batched, no grad)."""
    out = []
    for start in range(0, batch.size, micro_batch):
        rows = list(range(start, min(start + micro_batch, batch.size)))
        lp, _ = rollout_logprobs(ref_model, batch, rows, temperature)  # each prompt once (shared_prompt.py)
        out.append(lp)
    return torch.cat(out).cpu() * (  # on the CPU, with the rest of the rollout batch
        batch.completion_lengths.unsqueeze(1) > torch.arange(batch.completion_ids.shape[1])
    )


def policy_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBatch,
    advantages: torch.Tensor,  # [N, C] token-level
    spec: UpdateSpec,
    ref_logp: torch.Tensor | None = None,  # [N, C]
    generator: torch.Generator | None = None,
    anchor: FeatureAnchor | None = None,
    step: int = 0,
) -> dict[str, float]:
    """Run the update in place; returns means of the loss metrics over optimizer steps.

    ``anchor`` (``vision.anchor_coef > 0``) adds ``coef × L_anchor`` once per optimizer step, over
    the whole rollout batch's images (see :mod:`vlmrl.vision.anchor`); logged as ``vision/anchor_loss``.
    ``algo.papo_coef > 0`` adds PAPO's perception term per micro-batch, with masks drawn from
    ``(train.seed, step)`` (see :mod:`vlmrl.vision.papo`); logged as ``actor/papo_*``.
    An optimizer step whose gradient norm (after the all-reduce: the same on every rank) is NaN or
    inf is skipped, its gradients dropped, and counted in ``guard/skipped_updates``.
    ``generator`` draws the minibatch permutations; by default one derived from
    ``(train.seed, step)``, so the global RNG is never read and a resumed step draws the same.
    """
    loop, algo, loss_spec = spec.loop, spec.algo, spec.loss
    if generator is None:
        generator = derived_generator(loop.seed, step, _MINIBATCH_STREAM)
    masked = None
    if algo.papo_coef > 0:  # one mask per prompt for the whole step (all epochs and micro-batches)
        masked = masked_batch(batch, algo.papo_mask_ratio, merge_size(model), loop.seed, step)
    on_policy = loop.epochs == 1 and loop.minibatches == 1
    behaviour = batch.behaviour_logprobs  # [N, C] stale async rollouts' log μ, else None
    old_logp = batch.sampler_logprobs  # [N, C] off-policy epochs clip around this
    if behaviour is not None and not on_policy:  # decoupled PPO: around π_prox, this update's start
        old_logp = reference_logprobs(model, batch, loop.micro_batch, spec.temperature)
    mask = batch.completion_mask  # [N, C]
    params = [p for p in model.parameters() if p.requires_grad]
    dev = params[0].device if params else torch.device("cpu")  # the loss is computed where the model is
    sharded = is_sharded(model)  # train.strategy: fsdp (run/fsdp.py)
    sums: dict[str, float] = {}
    n_opt = n_skip = 0
    model.train()
    for _ in range(loop.epochs):
        # this rank's rows of each minibatch (one process: randperm / arange chunks; see run/dist.py)
        for mb in minibatch_rows(batch.size, loop.minibatches, generator):
            tokens, seqs = reduce_counts(*global_counts(mask[mb]))  # over all ranks
            if tokens.item() == 0:
                continue
            optimizer.zero_grad(set_to_none=True)
            # a group's rows side by side, so a micro-batch shares its prompts' forward (the sum is the same)
            mb = mb[torch.argsort(batch.prompt_index[mb], stable=True)]
            micros = mb.split(loop.micro_batch)
            n_idle = idle_micro_batches(model, len(micros))  # fsdp: as many forwards as the busiest rank
            for micro in micros:
                rows = micro.tolist()
                logp, logits = rollout_logprobs(model, batch, rows, spec.temperature)  # shared_prompt.py
                m = mask[rows].to(dev)
                old = logp.detach() if on_policy else old_logp[rows].to(dev)
                adv = advantages[rows].to(dev)
                is_metrics: dict[str, float] = {}
                if behaviour is not None:  # w = min(π_prox / μ, C) on each token's advantage
                    w, is_metrics = truncated_is_weights(old, behaviour[rows].to(dev), m, algo.tis_cap)
                    adv = adv * w
                pg, pg_metrics = policy_loss(
                    loss_spec, logp, old, adv, m, global_tokens=tokens, global_seqs=seqs
                )
                loss = pg
                metrics = {f"actor/{k}": v for k, v in pg_metrics.items()}
                metrics |= {f"offpolicy/{k}": v for k, v in is_metrics.items()}
                metrics["actor/pg_loss"] = pg.item()
                if ref_logp is not None and algo.kl_coef > 0 and algo.kl_placement == "loss":
                    kl = agg_loss(
                        kl_penalty(logp, ref_logp[rows].to(dev), algo.kl_estimator),
                        m,
                        loss_spec.agg,
                        loss_spec.norm_const,
                        global_tokens=tokens,
                        global_seqs=seqs,
                    )
                    loss = loss + algo.kl_coef * kl
                    metrics["actor/kl_loss"] = kl.item()
                ent_tok = entropy_from_logits(logits)  # [n, C]
                ent = agg_loss(ent_tok, m, "token_mean", global_tokens=tokens)
                if algo.entropy_coef:
                    loss = loss - algo.entropy_coef * ent
                metrics["actor/entropy"] = ent.item()
                if masked is not None:
                    papo, papo_metrics = papo_micro_batch(
                        model, masked, rows, logp, ent_tok, m, spec, tokens, seqs
                    )
                    loss = loss + papo
                    metrics |= papo_metrics
                loss.backward()
                for k, v in metrics.items():
                    # pg_loss / kl / entropy are already fractions of the minibatch total: add them up.
                    share = 1.0 if k in SUM_KEYS else len(rows) / len(mb)
                    sums[k] = sums.get(k, 0.0) + v * share
            for _ in range(n_idle):  # fsdp: every forward is a collective, so every rank joins each
                idle_backward(model, batch, spec.temperature)
            if anchor is not None:
                a_loss = anchor.loss(model, batch.prompt_inputs)
                # a mean over this rank's image tokens; weight it to a mean over every rank's
                a_share = rank_share(_image_tokens(batch.prompt_inputs))
                if a_loss is not None:
                    if a_loss.requires_grad:  # a frozen tower has nothing to anchor
                        (anchor.coef * a_share * a_loss).backward()
                    # this rank's share of the global mean (SUM_KEYS): exact whatever each rank's images
                    sums["vision/anchor_loss"] = sums.get("vision/anchor_loss", 0.0) + a_share * a_loss.item()
            sync_grads([] if sharded else params)  # sum over ranks (fsdp: reduce-scattered in the backward)
            if sharded:
                gnorm = clip_sharded_grads(params, loop.grad_clip)
            elif loop.grad_clip > 0:
                gnorm = torch.nn.utils.clip_grad_norm_(params, loop.grad_clip)
            else:
                gnorm = torch.linalg.vector_norm(
                    torch.stack([p.grad.norm() for p in params if p.grad is not None])
                )
            if not torch.isfinite(gnorm):  # a NaN / inf loss or gradient: skip this step (run/finite.py)
                optimizer.zero_grad(set_to_none=True)
                n_skip += 1
                continue
            sums["actor/grad_norm"] = sums.get("actor/grad_norm", 0.0) + float(gnorm)
            optimizer.step()
            n_opt += 1
    optimizer.zero_grad(set_to_none=True)
    means = {k: v / max(n_opt, 1) for k, v in sums.items()}
    return means | {"actor/optimizer_steps": n_opt, "guard/skipped_updates": n_skip}
