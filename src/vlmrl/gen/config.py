"""The typed config of ``vlmrl gen train`` (YAML + dotted overrides, as ``vlmrl train``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlmrl.config.load import ConfigError, load_tree, require_at_least


@dataclass
class GenModelConfig:
    path: str = "runs/gen_base"
    """A ``vlmrl gen pretrain`` output directory (``model.safetensors`` + ``gen_model.json``), or a
    diffusers flow-matching pipeline: a hub id (``stabilityai/stable-diffusion-3.5-medium``) or a
    local ``save_pretrained`` directory (``gen/hub.py``). The knobs below apply to pipelines only."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``."""
    size: int = 512
    """Pipeline: image side in pixels (a multiple of the VAE's scale factor)."""
    guidance_scale: float = 1.0
    """Pipeline: classifier-free guidance of the sampled chain (1: off; Flow-GRPO samples SD3.5 at 4.5)."""
    lora_r: int = 0
    """Pipeline: LoRA rank on the transformer's attention projections (0: train the whole transformer)."""
    lora_alpha: float = 0.0
    """Pipeline: LoRA alpha (0: equal to ``lora_r``)."""
    dtype: str = "float32"
    """Pipeline: ``float32`` | ``bfloat16`` | ``float16``."""


@dataclass
class GenDataConfig:
    train_prompts: str = "train"
    """Prompts RL trains on: ``train`` (the split's 14), ``all`` (18), or a ``;``-separated list of texts."""
    eval_prompts: str = "held_out"
    """Prompts the reward is measured on: ``held_out`` (4 RL never trains on), ``train``, ``all``,
    or a list."""


@dataclass
class GenSampleConfig:
    sampler: str = "auto"
    """Training rollouts: ``sde`` (Flow-GRPO's ODE-to-SDE), ``ddim`` (DDIM-η, DDPO's), or ``auto``
    (``sde`` for ``flow_grpo``, ``ddim`` for ``ddpo``)."""
    steps: int = 10
    """Denoising steps of a training rollout (fewer than for evaluation, as Flow-GRPO)."""
    eval_steps: int = 20
    """Euler ODE steps of an evaluation sample (uniform in t)."""
    noise_level: float = 0.7
    """Flow-GRPO's ``a``: SDE noise ``σ_t = a·sqrt(t/(1-t))``; 0 would be the ODE (no exploration)."""
    eta: float = 1.0
    """DDIM's η (``ddim`` sampler): 1 is ancestral sampling, 0 deterministic."""
    shift: float = 1.0
    """SD3 time shift of the step grid (> 1: more steps at high noise)."""
    stochastic_steps: int = 0
    """Only the first N training-rollout steps are stochastic (and trained on); the rest are
    Euler ODE steps (Flow-GRPO-Fast). 0: every step (Flow-GRPO). See ``gen/chain.SamplerSpec``."""
    same_noise: bool = False
    """Start every image of a group from the same initial noise (advantages then compare only the
    chain's stochastic choices)."""


@dataclass
class GenAlgoConfig:
    name: str = "flow_grpo"
    """``flow_grpo`` (group-relative advantages) or ``ddpo`` (per-prompt stat tracker)."""
    group_size: int = 8
    """Images per prompt per step (G)."""
    clip_range: float = 1e-3
    """PPO clip on the per-step ratio of dimension-averaged log-probs (see ``gen/sde.py``); it
    binds only from the second pass on (``train.epochs > 1``): the first pass has ratio 1."""
    adv_clip_max: float = 5.0
    """Advantages are clipped to ``[-adv_clip_max, adv_clip_max]``."""
    kl_coef: float = 0.04
    """β of the KL to the frozen pretrained model on the step means (0: off)."""
    timestep_fraction: float = 0.6
    """Share of a chain's (stochastic) steps trained on per sample, chosen at random."""
    tracker_buffer: int = 32
    """``ddpo``: rewards kept per prompt by the stat tracker."""
    tracker_min_count: int = 16
    """``ddpo``: below this many rewards for a prompt, the batch's mean and std are used."""


@dataclass
class GenLoopConfig:
    steps: int = 40
    """RL steps (each: rollouts, then ``epochs`` passes of updates)."""
    prompts_per_step: int = 4
    """Prompts per step (each with ``algo.group_size`` images)."""
    epochs: int = 1
    """Passes over a step's rollouts (the first pass has ratio exactly 1)."""
    lr: float = 1e-4
    """AdamW learning rate."""
    warmup_steps: int = 10
    """Linear learning-rate warm-up, in RL steps (``vlmrl.run.optim``: step s runs at
    ``lr·(s+1)/warmup_steps``). Adam's first updates are ~``lr·sign(g)`` on every weight
    whatever the gradient's noise; on a 1 M-parameter generator a full-``lr`` first step measurably
    pushes samples off the pretraining distribution (``watch/ref_distance`` doubles)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0: off)."""
    seed: int = 0
    """Seeds prompt order, noise and timestep choice."""
    save_every: int = 10
    """Checkpoint every N steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept."""


@dataclass
class GenEvalConfig:
    every: int = 10
    """Evaluate every N steps (0: only before and after)."""
    samples_per_prompt: int = 16
    """Evaluation images per prompt (fixed initial noise, so evaluations compare)."""
    grid_per_prompt: int = 6
    """Images per prompt in the report's sample grid."""


@dataclass
class GenLogConfig:
    run_dir: str = "runs/gen_rl"
    """Run directory: config.yaml, metrics.jsonl, checkpoints/, samples/, report.html."""
    progress: bool = True
    """A progress line per step."""


@dataclass
class GenConfig:
    model: GenModelConfig = field(default_factory=GenModelConfig)
    data: GenDataConfig = field(default_factory=GenDataConfig)
    sample: GenSampleConfig = field(default_factory=GenSampleConfig)
    algo: GenAlgoConfig = field(default_factory=GenAlgoConfig)
    train: GenLoopConfig = field(default_factory=GenLoopConfig)
    eval: GenEvalConfig = field(default_factory=GenEvalConfig)
    log: GenLogConfig = field(default_factory=GenLogConfig)


GEN_CHOICES: dict[str, tuple] = {
    "sample.sampler": ("auto", "sde", "ddim"),
    "algo.name": ("flow_grpo", "ddpo"),
    "model.dtype": ("float32", "bfloat16", "float16"),
}

PIPELINE_KNOBS: tuple[str, ...] = ("size", "guidance_scale", "lora_r", "lora_alpha", "dtype")
"""``model.*`` fields handed to ``vlmrl.gen.hub.PipelineSpec`` when ``model.path`` is a pipeline."""


def load_gen_config(path: str | Path | None = None, overrides=()) -> GenConfig:
    """``vlmrl gen train`` config: YAML ``path`` (or defaults), dotted overrides, validated."""
    cfg = load_tree(GenConfig, GEN_CHOICES, path, overrides)
    _validate(cfg)
    return cfg


def sampler_of(cfg: GenConfig) -> str:
    """The training sampler ``sample.sampler`` names (``auto``: the algorithm's own)."""
    if cfg.sample.sampler != "auto":
        return cfg.sample.sampler
    return "ddim" if cfg.algo.name == "ddpo" else "sde"


def _validate(cfg: GenConfig) -> None:
    require_at_least(
        {
            "sample.steps": cfg.sample.steps,
            "sample.eval_steps": cfg.sample.eval_steps,
            "algo.group_size": cfg.algo.group_size,
            "train.steps": cfg.train.steps,
            "train.prompts_per_step": cfg.train.prompts_per_step,
            "train.epochs": cfg.train.epochs,
            "eval.samples_per_prompt": cfg.eval.samples_per_prompt,
            "algo.tracker_buffer": cfg.algo.tracker_buffer,
        },
        1,
    )
    require_at_least({"model.size": cfg.model.size, "model.guidance_scale": cfg.model.guidance_scale}, 1)
    require_at_least(
        {
            "model.lora_r": cfg.model.lora_r,
            "model.lora_alpha": cfg.model.lora_alpha,
            "sample.stochastic_steps": cfg.sample.stochastic_steps,
        },
        0,
    )
    most = cfg.sample.steps - (sampler_of(cfg) == "ddim")  # DDIM's last step is deterministic
    if cfg.sample.stochastic_steps > most:
        raise ConfigError(
            f"sample.stochastic_steps: {cfg.sample.stochastic_steps} exceeds the {most} stochastic steps "
            f"of a {cfg.sample.steps}-step {sampler_of(cfg)} chain"
        )
    if cfg.algo.group_size < 2 and cfg.algo.name == "flow_grpo":
        raise ConfigError(
            f"algo.group_size: flow_grpo compares images of a group; need >= 2, got {cfg.algo.group_size}"
        )
    require_at_least(
        {
            "sample.noise_level": cfg.sample.noise_level,
            "sample.eta": cfg.sample.eta,
            "algo.kl_coef": cfg.algo.kl_coef,
            "train.lr": cfg.train.lr,
            "train.grad_clip": cfg.train.grad_clip,
            "train.warmup_steps": cfg.train.warmup_steps,
        },
        0,
    )
    if not 0 < cfg.algo.clip_range < 1:
        raise ConfigError(f"algo.clip_range: must be in (0, 1), got {cfg.algo.clip_range}")
    if not 0 < cfg.algo.timestep_fraction <= 1:
        raise ConfigError(f"algo.timestep_fraction: must be in (0, 1], got {cfg.algo.timestep_fraction}")
    if cfg.sample.shift <= 0:
        raise ConfigError(f"sample.shift: must be > 0, got {cfg.sample.shift}")
    if sampler_of(cfg) == "sde" and cfg.sample.noise_level == 0:
        raise ConfigError("sample.noise_level: 0 makes the SDE the ODE: no log-probs to train on")
    if sampler_of(cfg) == "ddim" and cfg.sample.steps < 2:
        raise ConfigError("sample.steps: DDIM's last step is deterministic; use >= 2 steps with ddim")
    if sampler_of(cfg) == "ddim" and cfg.sample.eta == 0:
        raise ConfigError("sample.eta: 0 makes DDIM deterministic: no log-probs to train on")
