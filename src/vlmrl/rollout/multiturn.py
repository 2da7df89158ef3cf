"""Multi-turn rollouts with a visual environment: the model alternates with tools, many trajectories at once.

B prompts × G trajectories are in flight. Each round, every active trajectory's sequence so far
(initial prompt + all turns, with its images in order: the original, then every tool image) is
left-padded into one batch and ONE assistant turn is sampled for all of them (stop at
``<|im_end|>``, at most ``turn_max_new_tokens``); ``env.step(text)`` answers each, and a
non-final observation becomes a user turn. An episode ends when the env says done, after
``max_turns`` model turns, or when the trajectory would pass ``max_total_tokens`` (completion
tokens: model + environment).

Token identity (why the training forward sees exactly what the sampler saw): the sequence is
built *by concatenating ids*, never by re-tokenizing decoded text. A model turn's ids are the
ids the sampler drew (its closing ``<|im_end|>`` included); an environment turn's ids are the
processor's for the chat template's rendering of that user turn in that place (see
:mod:`vlmrl.rollout.messages`). The resulting :class:`~vlmrl.rollout.batch.RolloutBatch` keeps
today's semantics: ``prompt_inputs`` = the B initial prompts, the completion = every token after
the initial prompt, ``completion_mask`` = 1 exactly on model tokens (environment tokens, the
template tokens around them and the image pads of tool images: 0), ``sampler_logprobs`` on
model tokens; per rollout, the tool images' pixel rows / grids (``extra_*``) and
``completion_token_types["mm_token_type_ids"]`` (1 on their image tokens). Tested: sampler
log-probs = training-forward log-probs (≤1e-3) on 2–3-turn trajectories with a crop image.

Vision special tokens: banned in sampling and checked by the engine on each generated turn
(model tokens only; environment turns legitimately hold image tokens). A turn that still has
one ends its episode and masks the whole trajectory (``finish_reason = "invalid_vision_token"``).

Episodes are :class:`~vlmrl.rollout.trajectory.Trajectory` records; their logs and replay live in
:mod:`vlmrl.rollout.trajectory_log`. Those names are re-exported here for existing importers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from vlmrl.rollout.batch import PromptInputs, RolloutBatch, encode_prompts
from vlmrl.rollout.messages import (
    IMAGE_PLACEHOLDER,
    encode_segment,
    env_segment_text,
    initial_messages,
    user_content,
)
from vlmrl.rollout.trajectory import Trajectory, Turn, episode_metrics, final_text
from vlmrl.rollout.trajectory_log import Replay, replay, trajectory_log

__all__ = [
    "IMAGE_PLACEHOLDER",
    "MultiTurnSpec",
    "Replay",
    "Trajectory",
    "Turn",
    "encode_segment",
    "env_segment_text",
    "episode_metrics",
    "final_text",
    "initial_messages",
    "multiturn_rollout",
    "replay",
    "trace_batch",
    "trajectory_log",
    "user_content",
]


@dataclass
class MultiTurnSpec:
    """Budgets of a multi-turn rollout (config ``env.*``)."""

    group_size: int = 1  # G trajectories per prompt
    max_turns: int = 4  # model turns per episode (the env also enforces its own)
    turn_max_new_tokens: int = 32
    max_total_tokens: int = 256  # completion tokens (model + environment) per episode
    greedy: bool = False


def _prompt_row(enc: dict[str, torch.Tensor], b: int) -> dict[str, Any]:
    """Prompt b's unpadded ids / token types and its pixel rows / grids."""
    from vlmrl.rollout.media import IMAGES, media_rows

    keep = enc["attention_mask"][b].bool()
    row = {"input_ids": enc["input_ids"][b][keep], "mm_token_type_ids": enc["mm_token_type_ids"][b][keep]}
    if "pixel_values" in enc:
        pix, grids = media_rows(enc, IMAGES)
        row["pixel_values"] = enc["pixel_values"][pix[b]]
        row["image_grid_thw"] = enc["image_grid_thw"][grids[b]]
    return row


def _round_inputs(prompts: list[dict], trajs: list[Trajectory], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded generation inputs of the active trajectories: prompt + completion so far."""
    ids, mms, pv, gr, counts = [], [], [], [], []
    for t in trajs:
        p = prompts[t.group]
        ids.append(torch.cat([p["input_ids"], torch.tensor(t.ids, dtype=torch.long)]))
        mms.append(
            torch.cat([p["mm_token_type_ids"], torch.tensor(t.mm, dtype=p["mm_token_type_ids"].dtype)])
        )
        n = 0
        if "pixel_values" in p:
            pv.append(p["pixel_values"])
            gr.append(p["image_grid_thw"])
            n += p["image_grid_thw"].shape[0]
        pv += t.pixel_values
        gr += t.grids
        n += sum(g.shape[0] for g in t.grids)
        counts.append(n)
    width = max(x.numel() for x in ids)
    out = {
        "input_ids": torch.full((len(ids), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(ids), width), dtype=torch.long),
        "mm_token_type_ids": torch.zeros((len(ids), width), dtype=mms[0].dtype),
    }
    for i, (x, m) in enumerate(zip(ids, mms, strict=True)):
        out["input_ids"][i, width - x.numel() :] = x
        out["attention_mask"][i, width - x.numel() :] = 1
        out["mm_token_type_ids"][i, width - x.numel() :] = m
    if pv:
        out["pixel_values"] = torch.cat(pv)
        out["image_grid_thw"] = torch.cat(gr)
    out["images_per_prompt"] = torch.tensor(counts, dtype=torch.long)
    return out


def _add_model_turn(t: Trajectory, ids: list[int], logp: list[float], text: str) -> None:
    t.ids += ids
    t.mask += [1.0] * len(ids)
    t.logp += logp
    t.mm += [0] * len(ids)
    t.messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})


def _add_env_turn(t: Trajectory, processor, observation, seg: dict[str, torch.Tensor]) -> None:
    ids = seg["input_ids"][0].tolist()
    t.ids += ids
    t.mask += [0.0] * len(ids)
    t.logp += [0.0] * len(ids)
    t.mm += seg["mm_token_type_ids"][0].tolist() if "mm_token_type_ids" in seg else [0] * len(ids)
    if "pixel_values" in seg:
        t.pixel_values.append(seg["pixel_values"])
        t.grids.append(seg["image_grid_thw"])
    t.messages.append({"role": "user", "content": user_content(observation.text, len(observation.images))})
    t.turns.append(Turn("user", observation.text, list(observation.images)))


def _end(t: Trajectory, budget: bool) -> None:
    t.done = True
    if budget:
        t.budget_hit = True
        t.finish = "length"
        stop = getattr(t.env, "stop", None)  # the token budget is ours: the env's budget_penalty sees it
        if callable(stop):
            stop("tokens")


@torch.no_grad()
def multiturn_rollout(
    engine, processor, make_env: Callable[[], Any], samples: list, spec: MultiTurnSpec
) -> tuple[RolloutBatch, list[Trajectory]]:
    """Run ``len(samples) × G`` episodes; the batch (rows grouped by prompt) and the trajectories.

    ``engine`` is an :class:`~vlmrl.rollout.hf_engine.HFEngine` (its ``max_new_tokens`` is set to
    each round's cap for the call and restored).
    """
    g = spec.group_size
    trajs: list[Trajectory] = []
    first_obs = []
    for b, s in enumerate(samples):
        for j in range(g):
            env = make_env()
            obs = env.reset(s)
            t = Trajectory(env=env, group=b)
            t.messages = initial_messages(env, obs)
            t.turns.append(Turn("user", obs.text, list(obs.images)))
            trajs.append(t)
            if j == 0:
                first_obs.append((env, obs))
    enc: PromptInputs = encode_prompts(
        processor,
        [trajs[b * g].messages for b in range(len(samples))],
        [list(o.images) for _, o in first_obs],
    )
    prompts = [_prompt_row(enc, b) for b in range(len(samples))]
    pad_id = engine.pad_id
    im_end = engine.policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    saved_cap = engine.max_new_tokens
    try:
        for rnd in range(spec.max_turns):
            active = [t for t in trajs if not t.done]
            if not active:
                break
            caps = [min(spec.turn_max_new_tokens, spec.max_total_tokens - len(t.ids)) for t in active]
            engine.max_new_tokens = max(caps)
            t_round = time.perf_counter()
            if rnd == 0:  # every trajectory still equals its prompt: one prefill per prompt, G samples
                out = engine.generate(enc, g, greedy=spec.greedy)
            else:
                out = engine.generate(_round_inputs(prompts, active, pad_id), 1, greedy=spec.greedy)
            t_round = time.perf_counter() - t_round  # every active episode waited this long for its action
            for i, (t, cap) in enumerate(zip(active, caps, strict=True)):
                t.gen_s += t_round
                n = min(int(out.completion_lengths[i]), cap)
                ids = out.completion_ids[i, :n].tolist()
                lp = out.sampler_logprobs[i, :n].tolist()
                reason = out.finish_reasons[i]
                text = (
                    out.texts[i]
                    if n == int(out.completion_lengths[i])
                    else engine.policy.tokenizer.decode(ids, skip_special_tokens=True)
                )
                _add_model_turn(t, ids, lp, text)
                if reason == "invalid_vision_token":
                    t.turns.append(Turn("assistant", text, info={"kind": "invalid", "valid": False}))
                    t.done, t.finish = True, reason
                    continue
                t0 = time.perf_counter()
                res = t.env.step(text)
                info = dict(res.info)
                t.latency_s += float(info.get("latency_s", time.perf_counter() - t0))
                t.turns.append(Turn("assistant", text, info=info))
                truncated = reason == "length" or n < int(out.completion_lengths[i])
                if res.done:
                    _end(t, budget=info.get("kind") == "budget")
                    continue
                if truncated and len(t.ids) >= spec.max_total_tokens:
                    _end(t, budget=True)
                    continue
                seg_text = env_segment_text(processor, t.messages, res.observation)
                if not ids or ids[-1] != im_end:  # cut, or stopped on another EOS: the template closes
                    seg_text = "<|im_end|>" + seg_text  # the turn, and that <|im_end|> is not the model's
                seg = encode_segment(processor, seg_text, list(res.observation.images))
                if (
                    len(t.ids) + seg["input_ids"].shape[1] >= spec.max_total_tokens
                    or rnd == spec.max_turns - 1
                ):
                    _end(t, budget=True)  # no room for another model turn
                    continue
                _add_env_turn(t, processor, res.observation, seg)
    finally:
        engine.max_new_tokens = saved_cap
    for t in trajs:
        if not t.done:
            _end(t, budget=True)
    return _assemble(enc, trajs, pad_id), trajs


def _assemble(enc: PromptInputs, trajs: list[Trajectory], pad_id: int) -> RolloutBatch:
    n = len(trajs)
    width = max(len(t.ids) for t in trajs)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width))
    logp = torch.zeros((n, width))
    mm = torch.zeros((n, width), dtype=enc["mm_token_type_ids"].dtype)
    for i, t in enumerate(trajs):
        k = len(t.ids)
        ids[i, :k] = torch.tensor(t.ids, dtype=torch.long)
        mask[i, :k] = torch.tensor(t.mask)
        logp[i, :k] = torch.tensor(t.logp)
        mm[i, :k] = torch.tensor(t.mm, dtype=mm.dtype)
        if t.finish == "invalid_vision_token":
            mask[i] = 0.0
    return RolloutBatch(
        prompt_inputs=enc,
        prompt_index=torch.tensor([t.group for t in trajs], dtype=torch.long),
        completion_ids=ids,
        completion_mask=mask,
        sampler_logprobs=logp,
        completion_lengths=torch.tensor([len(t.ids) for t in trajs], dtype=torch.long),
        finish_reasons=[t.finish for t in trajs],
        texts=[final_text(t) for t in trajs],
        extra_pixel_values=[torch.cat(t.pixel_values) if t.pixel_values else None for t in trajs],
        extra_image_grid_thw=[torch.cat(t.grids) if t.grids else None for t in trajs],
        completion_token_types={"mm_token_type_ids": mm},
    )


def trace_batch(policy, systems: list[str], traces: list[list[dict]]) -> RolloutBatch:
    """SFT on tool traces: a batch whose rows are the given conversations (first turn = the
    user's; ``systems[b]`` the system turn of row b, as the env wrote it after ``reset``), mask on
    assistant turns.

    Laid out token for token as :func:`multiturn_rollout` lays out an episode (the env's system
    prompt, the initial prompt, assistant turns closed by ``<|im_end|>``, user turns in the chat
    template's words, tool images in the completion), so SFT teaches exactly the sequences the RL
    sampler produces and reads. The mask is 1 on assistant tokens (each ``<|im_end|>`` too), 0 on
    user turns and image tokens."""
    tok = policy.tokenizer
    proc = policy.processor
    msgs, images, trajs = [], [], []
    for b, (system, trace) in enumerate(zip(systems, traces, strict=True)):
        turns = [t for t in trace if t["role"] != "system"]
        first = turns[0]
        m = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
        m.append({"role": "user", "content": user_content(first["text"], len(first.get("images", [])))})
        msgs.append(m)
        images.append(list(first.get("images", [])))
        trajs.append(Trajectory(env=None, group=b, messages=list(m)))
    enc = encode_prompts(proc, msgs, images)
    for trace, t in zip(traces, trajs, strict=True):
        turns = [x for x in trace if x["role"] != "system"][1:]
        for turn in turns:
            if turn["role"] == "assistant":
                ids = tok(turn["text"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
                _add_model_turn(t, ids, [0.0] * len(ids), turn["text"])
            else:
                obs = SimpleNamespace(text=turn["text"], images=list(turn.get("images", [])))
                seg = encode_segment(proc, env_segment_text(proc, t.messages, obs), obs.images)
                _add_env_turn(t, proc, obs, seg)
    return _assemble(enc, trajs, tok.pad_token_id)
