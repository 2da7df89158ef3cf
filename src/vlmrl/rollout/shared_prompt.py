"""The training forward with each prompt (and its images) run once per group, not once per completion.

A GRPO micro-batch holds G completions of the same prompt. The plain forward
(:func:`vlmrl.rollout.batch.completion_logprobs` over :func:`training_inputs`) runs the vision
tower and the language model over prompt + completion for every row: the prompt's image is
encoded G times and its tokens go through the LM G times. Here instead:

1. **prompt pass** — the U distinct prompts of the micro-batch (with their images) go through the
   model once, with gradients, keeping the KV cache and the last position's logits;
2. the cache rows are repeated to the n completions (a broadcast for whole groups in order, else
   ``index_select``: differentiable, so the gradient of every completion flows back into the one
   shared prompt pass and sums there);
3. **completion pass** — the completion tokens (all but the last, which predicts nothing we
   score) attend to the gathered prompt cache.

Same attention, same positions, same parameters: the log-probs and gradients equal the plain
forward's up to float summation order (tested to 1e-5). Cost: vision tower U/n of the plain one,
LM tokens ``U·P + n·(C − 1)`` instead of ``n·(P + C)``.

Positions: Qwen2-VL-family models place text and image tokens with 3-D M-RoPE from
``get_rope_index`` over the whole sequence (``docs/facts.md``: ``mm_token_type_ids`` matters).
We call the model's own ``get_rope_index`` on the full prompt + completion rows, exactly as the
plain forward does internally, and hand each pass its slice of those ``position_ids``.

Where this does not apply it falls back to the plain forward (:func:`rollout_logprobs` decides):
a model type not in :data:`SHARED_PROMPT_MODELS`, gradient checkpointing (recomputation would
update the cache twice), a model wrapped by DDP/FSDP, processor outputs other than the ones listed
in :data:`_KNOWN_KEYS`, multi-turn batches (images inside the completion:
``RolloutBatch.has_extras``), or micro-batches with no repeated prompt (nothing to share).
"""

from __future__ import annotations

import inspect

import torch

from vlmrl.algos import token_logprobs
from vlmrl.rollout.batch import RolloutBatch, completion_logprobs, training_inputs
from vlmrl.rollout.media import COUNT_KEYS, MEDIA_KEYS, gather_media

#: Model types whose positions we can rebuild with ``get_rope_index`` (tested on qwen2_5_vl).
SHARED_PROMPT_MODELS = ("qwen2_vl", "qwen2_5_vl")
_KNOWN_KEYS = {"input_ids", "attention_mask", "mm_token_type_ids", *COUNT_KEYS, *MEDIA_KEYS}


def _rope_owner(model) -> torch.nn.Module | None:
    """The submodule that computes M-RoPE positions (``Qwen2_5_VLModel`` under the LM head / peft)."""
    for m in model.modules():
        if callable(getattr(m, "get_rope_index", None)):
            return m
    return None


def rope_positions(
    owner: torch.nn.Module, inputs: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own M-RoPE positions ``[3, N, L]`` and rope deltas ``[N, 1]`` for ``inputs``
    (``owner``: :func:`_rope_owner`'s module), as its forward would compute them."""
    return owner.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs.get("image_grid_thw"),
        video_grid_thw=inputs.get("video_grid_thw"),
        second_per_grid_ts=inputs.get("second_per_grid_ts"),
        attention_mask=inputs["attention_mask"],
    )


def _cache_kwarg(owner: torch.nn.Module) -> str:
    """``cache`` (transformers ≥ 5.2x) or ``past_key_values`` (older 5.x), whichever forward takes."""
    return "cache" if "cache" in inspect.signature(owner.forward).parameters else "past_key_values"


def tensor_layers(cache) -> bool:
    """Whether ``cache`` holds per-layer ``keys``/``values`` tensors (transformers' dynamic cache),
    which the row gathering here and the sampler's :class:`~vlmrl.rollout.prefix_attention.PrefixCache`
    read directly."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(isinstance(getattr(x, "keys", None), torch.Tensor) for x in layers)


def _gather_rows(cache, index: torch.Tensor) -> None:
    """Cache rows ``[U, H, P, D] -> [n, H, P, D]`` by ``index``, differentiably.

    Whole groups in order broadcast (``expand``; backward: a sum); otherwise ``index_select``
    (backward: an ``index_add``, ~0.7 ms here), where the cache's own ``batch_select_indices``
    (advanced indexing) scatters with accumulation (~30 ms) and a tensor-count
    ``repeat_interleave`` is slower still. Caches without per-layer ``keys``/``values`` use
    ``batch_select_indices``.
    """
    if not tensor_layers(cache):
        cache.batch_select_indices(index)
        return
    layers = cache.layers
    u, n = int(index.max()) + 1, index.numel()
    index = index.to(layers[0].keys.device)
    if n % u == 0 and torch.equal(index, torch.arange(u, device=index.device).repeat_interleave(n // u)):
        # whole groups side by side (what update.py makes): a broadcast, whose backward is a sum
        def take(t: torch.Tensor) -> torch.Tensor:
            return t.unsqueeze(1).expand(u, n // u, *t.shape[1:]).reshape(n, *t.shape[1:])
    else:

        def take(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, index)

    for x in layers:
        x.keys, x.values = take(x.keys), take(x.values)


def shared_prompt_supported(model, batch: RolloutBatch) -> bool:
    """Whether :func:`shared_prompt_logprobs` applies to this model and batch (else: plain forward)."""
    if getattr(getattr(model, "config", None), "model_type", None) not in SHARED_PROMPT_MODELS:
        return False  # also DDP (no .config)
    if any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()):
        return False  # HF activation checkpointing (any transformers 5.x name for enabling it)
    try:  # FSDP2 (fully_shard): forward twice before backward is not something we have tested
        from torch.distributed.fsdp import FSDPModule

        if isinstance(model, FSDPModule):
            return False
    except ImportError:  # pragma: no cover - torch without distributed
        pass
    if batch.has_extras:
        return False  # multi-turn: images inside the completion; the plain forward places them
    keys = set(batch.prompt_inputs)
    return keys <= _KNOWN_KEYS and "mm_token_type_ids" in keys and _rope_owner(model) is not None


def _prompt_pass(model, prompt: dict[str, torch.Tensor], position_ids: torch.Tensor):
    """The distinct prompts (with their images) through the model once, with gradients: the KV
    cache and the last position's logits. A function of its own so profiles can name it."""
    return model(**prompt, position_ids=position_ids, use_cache=True, logits_to_keep=1)


def shared_prompt_logprobs(
    model, batch: RolloutBatch, rows: torch.Tensor | list[int], temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """As ``completion_logprobs(model, *training_inputs(batch, rows))``: ``([n, C], [n, C, V])``.

    Each distinct prompt of ``rows`` runs once; see the module docstring for why it is exact.
    """
    rows = torch.as_tensor(rows, dtype=torch.long)
    dev = next(model.parameters()).device
    full, c = training_inputs(batch, rows)  # [n, L] token-aligned inputs (left padding trimmed)
    full = {k: v.to(dev) for k, v in full.items()}
    comp = batch.completion_ids[rows].to(dev)  # [n, C]
    n, length = full["input_ids"].shape
    p = length - c  # prompt width after trimming
    uniq, inv = torch.unique(batch.prompt_index[rows], return_inverse=True)  # [U], [n]
    first = torch.full((len(uniq),), n, dtype=torch.long).scatter_reduce(
        0, inv, torch.arange(n), reduce="amin"
    )  # [U] first row of each prompt
    owner = _rope_owner(model)
    pos, _ = rope_positions(owner, full)  # [3, n, L], what the plain forward computes for itself
    pos = pos.to(dev)
    inv, first = inv.to(dev), first.to(dev)
    prompt = {k: full[k][first, :p] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    prompt.update({k: v.to(dev) for k, v in gather_media(batch.prompt_inputs, uniq.tolist()).items()})
    out_p = _prompt_pass(model, prompt, pos[:, first, :p])
    head = out_p.logits[:, -1:, :].index_select(0, inv)  # [n, 1, V] predicts completion token 0
    if c == 1:
        logits = head
    else:
        cache = out_p.cache if getattr(out_p, "cache", None) is not None else out_p.past_key_values
        _gather_rows(cache, inv)  # [U, ...] -> [n, ...]
        out_c = model(
            input_ids=comp[:, :-1],
            attention_mask=full["attention_mask"][:, :-1],
            position_ids=pos[:, :, p:-1],
            use_cache=True,
            **{_cache_kwarg(owner): cache},
        )
        logits = torch.cat([head, out_c.logits], dim=1)  # [n, C, V]; position t predicts token t
    logits = logits.float() / temperature
    return token_logprobs(logits, comp), logits


def rollout_logprobs(
    model, batch: RolloutBatch, rows: torch.Tensor | list[int], temperature: float = 1.0, shared: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π of the chosen rollouts' completion tokens ``[n, C]`` and their logits ``[n, C, V]``.

    The shared-prompt forward when it applies and some prompt repeats among ``rows``; else the
    plain one. ``shared=False`` forces the plain forward.
    """
    rows_t = torch.as_tensor(rows, dtype=torch.long)
    repeats = batch.prompt_index[rows_t].unique().numel() < rows_t.numel()
    if shared and repeats and shared_prompt_supported(model, batch):
        return shared_prompt_logprobs(model, batch, rows_t, temperature)
    inputs, _ = training_inputs(batch, rows_t)
    return completion_logprobs(model, inputs, batch.completion_ids[rows_t], temperature)
