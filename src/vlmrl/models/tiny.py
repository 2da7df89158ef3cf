"""Build the tiny offline Qwen2.5-VL: real architecture classes, small config, local tokenizer.

Sizes come from measurement (docs/facts.md), not taste:
- text ``rope_theta = 10``: with head_dim 32 and ``mrope_section = [4, 6, 6]`` the height and
  width sections use the lowest rotary frequencies; at Qwen's 1e6 they turn ~1e-4 rad per
  position and the language model cannot tell image tokens apart by place.
- text 256 wide × 4 layers, vision 128 × 4 (~4 M params): the 0.65 M model learns colour but not
  counting; this one counts 1–4 to 100% with supervision.
- 112 px images, patch 14, merge 2 → 16 image tokens per image: short sequences, fast on a CPU.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from vlmrl.models.tokenizer import train_tokenizer


@dataclass
class TinyConfig:
    """Knobs of the tiny model. Defaults are the measured-learnable config."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 8
    intermediate_size: int = 512
    rope_theta: float = 10.0
    mrope_section: list[int] = field(default_factory=lambda: [4, 6, 6])
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    vision_intermediate: int = 256
    vocab_size: int = 1024
    image_pixels: int = 112 * 112
    """Processor budget (min = max pixels): 112² px → 8×8 patches → 16 tokens after the 2×2 merge."""
    seed: int = 0


def build_tiny_processor(cfg: TinyConfig, extra_texts: Iterable[str] = ()) -> Qwen2_5_VLProcessor:
    """Tokenizer (trained on the base corpus plus ``extra_texts``) + image processor + the video
    processor transformers 5 requires."""
    tokenizer = train_tokenizer(extra_texts, vocab_size=cfg.vocab_size)
    size = {"shortest_edge": cfg.image_pixels, "longest_edge": cfg.image_pixels}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=tokenizer.chat_template,
    )


SPECIAL = (
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|im_end|>",
    "<|endoftext|>",
)


def special_ids(tokenizer) -> dict[str, int]:
    """The ids of the chat/vision special tokens in ``tokenizer`` (every tiny architecture's config)."""
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}


def vision_token_kwargs(ids: dict[str, int]) -> dict[str, int]:
    """The vision-token ids a Qwen-VL top-level config takes."""
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def text_dims(cfg: TinyConfig, vocab_size: int) -> dict:
    """The text-model sizes both tiny architectures share (attention heads and RoPE differ)."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "max_position_embeddings": 4096,
    }


def build_tiny_model(cfg: TinyConfig, tokenizer) -> Qwen2_5_VLForConditionalGeneration:
    """A randomly initialised Qwen2.5-VL of the given size, token ids taken from ``tokenizer``."""
    ids = special_ids(tokenizer)
    head_dim = cfg.hidden_size // cfg.num_heads
    if sum(cfg.mrope_section) * 2 != head_dim:
        raise ValueError(
            f"tiny model: mrope_section {cfg.mrope_section} must sum to head_dim/2 = {head_dim // 2}"
        )
    text = {
        **text_dims(cfg, len(tokenizer)),
        "num_key_value_heads": cfg.num_heads,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "mrope_section": list(cfg.mrope_section),
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {
        "depth": cfg.vision_layers,
        "hidden_size": cfg.vision_hidden,
        "intermediate_size": cfg.vision_intermediate,
        "num_heads": cfg.vision_heads,
        "out_hidden_size": cfg.hidden_size,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": list(range(cfg.vision_layers)),
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        **vision_token_kwargs(ids),
        tie_word_embeddings=False,
    )
    torch.manual_seed(cfg.seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model


def make_tiny(out_dir: str | Path, cfg: TinyConfig | None = None) -> Path:
    """Build and ``save_pretrained`` model + processor into ``out_dir``; ``load_policy(out_dir)`` reads it."""
    cfg = cfg or TinyConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processor = build_tiny_processor(cfg)
    model = build_tiny_model(cfg, processor.tokenizer)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "tiny_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return out
