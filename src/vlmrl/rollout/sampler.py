"""Sampling G completions per prompt with one prefill per prompt: the HF engine's fast path.

``model.generate(num_return_sequences=G)`` repeats every prompt G times *before* the prefill, so
the language model reads each prompt (image tokens included) G times. Here the B prompts are
prefilled once, each prompt's KV cache is kept once and shared by its G completions during
decoding (:mod:`vlmrl.rollout.prefix_attention`; caches without per-layer tensors, and models with
sliding-window layers, are repeated to B·G rows instead), and a plain decode loop samples:

    z_t      = logits of the last position                               # [N, V]
    logp_t   = log_softmax(z_t / T)[token]   (what the loss assumes: raw logits, no processors)
    sample  ~ softmax(top_p(ban(z_t / T)))   (banned vision tokens at -inf, then nucleus)

— the distribution ``generate`` draws from with ``bad_words_ids`` + temperature + ``top_p`` and
``top_k = 0``, and the same log-probs it returns with ``output_logits``. Finished rows keep
receiving ``pad_id`` (as ``generate`` does); the loop stops when every row has hit a stop token
(on every rank, when the model is FSDP-sharded: :func:`lockstep`).

Positions: Qwen2-VL-family models place tokens with 3-D M-RoPE from ``get_rope_index``; a
generated text token sits at ``valid prompt tokens + rope_delta + t`` on all three axes (the
model's own rule; the training forward recomputes it over the full sequence, and the tests hold
sampler and training log-probs equal). Models this does not cover use ``generate``
(:func:`fast_sampling_supported`).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from vlmrl.rollout.media import COUNT_KEYS, MEDIA_KEYS
from vlmrl.rollout.prefix_attention import PrefixCache, prefix_decoding
from vlmrl.rollout.shared_prompt import (
    SHARED_PROMPT_MODELS,
    _cache_kwarg,
    _rope_owner,
    rope_positions,
    tensor_layers,
)

_KNOWN_KEYS = {"input_ids", "attention_mask", "mm_token_type_ids", *MEDIA_KEYS}


def fast_sampling_supported(model, prompt_inputs: dict[str, torch.Tensor]) -> bool:
    """Whether :func:`sample` applies (a Qwen2-VL-family model; text, image and video prompts)."""
    if getattr(getattr(model, "config", None), "model_type", None) not in SHARED_PROMPT_MODELS:
        return False
    keys = set(prompt_inputs) - set(COUNT_KEYS)
    return keys <= _KNOWN_KEYS and "mm_token_type_ids" in keys and _rope_owner(model) is not None


def lockstep(model) -> bool:
    """Whether ``model`` is FSDP2-sharded over several ranks: then each forward all-gathers its
    weights, a collective, so every rank must run the same number of decode steps (``train.strategy:
    fsdp``). Sampling then stops when *every* rank's rows have stopped; a finished row keeps
    receiving ``pad_id``, so the extra steps change no completion."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule) and dist.is_initialized() and dist.get_world_size() > 1


def _any_running(running: torch.Tensor, synced: bool) -> bool:
    """Whether a row is still sampling here or, when ``synced``, on any rank (one tiny all-reduce)."""
    if not synced:
        return bool(running.any())
    import torch.distributed as dist

    flag = running.any().to(torch.int32).reshape(1)  # on the model's device: cpu for gloo, cuda for nccl
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``top_p`` (at least one); others -inf."""
    sorted_scores, order = scores.sort(dim=-1)  # ascending  [N, V]
    cum = sorted_scores.softmax(-1).cumsum(-1)  # [N, V]
    drop = cum <= (1 - top_p)
    drop[:, -1] = False  # the most likely token always stays
    return scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))


def _prefill(model, owner, inputs: dict[str, torch.Tensor]):
    """The B prompts through the model once (images included): ``(output with the KV cache and the
    last position's logits, rope deltas [B, 1])``. A function of its own so profiles can name it."""
    pos, delta = rope_positions(owner, inputs)  # [3, B, P], [B, 1]
    out = model(**inputs, position_ids=pos.to(model.device), use_cache=True, logits_to_keep=1)
    return out, delta


@torch.no_grad()
def sample(
    model,
    prompt_inputs: dict[str, torch.Tensor],
    n: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    greedy: bool,
    stop_ids: list[int],
    banned: list[int],
    pad_id: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` completions of each of the B prompts, ``[B·n, C]`` token ids (rows grouped by prompt,
    pad after the stop token) and ``[B·n, C]`` log-probs ``log_softmax(z / T)`` of those tokens
    (``T = 1`` when greedy). ``C ≤ max_new_tokens``: the loop ends once every row has stopped.
    Every draw comes from ``generator`` (on the model's device; the engine passes its own)."""
    device = model.device
    inputs = {k: v.to(device) for k, v in prompt_inputs.items() if k in _KNOWN_KEYS}
    owner = _rope_owner(model)
    mask = inputs["attention_mask"]  # [B, P]
    out, delta = _prefill(model, owner, inputs)
    cache_kw = _cache_kwarg(owner)
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    text_config = model.config.get_text_config(decoder=True)
    shared = tensor_layers(cache) and not getattr(text_config, "use_sliding_window", False)
    if shared:  # the prompt's keys kept once per prompt (see prefix_attention)
        cache = PrefixCache(cache, mask, n, max_new_tokens)
    else:
        cache.batch_repeat_interleave(n)  # [B, ...] -> [B·n, ...]
    logits = out.logits[:, -1].repeat_interleave(n, dim=0)  # [N, V]
    mask = mask.repeat_interleave(n, dim=0)  # [N, P]
    next_pos = (mask.sum(1) + delta.to(device).view(-1).repeat_interleave(n)).long()  # [N]
    num = logits.shape[0]
    temp = 1.0 if greedy else temperature
    stops = torch.tensor(stop_ids, device=device)
    banned_t = torch.tensor(banned, dtype=torch.long, device=device) if banned else None
    running = torch.ones(num, dtype=torch.bool, device=device)
    synced = lockstep(model)
    tokens, logps = [], []
    with prefix_decoding(model) if shared else nullcontext():
        for t in range(max_new_tokens):
            scores = logits.float() / temp  # [N, V]
            logp_all = scores.log_softmax(-1)  # [N, V]
            if banned_t is not None:
                scores = scores.index_fill(1, banned_t, float("-inf"))
            if greedy:
                tok = scores.argmax(-1)  # [N]
            else:
                if top_p < 1.0:
                    scores = _top_p(scores, top_p)
                tok = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)  # [N]
            tok = torch.where(running, tok, torch.full_like(tok, pad_id))
            tokens.append(tok)
            logps.append(logp_all.gather(1, tok[:, None]).squeeze(1))
            running &= ~torch.isin(tok, stops)
            if t == max_new_tokens - 1 or not _any_running(running, synced):
                break
            step_pos = (next_pos + t).view(1, num, 1).expand(3, num, 1)  # [3, N, 1]
            step = {"input_ids": tok[:, None], "position_ids": step_pos, cache_kw: cache}
            if shared:  # the attention adds the prompt's padding itself: no mask to build
                step.update(attention_mask={"full_attention": None}, prefix_cache=cache)
            else:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # [N, P+t+1]
                step["attention_mask"] = mask
            out = model(**step, use_cache=True)
            logits = out.logits[:, -1]
    return torch.stack(tokens, 1).cpu(), torch.stack(logps, 1).cpu()
