"""Load HF image-text-to-text models; build the tiny offline Qwen2.5-VL."""

from vlmrl.models.loading import Policy, load_policy
from vlmrl.models.tiny import TinyConfig, make_tiny

__all__ = ["Policy", "TinyConfig", "load_policy", "make_tiny"]
