"""A per-GPU memory estimate for a GRPO run, before anything is allocated (``vlmrl doctor``).

Each part is a rule of thumb, stated where it is computed, good to ~30 %: enough to tell "fits
with room" from "will not fit" and which knob moves which part. vlmrl's data parallelism keeps a
full copy of the model on every GPU (``vlmrl.run.dist``), so none of the parts is divided by the
number of GPUs (there is no FSDP sharding in vlmrl).

- weights: every parameter at ``model.dtype``;
- gradients: the trainable parameters at ``model.dtype``;
- optimizer: AdamW's two moments per trainable parameter, at the parameter's dtype;
- activations of one training micro-batch: per layer ``tokens × (10·hidden + 2·intermediate)``
  values without gradient checkpointing, ``tokens × hidden`` with it (plus one layer's full set),
  and the completion's float32 logits twice (logits, log-softmax);
- KV cache of sampling: ``2 × layers × kv_heads × head_dim × (prompt + new tokens)`` per sequence,
  ``batch_prompts × n`` sequences (inside vLLM's share when ``rollout.engine: vllm``);
- reference model: a second copy of the weights when ``algo.kl_coef > 0`` and not only LoRA trains;
- vLLM share: ``rollout.vllm_gpu_memory_utilization`` of the GPU, reserved by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlmrl.models.params import is_vision_param

GIB = 1024**3
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}


@dataclass(frozen=True)
class MemorySpec:
    """The knobs of a run that set its memory (built from the config by the CLI)."""

    dtype: str = "float32"
    """``model.dtype``."""
    lora_r: int = 0
    """``model.lora.r`` (0: full fine-tuning of the language model)."""
    vision_train: str = "full"
    """``vision.train``: full | frozen | projector_only | lora."""
    gradient_checkpointing: bool = False
    """``train.gradient_checkpointing``."""
    micro_batch: int = 16
    """``train.micro_batch``: sequences in one training forward."""
    batch_prompts: int = 8
    """``train.batch_prompts``."""
    n: int = 8
    """``rollout.n``: samples per prompt."""
    max_new_tokens: int = 16
    """``rollout.max_new_tokens``."""
    kl_coef: float = 0.0
    """``algo.kl_coef`` (> 0 may load a reference copy)."""
    engine: str = "hf"
    """``rollout.engine``."""
    vllm_share: float = 0.4
    """``rollout.vllm_gpu_memory_utilization``."""
    gpu_gib: float = 80.0
    """Memory of one GPU, GiB."""


@dataclass
class MemoryEstimate:
    """Bytes per GPU by part, whether they fit, and what would make them fit."""

    parts: dict[str, float]
    gpu_bytes: float
    advice: list[str]

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        """Whether the total leaves 10 % of the GPU for the allocator's fragmentation and CUDA context."""
        return self.total <= 0.9 * self.gpu_bytes

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in self.parts.items() if v > 0)
        return f"{self.total / GIB:.2f} GiB of {self.gpu_bytes / GIB:.0f} GiB ({parts} GiB)"


def _text_config(model) -> object:
    cfg = model.config
    return getattr(cfg, "text_config", None) or cfg


def _trainable_params(model, spec: MemorySpec) -> float:
    """Parameters the optimizer will hold, from the spec (the model itself is not yet set up)."""
    tc = _text_config(model)
    vision = lm = merger = 0
    for name, p in model.named_parameters():
        if is_vision_param(name):
            vision += p.numel()
            merger += p.numel() if "merger" in name else 0
        else:
            lm += p.numel()
    if spec.lora_r > 0:  # adapters on q, k, v, o, gate, up, down: about r·(in + out) each
        hidden, inter = tc.hidden_size, getattr(tc, "intermediate_size", 4 * tc.hidden_size)
        per_layer = spec.lora_r * (4 * 2 * hidden + 3 * (hidden + inter))
        lm = per_layer * tc.num_hidden_layers
    tower = {"full": vision, "frozen": 0, "projector_only": merger, "lora": 0.01 * vision}[spec.vision_train]
    return float(lm + tower)


def estimate_memory(model, spec: MemorySpec, prompt_tokens: int) -> MemoryEstimate:
    """The estimate for ``model`` (its config and parameter count) under ``spec``, with prompts of
    ``prompt_tokens`` tokens (image tokens included)."""
    tc = _text_config(model)
    b = _BYTES.get(spec.dtype, 4)
    total_params = float(sum(p.numel() for p in model.parameters()))
    trainable = _trainable_params(model, spec)
    layers, hidden = tc.num_hidden_layers, tc.hidden_size
    inter = getattr(tc, "intermediate_size", 4 * hidden)
    heads = tc.num_attention_heads
    kv_heads = getattr(tc, "num_key_value_heads", None) or heads
    head_dim = getattr(tc, "head_dim", None) or hidden // heads
    seq = prompt_tokens + spec.max_new_tokens
    tokens = spec.micro_batch * seq
    if spec.gradient_checkpointing:
        acts = tokens * hidden * b * layers + tokens * (10 * hidden + 2 * inter) * b
    else:
        acts = tokens * (10 * hidden + 2 * inter) * b * layers
    acts += 2 * spec.micro_batch * (spec.max_new_tokens + 1) * tc.vocab_size * 4
    kv = 2 * layers * kv_heads * head_dim * seq * spec.batch_prompts * spec.n * b
    vllm = spec.engine == "vllm"
    gpu = spec.gpu_gib * GIB
    parts = {
        "weights": total_params * b,
        "gradients": trainable * b,
        "optimizer": 2 * trainable * b,
        "activations": float(acts),
        "kv_cache": 0.0 if vllm else float(kv),
        "reference": total_params * b if spec.kl_coef > 0 and spec.lora_r == 0 else 0.0,
        "vllm": spec.vllm_share * gpu if vllm else 0.0,
    }
    return MemoryEstimate(parts, gpu, _advice(parts, spec, prompt_tokens))


def _advice(parts: dict[str, float], spec: MemorySpec, prompt_tokens: int) -> list[str]:
    """The knobs that shrink the largest parts, largest first."""
    out: list[tuple[float, str]] = []
    if spec.lora_r == 0:
        out.append(
            (
                parts["gradients"] + parts["optimizer"] + parts["reference"],
                "model.lora.r=16: gradients and AdamW states only for the adapters, and the KL reference "
                "becomes the policy with adapters off (no second copy)",
            )
        )
    if not spec.gradient_checkpointing:
        out.append(
            (
                parts["activations"] * 0.8,
                "train.gradient_checkpointing=true: keep one tensor per layer, "
                "recompute the rest in the backward",
            )
        )
    out.append((parts["activations"] * 0.5, f"a smaller train.micro_batch (now {spec.micro_batch})"))
    out.append(
        (
            parts["activations"] * 0.3 + parts["kv_cache"] * 0.3,
            f"lower model.max_pixels: fewer image tokens per prompt (prompts now ~{prompt_tokens} tokens)",
        )
    )
    if spec.dtype == "float32":
        out.append((parts["weights"] / 2 + parts["gradients"] / 2, "model.dtype=bfloat16: half the weights"))
    if spec.vision_train == "full":
        out.append((parts["gradients"] * 0.05, "vision.train=frozen or projector_only: no tower gradients"))
    if spec.engine == "vllm":
        out.append(
            (parts["vllm"] * 0.25, "a lower rollout.vllm_gpu_memory_utilization (the engine's reserve)")
        )
    out.append(
        (0.0, "FSDP sharding is not in vlmrl: every GPU holds a full copy; more GPUs do not shrink it")
    )
    return [text for _, text in sorted(out, key=lambda t: -t[0])]


def gpu_memory_gib(default: float = 80.0) -> tuple[float, bool]:
    """This machine's first GPU's memory in GiB and True, or ``default`` and False without one."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / GIB, True
    return default, False
