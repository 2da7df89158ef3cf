"""The typed config tree. Every field has a docstring; `load_config` validates types and choices.

The choices of the algorithm fields are the registries' own names (the ``algos`` StrEnums), so a
variant the code implements is a variant the config accepts, and nothing else is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlmrl.algos import AdvantageEstimator, CostMode, CostSpec, KLEstimator, LossAgg, PolicyLoss
from vlmrl.config.log_spec import LogConfig
from vlmrl.config.reward_spec import COUNTERFACTUAL, RewardConfig
from vlmrl.config.reward_spec import JudgeConfig as JudgeConfig  # re-exported: rooms import schema
from vlmrl.data.loading import IMAGE_BOUNDS

#: ``train.schedule`` (``vlmrl.run.optim.lr_factor``): warm-up, then constant or a cosine to 0.
SCHEDULES: tuple[str, ...] = ("constant", "cosine")
#: ``train.strategy``: replicated data parallel (``run/dist.py``) or FSDP2 sharding (``run/fsdp.py``).
STRATEGIES: tuple[str, ...] = ("dp", "fsdp")
#: ``algo.credit`` (``vlmrl.vision.credit``): one advantage per response, or per ``<look>`` segment.
CREDITS: tuple[str, ...] = ("scalar", "segment")
#: ``vision.train`` (``vlmrl.models.vision.apply_vision_policy``).
VISION_MODES: tuple[str, ...] = ("full", "frozen", "lora", "projector_only")
#: ``reward.trl_completions`` (``vlmrl.rewards.forms.trl``): plain strings, or TRL's conversational lists.
TRL_COMPLETIONS: tuple[str, ...] = ("text", "messages")


def _names(enum_cls) -> tuple[str, ...]:
    return tuple(m.value for m in enum_cls)


#: Fields whose value must be one of a fixed set; checked at load time.
CHOICES: dict[str, tuple[str, ...]] = {
    "model.dtype": ("float32", "bfloat16", "float16", "auto"),
    "algo.advantage": _names(AdvantageEstimator),
    "algo.loss": _names(PolicyLoss),
    "algo.loss_agg": _names(LossAgg),
    "algo.kl_estimator": _names(KLEstimator),
    "algo.kl_placement": ("loss", "reward"),
    "algo.credit": CREDITS,
    "env.cost_mode": _names(CostMode),
    "algo.papo_kl_estimator": _names(KLEstimator),
    "rollout.noise_schedule": ("constant", "linear", "cosine", "sigmoid"),
    "rollout.engine": ("hf", "vllm"),
    "rollout.mode": ("sync", "async"),
    "train.schedule": SCHEDULES,
    "train.strategy": STRATEGIES,
    "train.fsdp_param_dtype": ("float32", "bfloat16", "float16"),
    "reward.trl_completions": TRL_COMPLETIONS,
    "reward.counterfactual": COUNTERFACTUAL,
    "vision.train": VISION_MODES,
    "data.image_bounds": IMAGE_BOUNDS,
}


@dataclass
class LoraSpec:
    r: int = 0
    """LoRA rank on the language model's linear layers (peft); 0: off, the whole LM trains."""
    alpha: float = 16.0
    """LoRA α: the adapter's update is scaled by α / r."""
    dropout: float = 0.0
    """Dropout on the adapter's input in training (0 keeps the training forward equal to the sampler's)."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Last names of the LM linear layers to adapt (Qwen2/2.5/3-VL attention + MLP); not tower, lm_head."""


@dataclass
class ModelConfig:
    path: str = "runs/tiny-model"
    """Hub id or local directory with config.json (``vlmrl make-tiny DIR`` writes one)."""
    dtype: str = "float32"
    """Weights dtype: float32 | bfloat16 | float16 | auto."""
    attn_implementation: str = "sdpa"
    """Attention kernel passed to from_pretrained (sdpa, eager, flash_attention_2)."""
    device: str = "cpu"
    """Torch device for policy and reference (``cuda`` under torchrun: ``cuda:LOCAL_RANK``)."""
    min_pixels: int | None = None
    """Smallest image area (pixels) the processor resizes to; None: the processor's own (EasyR1: 262144)."""
    max_pixels: int | None = None
    """Largest image area (pixels) the processor resizes to; None: the processor's own (EasyR1: 4194304)."""
    lora: LoraSpec = field(default_factory=LoraSpec)
    """LoRA on the language model (``model.lora.r=16``); the tower follows ``vision.train`` (``lora`` too)."""


@dataclass
class DataConfig:
    task: str = "count"
    """Procedural task name (see ``vlmrl data list``); ignored when ``path`` is set."""
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    """Difficulty knobs passed to the task generator (e.g. ``{max_count: 6}``)."""
    path: str | None = None
    """Parquet / jsonl / directory / HF datasets id; overrides ``task``. ``NAME@SPLIT`` picks a split
    (EasyR1's ``hiyouga/geometry3k@train``); without it the split is ``train``."""
    eval_path: str | None = None
    """Held-out data for ``path`` datasets (``NAME@SPLIT`` too; default split ``test``); procedural
    tasks draw a disjoint eval split instead."""
    prompt_key: str = "problem"
    """Column holding the prompt text, one ``<image>`` per image (EasyR1's ``data.prompt_key``)."""
    answer_key: str = "answer"
    """Column holding the ground-truth answer (EasyR1's ``data.answer_key``; TRL datasets: ``solution``)."""
    image_key: str | None = "images"
    """Column holding the images (bytes, paths or HF image structs); null for a text-only dataset."""
    image_dir: str | None = None
    """Folder that relative image paths resolve against (EasyR1's ``data.image_dir``); None: the
    data file's folder. Paths may not leave it."""
    image_bounds: str = "reject"
    """Images out of bounds: an aspect ratio above 200 (Qwen2-VL's processor refuses them) or a side
    under 4 px (a broken or placeholder file, as a rule). reject: the loader stops with one line
    naming the row; resize: pad the short side up to ratio 200, enlarge tiny images to 4 px a side."""
    video_key: str | None = "videos"
    """Column holding the videos (EasyR1's ``data.video_key``), one ``<video>`` each: frames or a file."""
    video_fps: float = 2.0
    """Frames per second kept from a dataset's videos (EasyR1's ``data.video_fps``; vlmrl.data.video)."""
    video_max_frames: int = 16
    """Cap on frames kept per video, rounded down to whole temporal patches (2 frames for Qwen2.5-VL)."""
    video_max_pixels: int | None = None
    """Video frames above this many pixels are scaled down, aspect kept (None: as decoded)."""
    train_size: int | None = None
    """Cap on distinct training samples (None: a fresh procedural sample every time)."""
    eval_size: int = 100
    """Held-out samples used by each evaluation."""
    eval_task_kwargs: dict[str, Any] | None = None
    """Task knobs of the procedural held-out split when it differs from training (a shifted or
    de-biased test distribution, e.g. ``{bias: null}`` for ``shortcut``); None: ``task_kwargs``."""
    template: str = "answer"
    """Prompt template: a name in vlmrl/templates (answer, math, look) or a .jinja path."""
    seed: int = 0
    """Seed of the data stream (training order and procedural content)."""


@dataclass
class VisionConfig:
    train: str = "full"
    """What the vision tower does during RL: full | frozen | lora | projector_only."""
    lr_scale: float = 1.0
    """Learning-rate multiplier for vision-tower parameters."""
    drift_warn: float = 0.1
    """Warn (and log ``vision/drift_alert = 1``) when 1 − cos_sim of tower features vs. the start > this."""
    anchor_coef: float = 0.0
    """Feature-anchor loss: coef × mean(1 − cos(tower features, frozen start-of-run tower's)); 0: off."""


@dataclass
class RolloutConfig:
    n: int = 8
    """Completions per prompt (the group size G)."""
    temperature: float = 1.0
    """Sampling temperature; the training forward divides logits by it too, so ratios match."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    max_new_tokens: int = 16
    """Completion length cap."""
    mask_truncated: bool = False
    """Drop completions that hit max_new_tokens from the loss (DAPO overlong filtering)."""
    engine: str = "hf"
    """hf (transformers ``generate``, runs anywhere) | vllm (colocated vLLM, CUDA + the ``[vllm]`` extra)."""
    vllm_gpu_memory_utilization: float = 0.4
    """Share of GPU memory vLLM may take (weights + KV cache); the rest is the trainer's."""
    vllm_max_model_len: int | None = None
    """vLLM context length cap (None: the model's); prompt + completion must fit."""
    vllm_sleep: bool = True
    """Sleep mode: vLLM's weights and KV cache leave the GPU between generations (level 1)."""
    vllm_tensor_parallel_size: int = 1
    """GPUs (ranks) sharing one vLLM engine; > 1 needs torchrun with a process count it divides."""
    mode: str = "sync"
    """sync: sample, then update, in one process | async: a worker process samples the next batch
    from weights at most ``staleness`` updates old while the trainer updates (``rollout/async_worker.py``)."""
    staleness: int = 1
    """async: k, the most updates the sampling weights lag the trainer's; 0 is the sync run, exactly."""
    noisy_frac: float = 0.0
    """NoisyRollout: ⌊noisy_frac·n⌋ of each group sampled from a noised image, trained on clean; 0: off."""
    noise_std: float = 0.3
    """Std of the Gaussian pixel noise (image in [0, 1]) at step 0 of NoisyRollout."""
    noise_anneal_steps: int | None = None
    """Steps over which the noise std decays to 0 (None: train.steps)."""
    noise_schedule: str = "sigmoid"
    """Decay of the noise std: constant | linear | cosine | sigmoid (NoisyRollout's)."""

    @property
    def noisy_count(self) -> int:
        """Noisy rollouts per group, ``⌊noisy_frac · n⌋`` (robust to float rounding, e.g. 0.29·100), < n."""
        return min(int(self.noisy_frac * self.n + 1e-9), self.n - 1)


@dataclass
class AlgoConfig:
    advantage: str = "grpo"
    """Advantage estimator: a ``vlmrl.algos.AdvantageEstimator`` (grpo, drgrpo, rloo, reinforce_pp, …)."""
    loss: str = "ppo_clip"
    """Policy loss: a ``vlmrl.algos.PolicyLoss`` (ppo_clip, dual_clip, gspo, sapo, cispo)."""
    loss_agg: str = "seq_mean_token_mean"
    """How token losses become one number (see vlmrl.algos.aggregate)."""
    clip_low: float | None = None
    """Lower clip ε: ratio ≥ 1 − clip_low. None: the loss's own default (``vlmrl.algos.CLIP_RANGES``:
    0.2 for ppo_clip / dual_clip, 3e-4 for gspo, 1 for cispo: no lower bound on its IS weight); checked
    against the loss's valid range at load. For ``sapo`` it is the soft gate's temperature τ_neg
    (default 1.05), > 0."""
    clip_high: float | None = None
    """Upper clip ε: ratio ≤ 1 + clip_high (DAPO clip-higher: 0.28). None: the loss's own default
    (0.2; gspo 4e-4; cispo 0.28). For ``sapo`` it is the soft gate's temperature τ_pos (default 1.0)."""
    dual_clip_c: float | None = None
    """Dual-clip constant c > 1 capping the loss of negative advantages at c·|A| (``loss: dual_clip``
    only; None: 3). Setting it for another loss is an error."""
    kl_coef: float = 0.0
    """β of the KL to the reference; 0 skips the reference model entirely."""
    tis_cap: float = 2.0
    """Stale (async) rollouts: cap C ≥ 1 of the importance weight min(π_prox/μ, C) on each token's
    advantage (decoupled PPO with truncated importance sampling, ``vlmrl.algos.offpolicy``)."""
    kl_estimator: str = "k3"
    """k1 | k2 | k3 (low-variance, clamped)."""
    kl_placement: str = "loss"
    """Put β·KL in the loss (GRPO) or subtract it from the reward (PPO/RLHF style)."""
    entropy_coef: float = 0.0
    """Bonus on mean token entropy (0: logged only)."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal (zero advantage) and refill with fresh prompts."""
    dynamic_sampling_max_rounds: int = 3
    """Generation rounds per step at most when refilling (the batch may end up smaller)."""
    overlong_penalty: float = 0.0
    """Reward subtracted from completions truncated at max_new_tokens."""
    credit: str = "scalar"
    """scalar (one advantage per response) | segment (<look> tokens: perception advantage; rest: outcome)."""
    sr1_check: bool = False
    """Vision-SR1: re-ask text-only with the model's own <look> text (greedy); reward part ``sr1``."""
    papo_coef: float = 0.0
    """PAPO γ: maximise γ·KL(π(·|image) ‖ π(·|patch-masked image)) on completion tokens; 0: off."""
    papo_entropy_coef: float = 0.03
    """PAPO's double-entropy guard η: adds η·(H(π|image) + H(π|masked)): no KL from diffuse outputs."""
    papo_mask_ratio: float = 0.6
    """Fraction of each image's merge groups (2×2 patches = one image token) zeroed in PAPO's masked view."""
    papo_kl_estimator: str = "k3"
    """Per-token estimator of PAPO's KL: k1 | k2 | k3 (PAPO's low_var_kl)."""


@dataclass
class LoopConfig:
    steps: int = 100
    """GRPO steps (each: B prompts × G samples, then the update)."""
    batch_prompts: int = 8
    """B: prompts per step, over all processes (each of W ranks takes B / W of them; W must divide B)."""
    epochs: int = 1
    """K: passes over each rollout batch."""
    minibatches: int = 1
    """Optimizer steps per epoch (the rollout batch split evenly)."""
    micro_batch: int = 16
    """Sequences per forward/backward (gradient accumulation inside a minibatch)."""
    lr: float = 2e-5
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear warm-up, counted in training steps (a step may hold several optimizer steps): step s
    runs at ``lr·(s+1)/warmup_steps`` (``vlmrl.run.optim``)."""
    schedule: str = "constant"
    """constant | cosine (after warmup)."""
    grad_clip: float = 1.0
    """Max global grad norm (0: off)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward (HF, non-reentrant): less memory, ~1 more forward of time."""
    strategy: str = "dp"
    """Many processes: ``dp`` replicates the model on every rank (``run/dist.py``); ``fsdp`` shards
    parameters, gradients, optimizer state and the KL reference over ranks (FSDP2, ``run/fsdp.py``;
    what it does not support yet is refused at load, docs/guides/scaling.md)."""
    fsdp_param_dtype: str = "float32"
    """``fsdp`` only: dtype of the gathered parameters in forward and backward (FSDP2's
    ``MixedPrecisionPolicy.param_dtype``); the sharded weights, optimizer state and the gradient
    reduction stay in ``model.dtype`` / float32. ``bfloat16`` halves the all-gather traffic."""
    seed: int = 0
    """Seed for sampling and initialisation."""
    save_every: int = 50
    """Checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep."""
    nonfinite_patience: int = 3
    """Steps in a row whose update may be skipped for NaN / inf (rewards, advantages, loss or
    gradient norm) before the run stops with one line (``vlmrl.run.finite``); 1: stop at the first."""


@dataclass
class EvalConfig:
    every: int = 25
    """Evaluate every N steps (0: only at start and end)."""
    max_new_tokens: int = 16
    """Greedy decoding length cap at evaluation."""
    batch_size: int = 50
    """Prompts per generate call at evaluation."""
    blind: bool = False
    """Also evaluate with blank / noise / shuffled images: ``eval/blind/<cond>``, ``eval/blind_gap``."""
    blind_gap_drop: float = 0.2
    """With ``eval.blind``: warn (once) and log ``eval/blind_gap_alert = 1`` while the blind gap is
    more than this below its first value in the run: the model answers more from the text."""
    drift: bool = True
    """Log vision-tower drift vs. the initial model (``vision/cos_sim``, ``cka``, ``weight_change``)."""
    pope_size: int = 0
    """POPE yes/no hallucination probes per mode (random, popular, adversarial) at each eval (0: off)."""


@dataclass
class SFTConfig:
    init: str | None = None
    """Model to warm-start from (None: ``model.path``)."""
    steps: int = 300
    """Supervised steps on formatted gold answers."""
    batch_size: int = 32
    """Samples per step."""
    lr: float = 1e-3
    """AdamW learning rate."""
    task_kwargs: dict[str, Any] | None = None
    """SFT task knobs when they differ from ``data.task_kwargs`` (an easier or shifted distribution)."""
    train_size: int | None = None
    """Distinct labelled samples SFT may see (None: a fresh one every time). Few labels leave room for RL."""
    out: str = "runs/sft-model"
    """Where the warm-started model is saved (a from_pretrained directory)."""


@dataclass
class EnvConfig(CostSpec):
    """Multi-turn tool use (``vlmrl.envs``, ``vlmrl.rollout.multiturn``); ``name: null`` = single-turn."""

    name: str | None = None
    """Registered environment (``vlmrl.envs.make_env``); None: today's single-turn rollouts."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Environment knobs (reward weights, tool grid, ...), passed to ``make_env(name, **kwargs)``."""
    max_turns: int = 4
    """Model turns per episode; the last allowed turn ends it (a budget stop)."""
    max_tool_calls: int = 3
    """Tool calls per episode (the environment enforces it)."""
    turn_max_new_tokens: int = 48
    """Tokens one assistant turn may generate (its own cap, besides the episode's)."""
    max_total_tokens: int = 384
    """Completion tokens per episode, model + environment turns (tool images included); exceeding
    it ends the episode as a budget stop. Also the ``norm_const`` of token-sum loss aggregations."""


@dataclass
class TrainConfig:
    """The whole run: ``vlmrl train cfg.yaml`` and ``vlmrl sft cfg.yaml`` read this."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
