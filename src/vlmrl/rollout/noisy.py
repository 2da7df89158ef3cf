"""NoisyRollout: part of each group is sampled from a noised image; the update sees the clean one.

NoisyRollout (Liu et al. 2025, arXiv:2504.13055): for each prompt, ``n₁`` completions are sampled
from the clean image ``I`` and ``n₂`` from a distorted copy ``T_α(I)``; all ``n₁ + n₂`` share one
group (one reward baseline), and the policy update conditions *every* completion on the clean
image. Noisy rollouts add vision-driven diversity to exploration (a perception slip leads to a
different reasoning path, and the reward tells whether it mattered) at no change to the
objective. The distortion is annealed so late training is on-policy again.

What we implement, and how it departs from the paper:
- ``rollout.noisy_frac = f``: of the group's ``G = rollout.n`` completions, ``⌊f·G⌋`` come from
  the noisy image and the rest from the clean one (the paper uses ``n₁ = n₂`` on top of ``G``;
  here the group size, and so the step's cost, stays ``G``);
- the distortion is additive Gaussian pixel noise ``x' = clip(x + σ_t·ε, 0, 1)`` on the image in
  ``[0, 1]`` (the paper uses a diffusion forward step ``√ᾱ·x + √(1−ᾱ)·ε``, which also dims the
  image), with ``σ_t = rollout.noise_std · d(t / rollout.noise_anneal_steps)`` and ``d`` the
  schedule of :func:`noise_scale` (the paper's default is a sigmoid decay);
- the noise is a pure function of ``(train.seed, step, sample id, image index)``, never global
  RNG state, so a resumed run draws the same noisy images (and so does any number of ranks);
- the old log-probs of a noisy rollout must be those of the clean-image policy (the update's
  ratio is ``π_θ(o|I) / π_old(o|I)``): on-policy the update uses ``logp.detach()`` and never
  reads them; when it does (``train.epochs`` / ``train.minibatches`` > 1, or a KL to the
  reference that reads the sampler's log-probs) they are recomputed with one no-grad forward on
  the clean image before the update (:func:`clean_logprobs`).
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vlmrl.config import TrainConfig
from vlmrl.data import Sample, build_messages
from vlmrl.rollout.batch import RolloutBatch, encode_prompts
from vlmrl.rollout.shared_prompt import rollout_logprobs

#: Mixed into the seed so the noise never shares a stream with another seeded consumer.
_STREAM = 0x401517
#: Steepness of the ``sigmoid`` schedule (its value at the midpoint is 1/2).
SIGMOID_K = 10.0


def noise_scale(step: int, anneal_steps: int, schedule: str) -> float:
    """``d(x)``, ``x = min(step / anneal_steps, 1)``: the fraction of ``noise_std`` used at ``step``.

    ``constant``: 1. ``linear``: ``1 − x``. ``cosine``: ``(1 + cos πx) / 2``. ``sigmoid``:
    ``(s(k(½ − x)) − s(−k/2)) / (s(k/2) − s(−k/2))`` with the logistic ``s`` and ``k = 10`` — the
    paper's sigmoid decay, rescaled to be exactly 1 at ``x = 0`` and 0 at ``x = 1``. Every
    schedule but ``constant`` is 0 from ``anneal_steps`` on.
    """
    x = min(max(step, 0) / anneal_steps, 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - x
    if schedule == "cosine":
        return 0.0 if x >= 1.0 else 0.5 * (1.0 + math.cos(math.pi * x))
    if schedule == "sigmoid":
        s = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
        lo, hi = s(-SIGMOID_K / 2), s(SIGMOID_K / 2)
        return max(0.0, (s(SIGMOID_K * (0.5 - x)) - lo) / (hi - lo))
    raise ValueError(f"rollout.noise_schedule: {schedule!r}; allowed: constant, linear, cosine, sigmoid")


def noise_std_at(cfg: TrainConfig, step: int) -> float:
    """``σ_t`` of step ``step`` (0-based); ``rollout.noise_anneal_steps`` None means ``train.steps``."""
    r = cfg.rollout
    steps = r.noise_anneal_steps if r.noise_anneal_steps is not None else cfg.train.steps
    return r.noise_std * noise_scale(step, max(steps, 1), r.noise_schedule)


def add_pixel_noise(image: Image.Image, std: float, rng: np.random.Generator) -> Image.Image:
    """``clip(x + std·ε, 0, 1)`` on the RGB image scaled to ``[0, 1]``, back to 8 bits."""
    x = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
    x = np.clip(x + std * rng.standard_normal(x.shape, dtype=np.float32), 0.0, 1.0)
    return Image.fromarray(np.rint(x * 255.0).astype(np.uint8), mode="RGB")


def noisy_images(samples: list[Sample], std: float, seed: int, step: int) -> list[list[Image.Image]]:
    """Each sample's images with noise seeded by ``(seed, step, sample id, image index)``."""
    out = []
    for s in samples:
        key = zlib.crc32(s.id.encode())
        out.append(
            [
                add_pixel_noise(im, std, np.random.default_rng([seed % 2**32, step, key, i, _STREAM]))
                for i, im in enumerate(s.images)
            ]
        )
    return out


def merge_groups(clean: RolloutBatch, noisy: RolloutBatch, pad_id: int) -> tuple[RolloutBatch, torch.Tensor]:
    """One batch holding both parts of every group, with ``clean``'s prompt inputs.

    Rows are ordered prompt by prompt (a prompt's clean rollouts, then its noisy ones) and
    ``prompt_index`` names each row's prompt. Returns the batch and ``is_noisy [N]`` (bool).
    The two encodings must agree on every token-aligned input (noise changes pixels, not tokens).
    """
    for key, val in clean.prompt_inputs.items():
        if key not in ("pixel_values",) and not torch.equal(val, noisy.prompt_inputs[key]):
            raise ValueError(f"NoisyRollout: the noisy image changed the prompt's {key!r} (only pixels may)")
    width = max(clean.completion_ids.shape[1], noisy.completion_ids.shape[1])

    def cat(a: torch.Tensor, b: torch.Tensor, value: float) -> torch.Tensor:
        return torch.cat([F.pad(t, (0, width - t.shape[1]), value=value) for t in (a, b)])  # [Nc+Nn, W]

    n_clean = clean.size
    rows_of = lambda b, p: (b.prompt_index == p).nonzero().flatten()  # noqa: E731
    order = torch.cat(
        [
            torch.cat([rows_of(clean, p), n_clean + rows_of(noisy, p)])
            for p in range(clean.prompt_inputs["input_ids"].shape[0])
        ]
    )  # [N]
    texts = clean.texts + noisy.texts
    merged = RolloutBatch(
        prompt_inputs=clean.prompt_inputs,
        prompt_index=torch.cat([clean.prompt_index, noisy.prompt_index])[order],
        completion_ids=cat(clean.completion_ids, noisy.completion_ids, pad_id)[order],
        completion_mask=cat(clean.completion_mask, noisy.completion_mask, 0.0)[order],
        sampler_logprobs=cat(clean.sampler_logprobs, noisy.sampler_logprobs, 0.0)[order],
        completion_lengths=torch.cat([clean.completion_lengths, noisy.completion_lengths])[order],
        finish_reasons=[(clean.finish_reasons + noisy.finish_reasons)[i] for i in order.tolist()],
        texts=[texts[i] for i in order.tolist()] if texts else [],
    )
    return merged, order >= n_clean


@torch.no_grad()
def clean_logprobs(
    model: torch.nn.Module, batch: RolloutBatch, rows: list[int], micro_batch: int, temperature: float
) -> RolloutBatch:
    """``batch`` with ``sampler_logprobs[rows]`` replaced by ``log π_θ(o | clean image)`` (no grad)."""
    lp = batch.sampler_logprobs.clone()  # [N, C]
    width = batch.completion_ids.shape[1]
    for start in range(0, len(rows), micro_batch):
        chunk = rows[start : start + micro_batch]
        out, _ = rollout_logprobs(model, batch, chunk, temperature)  # [n, C], as the update computes it
        valid = batch.completion_lengths[chunk].unsqueeze(1) > torch.arange(width)  # [n, C]
        lp[chunk] = (out * valid).to(lp.dtype)
    return dataclasses.replace(batch, sampler_logprobs=lp)


def needs_clean_logprobs(cfg: TrainConfig) -> bool:
    """Whether anything will read the sampler's log-probs: an off-policy update or a reference KL."""
    return cfg.train.epochs > 1 or cfg.train.minibatches > 1 or cfg.algo.kl_coef > 0


def noisy_rollouts(
    engine, policy, clean_enc: dict[str, torch.Tensor], samples: list[Sample], cfg: TrainConfig, step: int
) -> tuple[RolloutBatch, torch.Tensor, dict[str, float]]:
    """Sample each group's clean and noisy parts and merge them (see the module docstring).

    Returns the merged batch (clean prompt inputs), ``is_noisy [N]`` and ``{"rollout/noise_std"}``.
    """
    n = cfg.rollout.n
    n_noisy = cfg.rollout.noisy_count
    std = noise_std_at(cfg, step)
    noisy_enc = encode_prompts(
        policy.processor,
        [build_messages(s, cfg.data.template) for s in samples],
        noisy_images(samples, std, cfg.train.seed, step),
        [s.videos for s in samples],  # videos stay clean: NoisyRollout noises images
    )
    clean = engine.generate(clean_enc, n - n_noisy)
    noisy = engine.generate(noisy_enc, n_noisy)
    batch, is_noisy = merge_groups(clean, noisy, policy.tokenizer.pad_token_id)
    if needs_clean_logprobs(cfg):
        rows = is_noisy.nonzero().flatten().tolist()
        batch = clean_logprobs(policy.model, batch, rows, cfg.train.micro_batch, cfg.rollout.temperature)
    return batch, is_noisy, {"rollout/noise_std": std}


def noisy_reward_metrics(rewards: torch.Tensor, is_noisy: torch.Tensor) -> dict[str, float]:
    """Mean reward of the noisy and of the clean rollouts: ``reward/noisy``, ``reward/clean``."""
    return {
        "reward/noisy": float(rewards[is_noisy].mean()),
        "reward/clean": float(rewards[~is_noisy].mean()),
    }
