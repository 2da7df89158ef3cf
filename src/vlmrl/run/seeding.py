"""Seeds and generators: one place that seeds the global RNGs, and the explicit generators the
loop draws from instead of them.

The global RNGs are seeded once (:func:`seed_everything`) for whatever a library draws on its own
(weight init of new adapters, dropout); nothing the trainer samples comes from them. Sampling
draws from the trainer's own ``torch.Generator`` (:func:`sampling_generator`), whose state goes in
every checkpoint under :func:`generator_key`, so a resume continues the same stream and a test can
hold two trainers side by side without one's draws moving the other's. Per-step draws that need
no state (PAPO's masks, the minibatch permutation) use :func:`derived_generator`: a pure function
of ``(seed, keys…)``, the same after a resume and on any rank.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from vlmrl.run.checkpoint import read_weights

#: Mixed into the sampling generators' seeds so they never share a stream with another consumer.
_SAMPLING_STREAM = 0x5A3D


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on ``device`` that depends only on ``(seed, *keys)``, never on global RNG state
    (``numpy.random.SeedSequence`` mixes the keys, so nearby keys give unrelated streams)."""
    state = np.random.SeedSequence([seed % 2**32, *keys]).generate_state(1)[0]
    return torch.Generator(device=device).manual_seed(int(state))


def generator_key(rank: int, generator: torch.Generator) -> str:
    """The name of rank ``rank``'s sampling generator state in ``rng.safetensors``. The device
    type is part of it: a CPU state (Mersenne Twister) and a CUDA one (Philox) do not convert."""
    return f"rank{rank}.sampler_{generator.device.type}"


def sampling_generator(
    seed: int, rank: int, step: int, device: str | torch.device, saved: dict[str, torch.Tensor] | None = None
) -> torch.Generator:
    """Rank ``rank``'s sampling generator on ``device`` (where the model's logits are, so the
    draws need no copy): the state saved for it (``saved``: a checkpoint's ``rng.safetensors``),
    else a fresh one from ``(seed, rank, step)``. So a resume at the same world size is exact, and
    at another one the ranks that were there continue their streams while new ranks start new ones."""
    gen = derived_generator(seed, _SAMPLING_STREAM, rank, step, device=device)
    state = (saved or {}).get(generator_key(rank, gen))
    if state is not None:
        gen.set_state(state)
    return gen


def checkpoint_rng(ckpt: Path | None) -> dict[str, torch.Tensor]:
    """The generator states a checkpoint holds (``{}`` without one)."""
    if ckpt is None:
        return {}
    return read_weights(Path(ckpt) / "rng.safetensors")
