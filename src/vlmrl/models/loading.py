"""One loading path for hub models and the locally saved tiny model."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from vlmrl.models.base_mix import BASE_NAME
from vlmrl.models.tokenizer import VISION_SPECIAL_TOKENS

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


@dataclass
class Policy:
    """A model with the processor that feeds it; ``banned_token_ids`` must never be sampled."""

    model: Any
    processor: Any

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def banned_token_ids(self) -> list[int]:
        """Vision special tokens present in this vocabulary (see docs/facts.md)."""
        tok = self.tokenizer
        ids = []
        for t in VISION_SPECIAL_TOKENS:
            i = tok.convert_tokens_to_ids(t)
            if isinstance(i, int) and i >= 0 and i != tok.unk_token_id:
                ids.append(i)
        return ids


def tiny_base_path() -> Path:
    """Where the shipped tiny base lives inside the installed package."""
    return Path(str(resources.files("vlmrl") / "assets" / "tiny-base"))


def resolve_model_path(name_or_path: str | Path) -> str:
    """``"vlmrl-tiny-base"`` -> the shipped checkpoint's folder; anything else unchanged."""
    if str(name_or_path) == BASE_NAME:
        path = tiny_base_path()
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"{BASE_NAME}: the shipped checkpoint is missing from {path}; reinstall vlmrl "
                "or build one with `vlmrl pretrain-tiny`"
            )
        return str(path)
    return str(name_or_path)


def load_policy(
    name_or_path: str | Path,
    dtype: str = "float32",
    device: str = "cpu",
    attn_implementation: str | None = "sdpa",
    trust_remote_code: bool = False,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> Policy:
    """Load any ``AutoModelForImageTextToText`` + ``AutoProcessor`` from a hub id or a local directory.

    ``"vlmrl-tiny-base"`` names the tiny base shipped inside the package (see its model card).

    The processor is loaded with left padding: batched generation appends to the right end.
    ``min_pixels`` / ``max_pixels`` bound the image area the processor resizes to (Qwen2-VL-family
    processors' own keywords, as EasyR1's ``data.min_pixels`` / ``max_pixels``); None keeps the
    processor's setting. A saved checkpoint keeps them in its processor config.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"model.dtype: unknown value {dtype!r}; allowed: {sorted(_DTYPES)}")
    src = resolve_model_path(name_or_path)
    local = Path(src)
    if (src.startswith((".", "/")) or local.exists()) and not (local / "config.json").exists():
        raise FileNotFoundError(
            f"model path {src!r} has no config.json; make one with `vlmrl make-tiny {src}` or give a hub id"
        )
    kwargs: dict[str, Any] = {"dtype": _DTYPES[dtype], "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(src, **kwargs).to(device)
    pixels = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    processor = AutoProcessor.from_pretrained(src, trust_remote_code=trust_remote_code, **pixels)
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return Policy(model=model, processor=processor)
