"""``GenGRPOTrainer``: Flow-GRPO and DDPO on a flow-matching generator with programmatic rewards.

The policy is the denoising chain: each of its ``T`` steps is a Gaussian action (``gen/sde.py``),
so an image has ``T`` log-probs, as a completion has one per token. One RL step:

1. ``P`` prompts (a seeded cycle over ``data.train_prompts``) × ``G = algo.group_size`` images,
   sampled with the training sampler in ``sample.steps`` steps (fewer than ``sample.eval_steps``
   for evaluation, as Flow-GRPO) from per-step seeded noise;
2. rewards from the numpy verifiers (``gen/rewards.py``: count, colour, position, their mean);
3. advantages: Flow-GRPO group-relative, or DDPO's per-prompt stat tracker, clipped to
   ``±algo.adv_clip_max`` (``gen/advantages.py``);
4. ``train.epochs`` passes; in each, every image revisits a random ``algo.timestep_fraction`` of
   its stochastic steps (each image at its own step in a batch, as Flow-GRPO), and the loss is
   :func:`vlmrl.algos.ppo_clip_loss` on those per-step log-ratios (``clip_range`` both sides)
   plus ``β·KL`` of the step means to the frozen pretrained model; one optimizer step per pass.

Departures from the papers, for a 1 M-parameter model on a CPU: one optimizer step per pass
(Flow-GRPO takes several per batch), so with ``train.epochs: 1`` the update is on-policy and the
clip never binds; DDPO's objective is this same clipped loss (its paper's "DDPO_IS"), and the KL
term applies to DDPO runs too whenever ``algo.kl_coef > 0`` (the DDPO paper has none).
The reward-hacking watch (``gen/watch.py``: saturation, variance, ink, distance to the
pretraining images) is logged every step as ``watch/*``.
"""

from __future__ import annotations

import copy
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmrl.algos import ppo_clip_loss
from vlmrl.config.load import ConfigError, save_config
from vlmrl.gen.advantages import PromptStatTracker, group_advantages
from vlmrl.gen.chain import SamplerSpec, initial_noise, sample_chain, step_logprob
from vlmrl.gen.config import PIPELINE_KNOBS, GenConfig, sampler_of
from vlmrl.gen.grid import save_grid
from vlmrl.gen.load import load_gen_policy
from vlmrl.gen.model import FlowPolicy, sample_ode, to_uint8
from vlmrl.gen.prompts import ALL_PROMPTS, GenPrompt, parse_prompt, prompt_ids, render, split_prompts
from vlmrl.gen.rewards import score_batch
from vlmrl.gen.sde import timesteps
from vlmrl.gen.watch import ReferenceSet, image_stats
from vlmrl.run.checkpoint import load_checkpoint, prune_checkpoints, write_checkpoint
from vlmrl.run.metrics import MetricsLogger
from vlmrl.run.optim import build_optimizer, lr_factor, set_lr
from vlmrl.run.verify import usable_checkpoint


def resolve_prompts(spec: str) -> list[GenPrompt]:
    """``train`` | ``held_out`` | ``all`` | ``"text; text; …"`` → prompts (bad text: a clear error)."""
    train, held = split_prompts()
    named = {"train": list(train), "held_out": list(held), "all": list(ALL_PROMPTS)}
    if spec in named:
        return named[spec]
    return [parse_prompt(t.strip()) for t in spec.split(";") if t.strip()]


class GenGRPOTrainer:
    """Build from a :class:`GenConfig`; ``train()`` runs (or resumes) and returns the metric rows."""

    def __init__(self, cfg: GenConfig, resume: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.log.run_dir)
        self.device = _device(cfg.model.device)
        self.policy = load_gen_policy(
            cfg.model.path, self.device, **{k: getattr(cfg.model, k) for k in PIPELINE_KNOBS}
        )
        if isinstance(self.policy, FlowPolicy):
            _no_pipeline_knobs(cfg)
        self.ref = None
        if cfg.algo.kl_coef > 0:
            self.ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.spec = SamplerSpec(
            sampler_of(cfg), cfg.sample.noise_level, cfg.sample.eta, cfg.sample.stochastic_steps
        )
        self.times = timesteps(cfg.sample.steps, cfg.sample.shift)
        self.train_prompts = resolve_prompts(cfg.data.train_prompts)
        self.eval_prompts = resolve_prompts(cfg.data.eval_prompts)
        self.params = [p for p in self.policy.parameters() if p.requires_grad]  # LoRA: adapters only
        self.optimizer = build_optimizer(self.policy, cfg.train.lr, cfg.train.weight_decay)
        self.tracker = PromptStatTracker(cfg.algo.tracker_buffer, cfg.algo.tracker_min_count)
        self.reference = ReferenceSet.build(
            lambda p, rng: render(p, rng, self.size), list(ALL_PROMPTS), 256, 0
        )
        self.step = 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.run_dir / "config.yaml")
        self.logger = MetricsLogger(self.run_dir, tensorboard=False)
        ckpt = usable_checkpoint(self.run_dir) if resume else None  # the newest that verifies
        if ckpt is not None:
            self.policy.load_trained(ckpt / "model")
            state = load_checkpoint(ckpt, self.optimizer)
            self.step = int(state["step"])
            self.tracker.load_state_dict(state["tracker"])
            self.logger.truncate_after(self.step)

    @property
    def size(self) -> int:
        """Image side in pixels (the chain runs on ``policy.latent_shape``: the image, or a latent)."""
        return int(self.policy.spec.size)

    # ------------------------------------------------------------------ data
    def step_prompts(self, step: int) -> list[GenPrompt]:
        """Step ``step``'s prompts: positions ``(step-1)·P …`` of an endless, per-epoch shuffled
        cycle over the train prompts — a function of (seed, step), so a resume draws the same."""
        p, n = self.cfg.train.prompts_per_step, len(self.train_prompts)
        out = []
        for pos in range((step - 1) * p, step * p):
            order = list(range(n))
            random.Random(self.cfg.train.seed * 7919 + pos // n).shuffle(order)
            out.append(self.train_prompts[order[pos % n]])
        return out

    def _generator(self, step: int, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + step * 101 + salt)

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, Any]:
        cfg, g = self.cfg, self.cfg.algo.group_size
        self.step += 1
        t0 = time.perf_counter()
        prompts = self.step_prompts(self.step)
        per_image = [p for p in prompts for _ in range(g)]
        cond = prompt_ids(per_image).to(self.device)
        gen = self._generator(self.step, 0)
        x1 = initial_noise(len(per_image), self.policy.latent_shape, g, cfg.sample.same_noise, gen)
        self.policy.eval()
        chain = sample_chain(self.policy, cond, x1.to(self.device), self.times, self.spec, gen)
        t_sample = time.perf_counter() - t0
        imgs = to_uint8(self.policy.decode(chain.latents[:, -1]))  # uint8 [N, H, W, 3]
        total, parts = score_batch(imgs, per_image)
        rewards = torch.as_tensor(total, dtype=torch.float32)
        group_ids = torch.arange(len(prompts)).repeat_interleave(g)
        if cfg.algo.name == "ddpo":
            adv = self.tracker.advantages([p.text for p in per_image], rewards, cfg.algo.adv_clip_max)
        else:
            adv = group_advantages(rewards, group_ids, cfg.algo.adv_clip_max)
        metrics = {f"reward/{k}": float(np.mean(v)) for k, v in parts.items()}
        metrics |= image_stats(imgs, self.reference)
        metrics |= {
            "adv/abs_mean": float(adv.abs().mean()),
            "adv/zero_groups": _zero_groups(rewards, group_ids),
        }
        metrics |= self._update(chain, adv, self._generator(self.step, 1))
        metrics |= {"time/sample_s": t_sample, "time/step_s": time.perf_counter() - t0}
        return metrics

    def _update(self, chain, adv: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        """``epochs`` passes; each image trains on its own random subset of stochastic steps."""
        cfg = self.cfg
        steps = chain.stochastic.nonzero().flatten()  # [S]
        m = max(1, math.ceil(cfg.algo.timestep_fraction * len(steps)))
        n = chain.latents.shape[0]
        rows = torch.arange(n)
        adv, mask = adv.to(self.device), torch.ones(n, 1, device=self.device)
        self.policy.train()
        out: dict[str, list[float]] = {}
        for epoch in range(cfg.train.epochs):
            picks = torch.stack(
                [steps[torch.randperm(len(steps), generator=gen)[:m]] for _ in range(n)]
            )  # [N, m]
            self.optimizer.zero_grad(set_to_none=True)
            for j in range(m):
                k = picks[:, j]  # [N]: each image at its own step
                logp, kl = step_logprob(self.policy, chain, rows, k, self.spec, self.ref)
                old = chain.logp[rows, k]
                loss, lm = ppo_clip_loss(
                    logp[:, None], old[:, None], adv[:, None], mask,
                    clip_low=cfg.algo.clip_range, clip_high=cfg.algo.clip_range,
                )  # fmt: skip
                if kl is not None:
                    loss = loss + cfg.algo.kl_coef * kl.mean()
                    lm["kl_ref"] = kl.mean().item()
                (loss / m).backward()
                if epoch == 0:
                    lm = {f"{k}_first_pass" if k.startswith("ratio") else k: v for k, v in lm.items()}
                for key, v in lm.items():
                    out.setdefault(f"actor/{key}", []).append(v)
                out.setdefault("actor/loss", []).append(loss.item())
            set_lr(self.optimizer, lr_factor(self.step, cfg.train.steps, cfg.train.warmup_steps))
            if cfg.train.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.train.grad_clip)
                out.setdefault("actor/grad_norm", []).append(float(norm))
            self.optimizer.step()
        self.policy.eval()
        res = {k: float(np.mean(v)) for k, v in out.items()}
        if "actor/ratio_max_first_pass" in out:
            res["actor/ratio_max_first_pass"] = float(max(out["actor/ratio_max_first_pass"]))
        return res

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, save_grid_png: bool = True) -> dict[str, float]:
        """Reward of ODE samples (``sample.eval_steps``) on the eval prompts, from noise fixed for
        the whole run (so evaluations compare), overall and per part; and a sample grid."""
        cfg, k = self.cfg, self.cfg.eval.samples_per_prompt
        prompts = [p for p in self.eval_prompts for _ in range(k)]
        gen = torch.Generator().manual_seed(cfg.train.seed + 12345)
        x1 = torch.randn((len(prompts), *self.policy.latent_shape), generator=gen)
        with torch.no_grad():
            imgs = to_uint8(sample_ode(self.policy, prompt_ids(prompts), cfg.sample.eval_steps, x1=x1))
        total, parts = score_batch(imgs, prompts)
        res = {f"eval/reward/{k_}": float(np.mean(v)) for k_, v in parts.items() if k_ != "total"}
        res["eval/reward"] = float(np.mean(total))
        res |= {f"eval/{k_}": v for k_, v in image_stats(imgs, self.reference).items()}
        if save_grid_png:
            per = min(cfg.eval.grid_per_prompt, k)
            rows = [imgs[i * k : i * k + per] for i in range(len(self.eval_prompts))]
            save_grid(
                self.run_dir / "samples" / f"step_{self.step}.png", rows, [p.text for p in self.eval_prompts]
            )
        return res

    # ------------------------------------------------------------------ loop
    def save(self) -> Path:
        state = {"step": self.step, "tracker": self.tracker.state_dict(), "format": 1}
        path = write_checkpoint(
            self.run_dir / "checkpoints" / f"step_{self.step}",
            lambda d: self.policy.save(d / "model"),
            self.optimizer,
            state,
        )
        prune_checkpoints(self.run_dir, self.cfg.train.keep_checkpoints)
        return path

    def train(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        rows = []
        if self.step == 0:
            rows.append({"step": 0, **self.evaluate()})
            self.logger.log(0, rows[-1])
        while self.step < cfg.train.steps:
            metrics = self.train_step()
            last = self.step == cfg.train.steps
            if last or (cfg.eval.every and self.step % cfg.eval.every == 0):
                metrics |= self.evaluate()
            self.logger.log(self.step, metrics)
            rows.append({"step": self.step, **metrics})
            if cfg.log.progress:
                ev = f" eval {metrics['eval/reward']:.3f}" if "eval/reward" in metrics else ""
                print(
                    f"step {self.step}/{cfg.train.steps} reward {metrics['reward/total']:.3f}{ev} "
                    f"({metrics['time/step_s']:.1f} s)",
                    flush=True,
                )
            if last or (cfg.train.save_every and self.step % cfg.train.save_every == 0):
                self.save()
        self.logger.close()
        self._report()
        return rows

    def _report(self) -> None:
        from vlmrl.eval.report import write_report

        try:
            write_report(self.run_dir)
        except Exception as e:  # a report must never cost a finished run
            print(f"report.html not written: {e}")


def _device(name: str) -> torch.device:
    """``model.device``: ``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"model.device: {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"model.device: {name!r} but CUDA is not available here")
    return dev


def _no_pipeline_knobs(cfg: GenConfig) -> None:
    """The pipeline-only ``model.*`` knobs must stay at their defaults for a ``gen pretrain`` model."""
    default = type(cfg.model)()
    set_ = [k for k in PIPELINE_KNOBS if getattr(cfg.model, k) != getattr(default, k)]
    if set_:
        raise ConfigError(
            f"model.{set_[0]}: applies to diffusers pipelines; {cfg.model.path} is a vlmrl gen pretrain model"
        )


def _zero_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> float:
    """Share of groups whose images all scored the same (no learning signal for Flow-GRPO)."""
    groups = group_ids.unique()
    flat = [float(rewards[group_ids == gid].std()) == 0.0 for gid in groups]
    return sum(flat) / len(groups)
