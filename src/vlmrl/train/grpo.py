"""GRPOTrainer: the loop of docs/design.md for vision-language models.

The variant implemented by default (``algo`` defaults), and how it departs from the paper
(Shao et al. 2024, DeepSeekMath):
- advantages are group-normalised outcome rewards ``(r − mean_g) / (std_g + ε)`` (unbiased std),
  broadcast to every completion token; ``algo.advantage`` swaps in Dr.GRPO, RLOO, REINFORCE++;
- the loss is PPO-clip with separate ``clip_low`` / ``clip_high`` (DAPO clip-higher), aggregated
  by ``algo.loss_agg`` (default: mean over tokens of each sequence, then over sequences, as the
  paper writes it);
- the KL to the frozen reference is in the loss with the k3 estimator, as the paper, but the
  default β is 0 (as DAPO / Dr.GRPO): then no reference model is loaded at all;
- one update per rollout batch by default (fully on-policy: the ratio is exactly 1 and the clip
  is inactive); ``train.epochs`` / ``train.minibatches`` make it off-policy like PPO;
- vision special tokens are banned in sampling and completions are validated (docs/facts.md);
- options for perception (off by default): ``algo.credit: segment`` gives the ``<look>`` span's
  tokens the perception reward's advantage and the rest the outcome's (``vision/credit.py``);
  ``algo.sr1_check`` re-asks text-only from the model's own description (``vision/sr1.py``);
  ``vision.anchor_coef`` anchors the tower's features to the start of training (``vision/anchor.py``).

Many processes (``torchrun --nproc_per_node=W -m vlmrl train CFG``, ``accelerate launch``; see
``run/dist.py``): data parallel, the model replicated on every rank, and the update equal to
the one-process update on the same global batch (tested on CPU/gloo: 1e-6):
- ``train.batch_prompts`` B is global: rank r takes prompts ``[p + r·B/W, p + (r+1)·B/W)`` of the
  prompt stream, so each group stays on one rank and a step sees the same prompts for any W
  (W must divide B); the stream position in ``state.json`` is global;
- the loss normalisers (valid tokens / sequences of each minibatch) are summed over ranks and
  so are the gradients, once per optimizer step (a flat-bucket all-reduce, not DDP: ranks may
  hold unequal rows, see ``run/dist.py``); minibatch partitions are drawn by rank 0 over the
  global batch; the anchor loss is weighted by each rank's share of image tokens;
- advantages are computed on every rank's rewards gathered in global order, so REINFORCE++'s
  batch whitening uses global statistics (the group estimators are unchanged); DAPO dynamic
  sampling keeps the first groups with spread in global order, as one process would;
- each rank samples from its own generator (``run/seeding.py``), saved in every checkpoint: a
  resume at the same W is exact; at another W the ranks that were there continue their streams;
- metrics are reduced (loss shares summed, times maxed, other means weighted by rollouts);
  rank 0 alone evaluates (others wait at a barrier) and writes metrics.jsonl, tensorboard,
  rollouts (its shard), checkpoints and the report; checkpoints load at any W.
``train.strategy: fsdp`` shards parameters, gradients, optimizer state and the reference over the
ranks instead (FSDP2; sampling and evaluation in lockstep on every rank; see ``run/fsdp.py``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmrl.algos import kl_penalty
from vlmrl.config import ConfigError, TrainConfig, config_to_dict, save_config
from vlmrl.config.checks import check_run_dir
from vlmrl.data import Sample
from vlmrl.data.stream import PromptStream, eval_samples
from vlmrl.eval.accuracy import evaluate
from vlmrl.eval.blind_monitor import BlindGapMonitor
from vlmrl.eval.diagnostics import training_diagnostics
from vlmrl.eval.drift import build_drift_monitor
from vlmrl.eval.multiturn import evaluate_multiturn
from vlmrl.eval.report import write_report
from vlmrl.eval.temporal import shape_round
from vlmrl.models import load_policy
from vlmrl.models.lora import has_lora
from vlmrl.models.vision import apply_vision_policy
from vlmrl.rewards.plugins import reward_from_config
from vlmrl.rewards.sr1 import SR1
from vlmrl.rollout.async_worker import rollout_engine
from vlmrl.rollout.batch import RolloutBatch, encode_samples
from vlmrl.rollout.env_round import CostControl, env_rollout_round
from vlmrl.rollout.noisy import noisy_reward_metrics, noisy_rollouts
from vlmrl.rollout.rollout_log import write_rollouts
from vlmrl.rollout.rollouts import Rollouts
from vlmrl.rollout.seats import labelled_stage
from vlmrl.run.checkpoint import load_trainable, prune_checkpoints
from vlmrl.run.dist import (
    barrier,
    broadcast_params,
    first_across_ranks,
    gather_generator_states,
    global_advantages,
    init_distributed,
    reduce_metrics,
)
from vlmrl.run.finite import FiniteGuard
from vlmrl.run.fsdp import checkpoint_writer, load_run_checkpoint, shard_for_strategy
from vlmrl.run.metrics import MetricsLogger, NullLogger
from vlmrl.run.optim import build_optimizer, lr_factor, set_lr
from vlmrl.run.seeding import checkpoint_rng, sampling_generator, seed_everything
from vlmrl.run.verify import resume_checkpoint
from vlmrl.train.memory import apply_memory_options, needs_reference_copy, reference_logprobs_of
from vlmrl.train.update import UpdateSpec, policy_update
from vlmrl.vision.anchor import build_anchor
from vlmrl.vision.credit import check_credit, token_advantages
from vlmrl.vision.sr1 import apply_sr1

log = logging.getLogger(__name__)


class GRPOTrainer:
    """Owns policy, reference, engine, optimizer, data stream and run directory.

    ``resume=True`` continues from ``run_dir/checkpoints/step_*`` (latest): weights, optimizer,
    RNG and data position, so the following steps equal an uninterrupted run.
    """

    def __init__(self, cfg: TrainConfig, resume: bool = False):
        self.cfg = cfg
        self.run_dir = check_run_dir(cfg.log.run_dir, cfg.model.path)  # a file, read-only, full disk
        self.dist, device = init_distributed(cfg.model.device)  # torchrun / accelerate: one rank each
        if cfg.train.batch_prompts % self.dist.world:
            raise ConfigError(
                f"train.batch_prompts: {cfg.train.batch_prompts} prompts cannot be split evenly over "
                f"{self.dist.world} processes; use a multiple of {self.dist.world}"
            )
        seed_everything(cfg.train.seed)
        ckpt = resume_checkpoint(self.run_dir) if resume else None  # the newest that verifies (run/verify.py)
        m = cfg.model
        # a LoRA checkpoint's model/ is merged: resume from the base plus its unmerged trainable.safetensors
        lora_ckpt = ckpt is not None and (ckpt / "trainable.safetensors").exists()
        self.policy = load_policy(
            ckpt / "model" if ckpt and not lora_ckpt else m.path,
            m.dtype,
            device,
            m.attn_implementation,
            min_pixels=m.min_pixels,
            max_pixels=m.max_pixels,
        )
        apply_vision_policy(self.policy.model, cfg.vision.train)
        apply_memory_options(self.policy.model, cfg)  # model.lora, train.gradient_checkpointing
        if lora_ckpt:
            load_trainable(ckpt, self.policy.model)
        broadcast_params(self.policy.model)  # replicas start identical (no-op in one process)
        self.ref = None  # with only LoRA adapters training, the reference is the policy, adapters off
        if needs_reference_copy(self.policy.model, cfg.algo.kl_coef):
            self.ref = load_policy(m.path, m.dtype, device, m.attn_implementation).model.eval()
            self.ref.requires_grad_(False)
        self.reward_fn = reward_from_config(cfg.reward)
        check_credit(cfg.algo.credit, cfg.reward.weights)
        if SR1 in cfg.reward.weights and not cfg.algo.sr1_check:
            raise ConfigError(
                f"reward.weights has {SR1!r} but algo.sr1_check is false: that reward would stay 0"
            )
        self.anchor = build_anchor(cfg, self.policy.model, self.ref, ckpt is not None)  # before any update
        self.sharded = shard_for_strategy(cfg.train, self.policy.model, self.ref)  # fsdp (run/fsdp.py)
        self.optimizer = build_optimizer(
            self.policy.model, cfg.train.lr, cfg.train.weight_decay, cfg.vision.lr_scale
        )
        # env runs: a completion is a whole episode, so token-sum normalisers use its token budget
        token_budget = cfg.env.max_total_tokens if cfg.env.name else cfg.rollout.max_new_tokens
        self.spec = UpdateSpec(cfg.algo, cfg.train, cfg.rollout.temperature, token_budget)
        self.step = 0
        self.report_path: Path | None = None
        self.guard = FiniteGuard(self.policy.model, self.run_dir, cfg.train.nonfinite_patience)
        self.safety = CostControl.from_config(cfg.env, ckpt)  # env.cost_mode: R − λ·C, λ fixed or learned
        position = 0
        if ckpt is not None:
            state = load_run_checkpoint(ckpt, self.policy.model, self.optimizer)  # fsdp: + dcp/ shards
            self.step, position = state["step"], state["data_position"]
        self.sample_rng = sampling_generator(  # this rank's saved stream, else one from (seed, rank, step)
            cfg.train.seed, self.dist.rank, self.step, self.policy.model.device, checkpoint_rng(ckpt)
        )
        # rollout.engine: hf | vllm; rollout.mode: async samples in a worker process (rollout/async_worker.py)
        self.engine = rollout_engine(self.policy, cfg, self.sample_rng, self.step, position)
        self.stream = PromptStream(cfg.data, position)
        self.eval_set = eval_samples(cfg.data)
        # before any update; a resumed run measures against cfg.model.path (the KL reference is that model)
        self.drift, self.blind_watch = None, BlindGapMonitor(cfg.eval.blind_gap_drop)  # eval/blind_monitor.py
        self.logger: MetricsLogger | NullLogger = NullLogger()
        if self.dist.is_main:  # rank 0 evaluates and writes the run directory
            self.drift = build_drift_monitor(self.policy, self.eval_set, cfg, ckpt is not None, self.ref)
            save_config(cfg, self.run_dir / "config.yaml")
            self.logger = MetricsLogger.from_spec(self.run_dir, cfg.log, config_to_dict(cfg))
        if ckpt is not None:
            self.logger.truncate_after(self.step)

    # ------------------------------------------------------------------ one step
    def _score(self, samples: list[Sample], batch: RolloutBatch) -> Rollouts:
        ro = Rollouts.scored(samples, batch, self.reward_fn)  # + reward.counterfactual, temporal_contrast
        return shape_round(ro, self.engine, self.policy.processor, self.cfg.data.template, self.cfg.reward)

    def _rollout_round(self, k: int) -> Rollouts:
        """Sample ``k`` prompts × G completions and score them."""
        cfg = self.cfg
        samples = self.stream.next_shard(k, self.dist.rank, self.dist.world)  # this rank's k / W
        if cfg.env.name is not None and not labelled_stage(cfg.env.kwargs, self.step):  # episodes/games
            samples, batch, trajectories, rewards, metrics, parts = env_rollout_round(
                self.engine, self.policy.processor, cfg, samples
            )
            return Rollouts(samples, batch, rewards, parts, metrics, trajectories)
        enc = encode_samples(self.policy.processor, samples, cfg.data.template)
        is_noisy = None
        if cfg.rollout.noisy_frac > 0:  # NoisyRollout: part of each group from a noised image
            batch, is_noisy, noise_metrics = noisy_rollouts(
                self.engine, self.policy, enc, samples, cfg, self.step
            )
        else:
            batch = self.engine.generate(enc, cfg.rollout.n)
        ro = self._score(samples, batch)
        if cfg.algo.sr1_check:  # one greedy text-only pass: answer from the model's own <look> text
            ro.rewards, ro.parts, sr1_metrics = apply_sr1(
                self.engine,
                self.policy.processor,
                cfg.data.template,
                samples,
                batch,
                ro.rewards,
                ro.parts,
                float(cfg.reward.weights.get(SR1, 0.0)),
                cfg.eval.batch_size,
            )
            ro.metrics |= sr1_metrics
        if cfg.algo.overlong_penalty:
            truncated = torch.tensor([r == "length" for r in batch.finish_reasons])
            ro.rewards = ro.rewards - cfg.algo.overlong_penalty * truncated.float()
        if is_noisy is not None:
            ro.metrics |= noise_metrics | noisy_reward_metrics(ro.rewards, is_noisy)
        return ro

    def _collect(self) -> Rollouts:
        """One step's rollouts; with DAPO dynamic sampling, only groups whose rewards differ,
        refilled with fresh prompts for up to ``algo.dynamic_sampling_max_rounds`` rounds."""
        cfg = self.cfg
        b = cfg.train.batch_prompts
        ro = self._rollout_round(b)
        if not cfg.algo.dynamic_sampling:
            return ro
        metrics = ro.metrics  # the first round's reward means
        kept: list[Rollouts] = []
        n_kept, n_seen, rounds = 0, 0, 0
        while True:
            rounds += 1
            n_seen += b
            spread = [g for g in range(len(ro.samples)) if float(ro.rewards[ro.rows_of([g])].std()) > 0]
            # the first b − n_kept in global prompt order, as one process would keep them
            spread, n_new = first_across_ranks(spread, b - n_kept)
            if spread:
                kept.append(ro.select(spread))
            n_kept += n_new
            if n_kept >= b or rounds >= cfg.algo.dynamic_sampling_max_rounds:
                break
            ro = self._rollout_round(b)
        metrics["rollout/kept_groups"] = n_kept / max(n_seen, 1)
        metrics["rollout/generation_rounds"] = float(rounds)
        if not kept:  # nothing to learn from this step: an update over zero tokens is skipped
            ro.batch.completion_mask = torch.zeros_like(ro.batch.completion_mask)
            ro.metrics = metrics
            return ro
        merged = Rollouts.concat(kept, self.policy.tokenizer.pad_token_id)
        merged.metrics = metrics
        return merged

    def train_step(self) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        with self.guard.sampling(self.step):  # NaN / inf probabilities: one line, not a traceback
            ro = self._collect()
        batch, rewards, metrics = ro.batch, self.safety.apply(ro), ro.metrics  # safety cost: R − λ·C
        metrics |= self.engine.pop_metrics()  # vLLM: its log-probs vs the policy's (vllm_engine.py)
        t_gen = time.perf_counter() - t0
        truncated = torch.tensor([r == "length" for r in batch.finish_reasons])
        ref_logp = kl_tok = None
        if cfg.algo.kl_coef > 0:
            ref_logp = reference_logprobs_of(
                self.ref, self.policy.model, batch, cfg.train.micro_batch, cfg.rollout.temperature
            )
            # the sampled tokens' KL to the reference, once per step: the reward penalty and the metric
            kl_tok = kl_penalty(batch.sampler_logprobs, ref_logp, cfg.algo.kl_estimator)
            kl_tok = kl_tok * batch.completion_mask  # [N, C]
            if cfg.algo.kl_placement == "reward":
                ro.rewards = rewards = rewards - cfg.algo.kl_coef * kl_tok.sum(1)
        adv_tok, credit_metrics = token_advantages(  # [N, C]; algo.credit: scalar or per <look> segment
            cfg.algo.credit,
            cfg.algo.advantage,
            rewards,
            ro.parts,
            cfg.reward.weights,
            batch,
            self.policy.tokenizer,
            batch.texts,
            advantages_fn=global_advantages,  # batch-wide statistics over every rank
        )
        metrics |= credit_metrics
        set_lr(
            self.optimizer, lr_factor(self.step, cfg.train.steps, cfg.train.warmup_steps, cfg.train.schedule)
        )
        t1 = time.perf_counter()
        metrics |= self.guard.update(self.step, rewards, adv_tok, lambda: policy_update(  # skipped on NaN
            self.policy.model, self.optimizer, batch, adv_tok, self.spec, ref_logp, anchor=self.anchor,
            step=self.step,
        ))  # fmt: skip
        self.engine.mark_stale()  # a vLLM engine re-syncs its weights before the next generation
        self.step += 1
        lengths = batch.completion_lengths.float()
        metrics |= {
            "reward/total": float(rewards.mean()),
            "reward/std_in_group": ro.group_std(),
            "rollout/response_length": float(lengths.mean()),
            "rollout/truncated_frac": float(truncated.float().mean()),
            "rollout/invalid_frac": float(
                np.mean([r == "invalid_vision_token" for r in batch.finish_reasons])
            ),
            "time/generate_s": t_gen,
            "time/update_s": time.perf_counter() - t1,
            "time/step_s": time.perf_counter() - t0,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if kl_tok is not None:
            metrics["actor/kl_ref"] = float(kl_tok.sum() / batch.completion_mask.sum().clamp(min=1))
        metrics = reduce_metrics(metrics, batch.size)  # one dict for the run, the same on every rank
        if self.dist.is_main:  # rank 0's shard: the first prompts' whole groups, advantages included
            rows = write_rollouts(self.run_dir, self.step, ro, rewards, adv_tok, cfg.log.groups_per_step)
            self.logger.log_completions(self.step, rows, self.run_dir / "rollouts")  # tb / wandb tables
        return metrics

    # ------------------------------------------------------------------ loop
    def evaluate(self) -> dict[str, float]:
        """Held-out metrics, computed by rank 0 while the other ranks wait (they get ``{}``)."""
        if not (self.dist.is_main or self.sharded):  # fsdp: every forward needs every rank
            barrier()
            return {}
        try:
            return self._evaluate()
        finally:
            barrier()

    def _evaluate(self) -> dict[str, float]:
        if not self.eval_set:
            return {}
        if self.cfg.env.name is not None:  # greedy multi-turn episodes; env/* metrics beside accuracy
            res = evaluate_multiturn(self.policy, self.eval_set, self.cfg, self.cfg.eval.batch_size)
            return {f"eval/{k}": v for k, v in res.items() if isinstance(v, (int, float))}
        res = evaluate(
            self.policy,
            self.eval_set,
            self.cfg.data.template,
            self.reward_fn,
            self.cfg.eval.max_new_tokens,
            self.cfg.eval.batch_size,
            return_outputs=True,
        )
        metrics = {f"eval/{k}": v for k, v in res.items() if isinstance(v, (int, float))}
        return metrics | training_diagnostics(
            self.policy, self.eval_set, self.cfg, self.reward_fn, self.drift, real=res, watch=self.blind_watch
        )

    def save(self) -> Path:
        """Rank 0 writes the checkpoint (replicas are identical), with every rank's sampling generator."""
        state = {"step": self.step, "data_position": self.stream.position, "world_size": self.dist.world}
        state |= self.safety.state()  # the cost multiplier λ (rollout/safety.py)
        if has_lora(self.policy.model):
            state["lora_base"] = self.cfg.model.path  # model/ is merged; trainable.safetensors fits this base
        path = self.run_dir / "checkpoints" / f"step_{self.step}"
        extra_rng = gather_generator_states(self.sample_rng)  # a collective: every rank
        write = checkpoint_writer(self.policy, self.optimizer, path)  # fsdp: a collective (run/fsdp.py)
        if self.dist.is_main:
            write(state, extra_rng)
            prune_checkpoints(self.run_dir, self.cfg.train.keep_checkpoints)
        barrier()
        return path

    def train(self, on_step=None) -> list[dict[str, Any]]:
        """Run until ``train.steps``; evaluate at start, every ``eval.every`` and at the end; then
        write ``report.html`` (a failure there is logged as a warning, never raised)."""
        cfg = self.cfg
        history = []
        if self.step == 0:
            ev = self.evaluate()
            if ev:
                self.logger.log(0, ev)
                history.append({"step": 0, **ev})
        while self.step < cfg.train.steps:
            metrics = self.train_step()
            last = self.step == cfg.train.steps
            if (cfg.eval.every and self.step % cfg.eval.every == 0) or last:
                metrics |= self.evaluate()
            self.logger.log(self.step, metrics)
            history.append({"step": self.step, **metrics})
            if on_step is not None:
                on_step(self.step, metrics)
            due = (cfg.train.save_every and self.step % cfg.train.save_every == 0) or last
            if due and self.guard.healthy:  # never the state of a step whose update was skipped
                self.save()
        self.logger.close()
        if not self.dist.is_main:
            return history
        try:
            self.report_path = write_report(self.run_dir)
        except Exception as e:  # the report is a convenience: a finished run must not die of it
            log.warning("report.html not written for %s: %s: %s", self.run_dir, type(e).__name__, e)
        return history
