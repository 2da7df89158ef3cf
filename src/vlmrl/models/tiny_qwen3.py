"""A tiny Qwen3-VL, built like the tiny Qwen2.5-VL (``vlmrl make-tiny DIR --arch qwen3_vl``).

It exists to keep vlmrl honest about "any ``AutoModelForImageTextToText``": Qwen3-VL differs from
Qwen2.5-VL in ways a trainer can trip on — 16 px patches, interleaved M-RoPE, DeepStack (vision
features injected into several LM layers, through ``deepstack_merger_list``), a learned position
embedding in the tower. Tests run the ratio check and a GRPO step on it. It is *not* a measured
learner like the default tiny model: sizes are chosen small, not tuned.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from vlmrl.models.tiny import TinyConfig, special_ids, text_dims, vision_token_kwargs
from vlmrl.models.tokenizer import train_tokenizer

#: Qwen3-VL's patch size: a 128 px image is 8×8 patches → 16 tokens after the 2×2 merge.
PATCH = 16


def make_tiny_qwen3(out_dir: str | Path, cfg: TinyConfig | None = None) -> Path:
    """Build and ``save_pretrained`` a ~1 M-parameter Qwen3-VL + processor into ``out_dir``."""
    cfg = cfg or TinyConfig()
    tok = train_tokenizer(vocab_size=cfg.vocab_size)
    side = int(cfg.image_pixels**0.5) // 14 * PATCH  # as many patches as the Qwen2.5-VL tiny model
    size = {"shortest_edge": side * side, "longest_edge": side * side}
    kw = {"patch_size": PATCH, "merge_size": 2, "temporal_patch_size": 2}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, **kw),
        tokenizer=tok,
        video_processor=Qwen3VLVideoProcessor(size=size, **kw),
        chat_template=tok.chat_template,
    )
    ids = special_ids(tok)
    pad = ids["<|endoftext|>"]
    head_dim = cfg.hidden_size // cfg.num_heads
    text = {
        **text_dims(cfg, len(tok)),
        "num_key_value_heads": max(1, cfg.num_heads // 2),  # grouped-query attention, as Qwen3
        "head_dim": head_dim,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "mrope_section": list(cfg.mrope_section),
            "mrope_interleaved": True,
        },
        "pad_token_id": pad,
    }
    vision = {
        "depth": cfg.vision_layers,
        "hidden_size": cfg.vision_hidden,
        "intermediate_size": cfg.vision_intermediate,
        "num_heads": cfg.vision_heads,
        "patch_size": PATCH,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": cfg.hidden_size,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": list(range(min(2, cfg.vision_layers))),
    }
    config = Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        **vision_token_kwargs(ids),
        tie_word_embeddings=False,
    )
    torch.manual_seed(cfg.seed)
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = pad
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
