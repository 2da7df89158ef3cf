"""Prompt encoding and the prompt+completion inputs of the training forward.

The rule this file exists for (docs/facts.md): *every* processor output reaches the training
forward. Token-aligned outputs (``input_ids``, ``attention_mask``, ``mm_token_type_ids`` and
any future one shaped ``[B, P]``) are extended over the completion (with the completion mask
for ``attention_mask``, zeros otherwise); image- and video-aligned ones (``pixel_values``,
``image_grid_thw``, ``pixel_values_videos``, ``video_grid_thw``, ``second_per_grid_ts``:
:mod:`vlmrl.rollout.media`) are gathered per prompt. An output we do not know how to carry is an error,
never silently dropped: dropping ``mm_token_type_ids`` cost up to 8 nats per token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vlmrl.algos import token_logprobs
from vlmrl.data.prompts import build_messages
from vlmrl.data.sample import Sample, Video
from vlmrl.rollout.media import COUNT_KEYS, IMAGES, MEDIA_KEYS, VIDEOS, gather_media, media_rows


class PromptInputs(dict):
    """Processor outputs of B prompts (a plain ``dict`` of tensors), plus what made them.

    ``texts`` (chat-templated prompts) and ``images`` (per prompt, PIL) ride along as attributes
    for engines that tokenize and process images themselves (vLLM); copies made with ``{**d}`` or
    ``dict(d)`` drop them, which is fine after generation.
    """

    texts: list[str]
    images: list[list[Any]]


def encode_prompts(
    processor, messages: list[list[dict]], images: list[list[Any]], videos: list[list[Video]] | None = None
) -> PromptInputs:
    """Chat-template and process B prompts, left-padded. ``images[b]`` are prompt b's images in
    order, ``videos[b]`` its videos (frames with their sampling rate, passed to the processor as
    ``video_metadata`` so ``second_per_grid_ts`` is the video's own)."""
    texts = [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    flat = [im for ims in images for im in ims]
    flat_v = [v for vs in videos or [] for v in vs]
    extra: dict[str, Any] = {}
    if flat_v:
        from transformers.video_utils import VideoMetadata

        extra["videos"] = [v.frames for v in flat_v]
        extra["video_metadata"] = [
            VideoMetadata(
                total_num_frames=len(v.frames), fps=v.fps, frames_indices=list(range(len(v.frames)))
            )
            for v in flat_v
        ]
    enc = processor(text=texts, images=flat or None, return_tensors="pt", padding=True, **extra)
    out = PromptInputs({k: v for k, v in enc.items() if isinstance(v, torch.Tensor)})
    out["images_per_prompt"] = torch.tensor([len(ims) for ims in images], dtype=torch.long)
    if flat_v:
        out["videos_per_prompt"] = torch.tensor([len(vs) for vs in videos or []], dtype=torch.long)
    out.texts, out.images = texts, [list(ims) for ims in images]
    return out


@dataclass
class RolloutBatch:
    """N = B·G sampled completions of B prompts.

    ``prompt_index[i]`` says which prompt rollout i continues (its group); completion tensors are
    right-padded to the longest completion C; ``completion_mask`` is 1 on model tokens that count
    in the loss (including the closing EOS), 0 on padding and masked rollouts.
    """

    prompt_inputs: dict[str, torch.Tensor]  # processor outputs for B prompts (+ images_per_prompt)
    prompt_index: torch.Tensor  # [N] long
    completion_ids: torch.Tensor  # [N, C] long
    completion_mask: torch.Tensor  # [N, C] float
    sampler_logprobs: torch.Tensor  # [N, C] float, log π_old(token) under the sampling temperature
    completion_lengths: torch.Tensor  # [N] long, tokens produced incl. the stop token
    finish_reasons: list[str]  # "stop" | "length" per rollout
    texts: list[str] = field(default_factory=list)
    # Multi-turn rollouts (vlmrl.rollout.multiturn): images the environment added inside the
    # completion, per rollout in order of appearance (None: none), and completion-aligned values of
    # token-aligned processor outputs (e.g. mm_token_type_ids = 1 on a crop's image tokens) [N, C].
    # None everywhere = single-turn: the completion is text only.
    extra_pixel_values: list[torch.Tensor | None] | None = None
    extra_image_grid_thw: list[torch.Tensor | None] | None = None
    completion_token_types: dict[str, torch.Tensor] | None = None
    # Asynchronous rollouts (vlmrl.rollout.async_worker) sampled by weights older than the update's:
    # log μ of the behaviour policy [N, C], for the off-policy correction (vlmrl.algos.offpolicy).
    # None: the sampler was the policy the update starts from (every synchronous batch).
    behaviour_logprobs: torch.Tensor | None = None

    @property
    def has_extras(self) -> bool:
        """Whether some rollout carries environment images or token types in its completion."""
        return self.extra_pixel_values is not None or self.completion_token_types is not None

    @property
    def size(self) -> int:
        return int(self.prompt_index.numel())


def encode_samples(processor, samples: list[Sample], template: str) -> PromptInputs:
    """:func:`encode_prompts` of samples as they are: each one's messages under ``template``, its
    images and its videos (the one place that pairs a sample with its media)."""
    return encode_prompts(
        processor,
        [build_messages(s, template) for s in samples],
        [s.images for s in samples],
        [s.videos for s in samples],
    )


def training_inputs(
    batch: RolloutBatch, rows: torch.Tensor | list[int]
) -> tuple[dict[str, torch.Tensor], int]:
    """Model inputs for prompt + completion of the chosen rollouts, and the completion length C.

    Left-padding columns shared by all chosen rows are trimmed: they change nothing (masked)
    and cost compute.
    """
    rows = torch.as_tensor(rows, dtype=torch.long)
    pidx = batch.prompt_index[rows]  # [n]
    comp = batch.completion_ids[rows]  # [n, C]
    attn_c = _valid_tokens(batch, rows)
    pi = batch.prompt_inputs
    n_prompts, p_len = pi["input_ids"].shape
    out: dict[str, torch.Tensor] = {}
    for key, val in pi.items():
        if key in COUNT_KEYS or key in MEDIA_KEYS:
            continue
        if val.dim() >= 2 and val.shape[0] == n_prompts and val.shape[1] == p_len:
            head = val[pidx]
            if key == "input_ids":
                tail = comp
            elif key == "attention_mask":
                tail = attn_c.to(val.dtype)
            elif batch.completion_token_types is not None and key in batch.completion_token_types:
                tail = batch.completion_token_types[key][rows].to(val.dtype)  # env turns' image tokens
            else:
                tail = torch.zeros((len(rows), comp.shape[1], *val.shape[2:]), dtype=val.dtype)
            out[key] = torch.cat([head, tail], dim=1)
        else:
            raise ValueError(
                f"processor output {key!r} with shape {tuple(val.shape)} is neither token-aligned [B, P] nor "
                f"one of {MEDIA_KEYS}; vlmrl does not know how to carry it to the training forward"
            )
    if "pixel_values" in pi:
        pix, grids = media_rows(pi, IMAGES)
        sel = pidx.tolist()
        extra_pix = batch.extra_pixel_values or [None] * batch.size
        extra_grid = batch.extra_image_grid_thw or [None] * batch.size
        # each row's images in order of appearance: its prompt's, then those its completion added
        pv, gr = [], []
        for r, p in zip(rows.tolist(), sel, strict=True):
            pv.append(pi["pixel_values"][pix[p]])
            gr.append(pi["image_grid_thw"][grids[p]])
            if extra_pix[r] is not None:
                pv.append(extra_pix[r].to(pi["pixel_values"].dtype))
                gr.append(extra_grid[r])
        out["pixel_values"] = torch.cat(pv, dim=0)
        out["image_grid_thw"] = torch.cat(gr, dim=0)
    out.update(gather_media(pi, pidx.tolist(), (VIDEOS,)))  # videos come only with prompts
    # trim left padding common to every row
    keep_from = int((out["attention_mask"].cumsum(1) == 0).all(0).sum())
    if keep_from:
        for key in list(out):
            if key not in MEDIA_KEYS:
                out[key] = out[key][:, keep_from:]
    return out, comp.shape[1]


def _valid_tokens(batch: RolloutBatch, rows: torch.Tensor) -> torch.Tensor:
    """[n, C] bool: tokens the model produced (up to and incl. the stop token), loss-masked or not."""
    width = batch.completion_ids.shape[1]
    return batch.completion_lengths[rows].unsqueeze(1) > torch.arange(width).unsqueeze(0)


def completion_logprobs(
    model, inputs: dict[str, torch.Tensor], completion_ids: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(token) for each completion token, and the logits they came from.

    Only the last C+1 positions' logits are computed (``logits_to_keep``): position t predicts t+1.
    """
    c = completion_ids.shape[1]
    dev = next(model.parameters()).device  # rollouts live on the CPU; the model may be on a GPU
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    completion_ids = completion_ids.to(dev)
    out = model(**inputs, use_cache=False, logits_to_keep=c + 1)
    logits = out.logits[:, -(c + 1) : -1, :].float() / temperature  # [n, C, V]
    return token_logprobs(logits, completion_ids), logits


def batch_from_completions(
    prompt_inputs: dict[str, torch.Tensor],
    completions: list[list[int]],
    pad_id: int,
    prompt_index: list[int] | None = None,
) -> RolloutBatch:
    """A RolloutBatch from given completion token ids (SFT targets, replayed logs)."""
    width = max(len(c) for c in completions)
    ids = torch.full((len(completions), width), pad_id, dtype=torch.long)
    for i, c in enumerate(completions):
        ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
    lengths = torch.tensor([len(c) for c in completions], dtype=torch.long)
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()
    index = torch.tensor(
        prompt_index if prompt_index is not None else range(len(completions)), dtype=torch.long
    )
    return RolloutBatch(
        prompt_inputs, index, ids, mask, torch.zeros_like(mask), lengths, ["stop"] * len(completions)
    )


def select_prompts(batch: RolloutBatch, prompts: list[int]) -> RolloutBatch:
    """The rollouts of the chosen prompts (groups), as a batch of its own (prompts renumbered 0..k-1)."""
    pi = batch.prompt_inputs
    n_prompts = pi["input_ids"].shape[0]
    sel = torch.tensor(prompts, dtype=torch.long)
    out: dict[str, torch.Tensor] = {}
    for key, val in pi.items():
        if key not in MEDIA_KEYS and val.shape[0] == n_prompts:
            out[key] = val[sel]
    out.update(gather_media(pi, prompts))
    rows = torch.cat([(batch.prompt_index == p).nonzero().flatten() for p in prompts])
    renumber = {p: i for i, p in enumerate(prompts)}
    return RolloutBatch(
        prompt_inputs=out,
        prompt_index=torch.tensor([renumber[int(p)] for p in batch.prompt_index[rows]], dtype=torch.long),
        completion_ids=batch.completion_ids[rows],
        completion_mask=batch.completion_mask[rows],
        sampler_logprobs=batch.sampler_logprobs[rows],
        completion_lengths=batch.completion_lengths[rows],
        finish_reasons=[batch.finish_reasons[i] for i in rows.tolist()],
        texts=[batch.texts[i] for i in rows.tolist()] if batch.texts else [],
        behaviour_logprobs=None if batch.behaviour_logprobs is None else batch.behaviour_logprobs[rows],
        **_take_extras(batch, rows.tolist()),
    )


def _take_extras(batch: RolloutBatch, rows: list[int]) -> dict:
    """The multi-turn extras of the chosen rollouts (None stays None)."""
    return {
        "extra_pixel_values": [batch.extra_pixel_values[i] for i in rows]
        if batch.extra_pixel_values is not None
        else None,
        "extra_image_grid_thw": [batch.extra_image_grid_thw[i] for i in rows]
        if batch.extra_image_grid_thw is not None
        else None,
        "completion_token_types": {k: v[rows] for k, v in batch.completion_token_types.items()}
        if batch.completion_token_types is not None
        else None,
    }


def _pad_to(x: torch.Tensor, width: int, value: int | float, left: bool) -> torch.Tensor:
    extra = width - x.shape[1]
    if extra <= 0:
        return x
    pad = torch.full((x.shape[0], extra, *x.shape[2:]), value, dtype=x.dtype)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


def concat_batches(batches: list[RolloutBatch], pad_id: int) -> RolloutBatch:
    """One batch from several (e.g. DAPO refill rounds): prompts left-padded, completions right-padded."""
    p_len = max(b.prompt_inputs["input_ids"].shape[1] for b in batches)
    c_len = max(b.completion_ids.shape[1] for b in batches)
    keys = batches[0].prompt_inputs.keys()
    prompt_inputs: dict[str, torch.Tensor] = {}
    for key in keys:
        vals = [b.prompt_inputs[key] for b in batches]
        if key in MEDIA_KEYS or key in COUNT_KEYS:
            prompt_inputs[key] = torch.cat(vals, dim=0)
        else:
            value = pad_id if key == "input_ids" else 0
            prompt_inputs[key] = torch.cat([_pad_to(v, p_len, value, left=True) for v in vals], dim=0)
    index, total = [], 0
    for b in batches:
        index.append(b.prompt_index + total)
        total += b.prompt_inputs["input_ids"].shape[0]
    return RolloutBatch(
        prompt_inputs=prompt_inputs,
        prompt_index=torch.cat(index),
        completion_ids=torch.cat([_pad_to(b.completion_ids, c_len, pad_id, left=False) for b in batches]),
        completion_mask=torch.cat([_pad_to(b.completion_mask, c_len, 0.0, left=False) for b in batches]),
        sampler_logprobs=torch.cat([_pad_to(b.sampler_logprobs, c_len, 0.0, left=False) for b in batches]),
        completion_lengths=torch.cat([b.completion_lengths for b in batches]),
        finish_reasons=[r for b in batches for r in b.finish_reasons],
        texts=[t for b in batches for t in b.texts],
        **_concat_extras(batches, c_len),
    )


def _concat_extras(batches: list[RolloutBatch], c_len: int) -> dict:
    """The multi-turn extras of several batches, one list / [N, C] tensor (None if no batch has any)."""
    out: dict = {"extra_pixel_values": None, "extra_image_grid_thw": None, "completion_token_types": None}
    if any(b.extra_pixel_values is not None for b in batches):
        out["extra_pixel_values"] = [x for b in batches for x in (b.extra_pixel_values or [None] * b.size)]
        out["extra_image_grid_thw"] = [
            x for b in batches for x in (b.extra_image_grid_thw or [None] * b.size)
        ]
    keys = {k for b in batches for k in (b.completion_token_types or {})}
    if keys:
        out["completion_token_types"] = {
            k: torch.cat(
                [
                    _pad_to(b.completion_token_types[k], c_len, 0, left=False)
                    if b.completion_token_types and k in b.completion_token_types
                    else torch.zeros((b.size, c_len), dtype=torch.long)
                    for b in batches
                ]
            )
            for k in keys
        }
    return out
