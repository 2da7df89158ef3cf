"""A diffusers flow-matching text-to-image pipeline (the SD3 family) as a ``gen`` policy.

``vlmrl gen train`` trains whatever ``model.path`` names: a ``vlmrl gen pretrain`` directory
(:class:`vlmrl.gen.model.FlowPolicy`) or, through this module, a diffusers pipeline — a hub id
such as ``stabilityai/stable-diffusion-3.5-medium`` or a local ``save_pretrained`` directory
(``model_index.json``) — whose ``transformer`` predicts the rectified-flow velocity on VAE
latents, with the convention ``gen/model.py`` uses: ``x_t = (1 - t)·x0 + t·ε``, ``v = ε - x0``,
timestep input ``t·1000`` (what ``StableDiffusion3Pipeline`` feeds its transformer). So the
chain, the samplers, the log-probs and the trainer are the same code; only three things differ:

* **prompts**: the generation prompts' texts go through the pipeline's own text encoders
  (``encode_prompt``) once, at load; the table of embeddings is kept and the encoders dropped,
  so ``velocity`` looks a prompt up by its ids ``(colour, count, side)`` as the small model does;
* **images**: the chain runs on latents ``[C, H/f, W/f]``; :meth:`PipelinePolicy.decode` maps the
  last latent through the frozen VAE (``latents / scaling_factor + shift_factor``) for the rewards;
* **classifier-free guidance** (``model.guidance_scale`` > 1, as Flow-GRPO samples SD3.5):
  ``v = v_∅ + w·(v_c - v_∅)`` with the empty prompt's embedding; the guided ``v`` is the policy's
  velocity, so its log-probs and the KL to the reference are those of the guided chain.

Trainable weights: the whole transformer, or LoRA adapters on its attention projections
(``model.lora_r`` > 0, ``peft``; the transformer is then frozen and only the adapters train and
are saved; ``A`` is drawn from a fixed seed and ``B`` is 0, so every load starts from the
source's function and a resume is exact). A checkpoint is ``policy.safetensors`` (those
weights) + ``gen_pipeline.json`` (the source and the knobs); loading it rebuilds the pipeline
from its source and loads the weights.
Only flow-matching pipelines (a ``FlowMatch*`` scheduler and a ``transformer``) are accepted;
FLUX's packed latents and guidance embedding are not adapted here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from vlmrl.errors import UserError
from vlmrl.gen.prompts import ALL_PROMPTS
from vlmrl.run.checkpoint import read_weights

PIPELINE_FILE = "gen_pipeline.json"
WEIGHTS_FILE = "policy.safetensors"
FORMAT_VERSION = 1
LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
"""Attention projections that get LoRA adapters (the joint-attention layers of an SD3 transformer)."""


@dataclass(frozen=True)
class PipelineSpec:
    """What a :class:`PipelinePolicy` is built from (saved as ``gen_pipeline.json``)."""

    source: str
    """Hub id or local diffusers pipeline directory (``model_index.json``)."""
    size: int = 512
    """Image side in pixels; must be a multiple of the VAE's scale factor."""
    guidance_scale: float = 1.0
    """Classifier-free guidance ``w`` (1: off, one transformer pass per step; > 1: two)."""
    lora_r: int = 0
    """LoRA rank on ``LORA_TARGETS`` (0: train the whole transformer)."""
    lora_alpha: float = 0.0
    """LoRA scaling numerator (0: equal to ``lora_r``, i.e. scale 1)."""
    dtype: str = "float32"
    """Weights and latents: ``float32`` | ``bfloat16`` | ``float16``."""
    max_sequence_length: int = 128
    """Text tokens of the T5 encoder, where the pipeline has one."""

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise UserError(f"model.size {self.size}: must be > 0")
        if self.guidance_scale < 1:
            raise UserError(f"model.guidance_scale {self.guidance_scale}: must be >= 1 (1: off)")
        if self.lora_r < 0 or self.lora_alpha < 0:
            raise UserError(f"model.lora_r / lora_alpha ({self.lora_r}, {self.lora_alpha}): must be >= 0")
        if self.dtype not in _DTYPES:
            raise ValueError(f"model.dtype {self.dtype!r}: allowed {sorted(_DTYPES)}")


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def is_pipeline_source(path: str | Path) -> bool:
    """True for a local diffusers pipeline or a saved :class:`PipelinePolicy` directory."""
    p = Path(path)
    return (p / "model_index.json").is_file() or (p / PIPELINE_FILE).is_file()


class PipelinePolicy(nn.Module):
    """A diffusers pipeline's transformer as the velocity field ``v_θ(x_t, t, prompt)`` on latents."""

    def __init__(self, pipe, spec: PipelineSpec) -> None:
        super().__init__()
        _check_pipeline(pipe, spec.source)
        self.spec = spec
        self.transformer = pipe.transformer
        self.vae = pipe.vae.requires_grad_(False).eval()
        f = int(getattr(pipe, "vae_scale_factor", 8))
        if spec.size % f:
            raise UserError(f"model.size {spec.size}: must be a multiple of the VAE's scale factor {f}")
        self._latent_shape = (int(self.transformer.config.in_channels), spec.size // f, spec.size // f)
        texts = [p.text for p in ALL_PROMPTS]
        with torch.no_grad():
            enc = pipe.encode_prompt(
                prompt=texts,
                prompt_2=None,
                prompt_3=None,
                device=pipe.device,
                do_classifier_free_guidance=spec.guidance_scale > 1,
                max_sequence_length=spec.max_sequence_length,
            )
        embeds, neg, pooled, neg_pooled = enc
        self.register_buffer("prompt_embeds", embeds.detach(), persistent=False)  # [P, L, D]
        self.register_buffer("pooled_embeds", pooled.detach(), persistent=False)  # [P, D']
        if spec.guidance_scale > 1:
            self.register_buffer("neg_embeds", neg[:1].detach(), persistent=False)  # [1, L, D]
            self.register_buffer("neg_pooled", neg_pooled[:1].detach(), persistent=False)  # [1, D']
        table = torch.zeros((3, 3, 2), dtype=torch.long)
        for i, p in enumerate(ALL_PROMPTS):
            table[p.ids] = i
        self.register_buffer("prompt_table", table, persistent=False)
        if spec.lora_r > 0:
            from peft import LoraConfig

            lora = LoraConfig(
                r=spec.lora_r,
                lora_alpha=spec.lora_alpha or spec.lora_r,
                init_lora_weights="gaussian",
                target_modules=list(LORA_TARGETS),
            )
            self.transformer.requires_grad_(False)
            with torch.random.fork_rng(devices=[]):  # the same adapters for every load of a source
                torch.manual_seed(0)
                self.transformer.add_adapter(lora)
            for p in self.transformer.parameters():  # adapters in fp32 under a bf16/fp16 transformer:
                if p.requires_grad:  # Adam's tiny updates would round away in half precision
                    p.data = p.data.float()

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape of one chain state: the VAE latent ``[C, size/f, size/f]``."""
        return self._latent_shape

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``v`` at latents ``x`` ``[B, C, h, w]``, ``t`` ``[B]`` in [0, 1], prompt ids ``[B, 3]``."""
        dt = self.prompt_embeds.dtype
        b = x.shape[0]
        t = t.to(device=x.device, dtype=torch.float32).reshape(-1).expand(b)
        cond = cond.to(self.prompt_table.device)
        idx = self.prompt_table[cond[:, 0], cond[:, 1], cond[:, 2]]  # [B]
        emb, pooled = self.prompt_embeds[idx], self.pooled_embeds[idx]
        xin = x.to(dt)
        if self.spec.guidance_scale > 1:
            emb = torch.cat([self.neg_embeds.expand(b, -1, -1), emb])
            pooled = torch.cat([self.neg_pooled.expand(b, -1), pooled])
            xin, t = torch.cat([xin, xin]), torch.cat([t, t])
        v = self.transformer(
            hidden_states=xin,
            encoder_hidden_states=emb,
            pooled_projections=pooled,
            timestep=(t * 1000.0).to(dt),
            return_dict=False,
        )[0].float()
        if self.spec.guidance_scale > 1:
            v_neg, v_pos = v.chunk(2)
            v = v_neg + self.spec.guidance_scale * (v_pos - v_neg)
        return v

    forward = velocity

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, C, h, w]`` → images ``[B, 3, size, size]`` in [-1, 1] through the frozen VAE."""
        cfg = self.vae.config
        z = latents.to(self.prompt_embeds.dtype) / cfg.scaling_factor + (cfg.shift_factor or 0.0)
        return self.vae.decode(z, return_dict=False)[0].float().clamp(-1.0, 1.0)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The weights that train: LoRA adapters only (``lora_r`` > 0) or the whole transformer."""
        sd = self.transformer.state_dict()
        if self.spec.lora_r > 0:
            sd = {k: v for k, v in sd.items() if "lora_" in k}
        return {k: v.detach().contiguous().cpu() for k, v in sd.items()}

    def save(self, out_dir: str | Path) -> Path:
        """Write ``policy.safetensors`` (:meth:`trainable_state`) + ``gen_pipeline.json``."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), str(out / WEIGHTS_FILE), metadata={"format": str(FORMAT_VERSION)})
        (out / PIPELINE_FILE).write_text(
            json.dumps({**asdict(self.spec), "format": FORMAT_VERSION}, indent=2)
        )
        return out

    def load_trained(self, model_dir: str | Path) -> None:
        """Load the weights :meth:`save` wrote into ``model_dir``; a file that does not fit is one
        error naming it (the pipeline itself is not rebuilt: a resume keeps this one)."""
        path = Path(model_dir) / WEIGHTS_FILE
        state = read_weights(path)
        want = self.trainable_state()
        bad = sorted(set(want) ^ set(state)) + [
            k for k in want if k in state and state[k].shape != want[k].shape
        ]
        if bad:
            raise ValueError(f"{path}: does not fit the pipeline's trainable weights (e.g. {bad[0]!r})")
        self.transformer.load_state_dict(state, strict=False)


def _check_pipeline(pipe, source: str) -> None:
    missing = [a for a in ("transformer", "vae", "scheduler") if getattr(pipe, a, None) is None]
    if missing or not hasattr(pipe, "encode_prompt"):
        raise ValueError(
            f"model.path {source!r}: {type(pipe).__name__} lacks {missing or ['encode_prompt']}; "
            "need a flow-matching text-to-image pipeline with a transformer (the SD3 family)"
        )
    if "FlowMatch" not in type(pipe.scheduler).__name__:
        raise ValueError(
            f"model.path {source!r}: scheduler {type(pipe.scheduler).__name__} is not flow matching; "
            "the gen trainer's samplers need a rectified-flow model (FlowMatch* scheduler)"
        )
    if "Flux" in type(pipe.transformer).__name__:
        raise ValueError(f"model.path {source!r}: FLUX transformers (packed latents) are not supported")


def load_pipeline(source: str, dtype: str = "float32"):
    """``DiffusionPipeline.from_pretrained(source)``; components a local ``model_index.json`` lists as
    ``[null, null]`` (e.g. SD3 without its T5 encoder) are passed as None, as diffusers requires."""
    from diffusers import DiffusionPipeline

    kwargs: dict = {"dtype": _DTYPES[dtype]}
    index = Path(source) / "model_index.json"
    if index.is_file():
        try:
            entries = json.loads(index.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{index}: not valid JSON ({e})") from None
        kwargs |= {k: None for k, v in entries.items() if isinstance(v, list) and v == [None, None]}
    try:
        return DiffusionPipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"model.path {source!r}: not a loadable diffusers pipeline ({str(e).splitlines()[0]})"
        ) from None


def load_pipeline_policy(source: str | Path, device: str | torch.device = "cpu", **knobs) -> PipelinePolicy:
    """A :class:`PipelinePolicy` from a hub id / pipeline directory (``knobs``: the
    :class:`PipelineSpec` fields) or from a directory :meth:`PipelinePolicy.save` wrote (its
    ``gen_pipeline.json`` gives source and knobs; the saved weights are loaded)."""
    saved = Path(source) / PIPELINE_FILE
    weights = None
    if saved.is_file():
        try:
            raw = json.loads(saved.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{saved}: not valid JSON ({e})") from None
        if not isinstance(raw, dict) or raw.pop("format", None) != FORMAT_VERSION:
            raise ValueError(f"{saved}: not a gen_pipeline.json of format {FORMAT_VERSION}")
        names = {f.name for f in fields(PipelineSpec)}
        if set(raw) - names:
            raise ValueError(f"{saved}: unknown key(s) {sorted(set(raw) - names)}")
        knobs, source, weights = raw, raw.pop("source"), Path(source)
    spec = PipelineSpec(source=str(source), **knobs)
    pipe = load_pipeline(spec.source, spec.dtype).to(device)  # encode the prompts where it will run
    policy = PipelinePolicy(pipe, spec)
    if weights is not None:
        policy.load_trained(weights)
    return policy.to(device).eval()
