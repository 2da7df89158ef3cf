"""PAPO in the update: the patch-masked copy of a rollout batch and the second forward on it.

``algo.papo_coef = γ > 0`` (Wang et al. 2025, Perception-Aware Policy Optimization): for each
micro-batch the update runs the same prompt + completion once more with a masked image and adds
``− γ · KL_prcp + η · (H_real + H_masked)`` (:func:`vlmrl.algos.perception.papo_loss`). With
``γ = 0`` nothing here runs: no masked batch, no extra forward.

The mask works on what the model actually consumes. A Qwen2/2.5-VL processor emits
``pixel_values`` as one row per 14 px patch (flattened channels × temporal × patch²), ordered so
that each run of ``merge²`` consecutive rows is one merge group — the patches that become one
image token after the 2×2 merger (``image_grid_thw`` gives each image's ``t × h × w`` patches).
Masking draws, per image, exactly ``round(ratio · groups)`` merge groups without replacement and
sets their rows to 0, i.e. to the processor's mean colour (the values are already normalised),
so a masked region carries no information and the token layout is unchanged. PAPO blackens
random 14 px patches with probability 0.6; whole groups keep a masked token fully masked (a
partly visible token still leaks its content).

Each image's mask is a pure function of ``(train.seed, step, the image's pixels)``: one mask per
prompt, shared by its G completions and by every epoch / micro-batch of that step, the same
after a resume and whichever rank (of any number of processes) holds the prompt.
"""

from __future__ import annotations

import dataclasses
import zlib

import torch

from vlmrl.algos import entropy_from_logits, papo_loss
from vlmrl.rollout.batch import RolloutBatch
from vlmrl.rollout.shared_prompt import rollout_logprobs
from vlmrl.run.dist import SUM_KEYS
from vlmrl.run.seeding import derived_generator

#: PAPO's metrics: shares of the minibatch total, so summed (``vlmrl.run.dist.SUM_KEYS`` lists them).
PAPO_METRICS = tuple(k for k in SUM_KEYS if k.startswith("actor/papo_"))

#: Mixed into the seed so PAPO's masks never share a stream with another seeded consumer.
_STREAM = 0x9A90


def step_generator(seed: int, step: int, key: int = 0) -> torch.Generator:
    """A torch generator that depends only on ``(seed, step, key)`` (not on global RNG state)."""
    return derived_generator(seed, step, key, _STREAM)


def image_generators(
    pixel_values: torch.Tensor, grid_thw: torch.Tensor, seed: int, step: int
) -> list[torch.Generator]:
    """One generator per image, keyed by a CRC of its ``pixel_values`` rows (see the module docstring)."""
    out, row = [], 0
    for n in grid_thw.prod(-1).tolist():
        rows = pixel_values[row : row + n].detach().float().cpu().contiguous()
        out.append(step_generator(seed, step, zlib.crc32(rows.numpy().tobytes())))
        row += n
    return out


def merge_size(model: torch.nn.Module) -> int:
    """The vision merger's spatial size (2 for Qwen2/2.5-VL); 1 when the config does not say."""
    vision = getattr(getattr(model, "config", None), "vision_config", None)
    return int(getattr(vision, "spatial_merge_size", 1) or 1)


def patch_mask(
    grid_thw: torch.Tensor, ratio: float, merge: int, generators: list[torch.Generator]
) -> torch.Tensor:
    """Which ``pixel_values`` rows to mask, ``[sum_i t_i·h_i·w_i]`` bool (see the module docstring).

    Per image ``i`` (drawn with ``generators[i]``): ``round(ratio · groups)`` of its
    ``t·h·w / merge²`` groups, each ``merge²`` rows. An image whose grid does not divide by
    ``merge`` is masked patch by patch.
    """
    out = []
    for (t, h, w), generator in zip(grid_thw.tolist(), generators, strict=True):
        group = merge * merge if h % merge == 0 and w % merge == 0 else 1
        n_groups = t * h * w // group
        k = round(ratio * n_groups)
        hit = torch.zeros(n_groups, dtype=torch.bool)
        hit[torch.randperm(n_groups, generator=generator)[:k]] = True
        out.append(hit.repeat_interleave(group))  # [t·h·w]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def masked_batch(batch: RolloutBatch, ratio: float, merge: int, seed: int, step: int) -> RolloutBatch:
    """The same rollouts with each prompt's image patches masked (a copy; ``batch`` is untouched)."""
    pi = batch.prompt_inputs
    if "pixel_values" not in pi:
        return batch
    grid = pi["image_grid_thw"]
    gens = image_generators(pi["pixel_values"], grid, seed, step)
    rows = patch_mask(grid, ratio, merge, gens).to(pi["pixel_values"].device)
    pixels = pi["pixel_values"].masked_fill(rows.unsqueeze(-1), 0.0)  # [rows, C·T·p·p]
    return dataclasses.replace(batch, prompt_inputs={**pi, "pixel_values": pixels})


def papo_micro_batch(
    model: torch.nn.Module,
    masked: RolloutBatch,
    rows: list[int],
    logp: torch.Tensor,  # [n, C] real image, with grad
    entropy: torch.Tensor,  # [n, C] real image, with grad
    mask: torch.Tensor,  # [n, C]
    spec,
    tokens: torch.Tensor,
    seqs: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The masked forward of ``rows`` and PAPO's loss term for them (``actor/papo_*`` metrics).

    ``spec`` is the update's :class:`vlmrl.train.update.UpdateSpec`. The masked forward keeps its
    graph only when the masked entropy is penalised (``algo.papo_entropy_coef > 0``): inside the
    KL the masked log-probs are a constant target.
    """
    algo = spec.algo
    with torch.set_grad_enabled(torch.is_grad_enabled() and algo.papo_entropy_coef > 0):
        # the same forward as the real image's (shared prompt pass when it applies), masked pixels
        masked_logp, masked_logits = rollout_logprobs(model, masked, rows, spec.temperature)
        masked_entropy = entropy_from_logits(masked_logits)  # [n, C]
    loss, metrics = papo_loss(
        logp,
        masked_logp,
        entropy,
        masked_entropy,
        mask,
        algo.papo_coef,
        algo.papo_entropy_coef,
        estimator=algo.papo_kl_estimator,
        agg=spec.loss.agg,
        norm_const=spec.loss.norm_const,  # the token budget
        global_tokens=tokens,
        global_seqs=seqs,
    )
    return loss, {f"actor/{k}": v for k, v in metrics.items()}
