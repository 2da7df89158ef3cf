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
ids the sampler drew (its closing ``<|im_end|>`` included); an environment turn's ids are what
the processor gives for the chat template's rendering of that user turn in that place::

    "\\n<|im_start|>user\\n" + content (image placeholders expanded) + "<|im_end|>\\n<|im_start|>assistant\\n"

(the text the chat template appends after the previous assistant message; tokenized alone it
gives the same ids as in the full string, since it starts right after the special
``<|im_end|>``). The resulting :class:`~vlmrl.rollout.batch.RolloutBatch` keeps today's
semantics: ``prompt_inputs`` = the B initial prompts, the completion = every token after the
initial prompt, ``completion_mask`` = 1 exactly on model tokens (environment tokens, the
template tokens around them and the image pads of tool images: 0), ``sampler_logprobs`` on
model tokens; per rollout, the tool images' pixel rows / grids (``extra_*``) and
``completion_token_types["mm_token_type_ids"]`` (1 on their image tokens). Tested: sampler
log-probs = training-forward log-probs (≤1e-3) on 2–3-turn trajectories with a crop image.

Vision special tokens: banned in sampling and checked by the engine on each generated turn
(model tokens only; environment turns legitimately hold image tokens). A turn that still has
one ends its episode and masks the whole trajectory (``finish_reason = "invalid_vision_token"``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlmrl.rollout.batch import PromptInputs, RolloutBatch, encode_prompts

IMAGE_PLACEHOLDER = "<image>"


@dataclass
class Turn:
    """One turn of a trajectory, as logged and replayed."""

    role: str  # "assistant" | "user"
    text: str
    images: list[Image.Image] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # assistant turns: the env's step info


@dataclass
class Trajectory:
    """One episode: its env, turns and the completion it became (ids, mask, log-probs, token types)."""

    env: Any
    group: int
    turns: list[Turn] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)  # chat messages so far (for the template)
    ids: list[int] = field(default_factory=list)  # completion tokens (after the initial prompt)
    mask: list[float] = field(default_factory=list)  # 1 on model tokens
    logp: list[float] = field(default_factory=list)
    mm: list[int] = field(default_factory=list)  # mm_token_type_ids over the completion
    pixel_values: list[torch.Tensor] = field(default_factory=list)  # tool images' rows, in order
    grids: list[torch.Tensor] = field(default_factory=list)
    done: bool = False
    finish: str = "stop"  # "stop" | "length" (turn/token budget) | "invalid_vision_token"
    budget_hit: bool = False
    latency_s: float = 0.0

    @property
    def model_turns(self) -> int:
        return sum(t.role == "assistant" for t in self.turns)


def user_content(text: str, n_images: int) -> list[dict[str, Any]]:
    """HF chat content for an observation: text split at ``<image>``, images in order.

    Placeholders missing from the text go after it (one per image), extra ones are an error.
    """
    pieces = text.split(IMAGE_PLACEHOLDER)
    if len(pieces) - 1 > n_images:
        raise ValueError(f"observation has {len(pieces) - 1} <image> placeholders but {n_images} images")
    content: list[dict[str, Any]] = []
    for i, piece in enumerate(pieces):
        if i > 0:
            content.append({"type": "image"})
        if piece:
            content.append({"type": "text", "text": piece})
    content += [{"type": "image"}] * (n_images - (len(pieces) - 1))
    return content


def initial_messages(env, observation) -> list[dict]:
    """The system turn (the env's tool descriptions) and the first user turn."""
    msgs: list[dict] = []
    system = env.system_prompt()
    if system:
        msgs.append({"role": "system", "content": [{"type": "text", "text": system}]})
    msgs.append({"role": "user", "content": user_content(observation.text, len(observation.images))})
    return msgs


def env_segment_text(processor, messages: list[dict], observation) -> str:
    """The template's text for a user turn following ``messages`` (whose last turn is the model's).

    Rendered as the difference of two chat-template renderings, so it is whatever the model's
    template writes there; the leading ``\\n`` after the model's ``<|im_end|>`` belongs to it.
    """
    user = {"role": "user", "content": user_content(observation.text, len(observation.images))}
    before = processor.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    after = processor.apply_chat_template([*messages, user], add_generation_prompt=True, tokenize=False)
    if not after.startswith(before) or not before.endswith("<|im_end|>\n"):
        raise ValueError("the chat template does not render turns as a prefix-stable <|im_end|>-closed list")
    return "\n" + after[len(before) :]


def encode_segment(processor, text: str, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """Processor outputs for an environment segment (no padding, one row)."""
    enc = processor(text=[text], images=images or None, return_tensors="pt")
    return {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}


# ---------------------------------------------------------------------------------------- rollouts
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
    from vlmrl.rollout.batch import _image_rows

    keep = enc["attention_mask"][b].bool()
    row = {"input_ids": enc["input_ids"][b][keep], "mm_token_type_ids": enc["mm_token_type_ids"][b][keep]}
    if "pixel_values" in enc:
        pix, grids = _image_rows(enc)
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


def _tool_attempt(text: str, info: dict) -> bool:
    return info.get("kind") == "tool" or "<tool_call>" in text


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
            if rnd == 0:  # every trajectory still equals its prompt: one prefill per prompt, G samples
                out = engine.generate(enc, g, greedy=spec.greedy)
            else:
                out = engine.generate(_round_inputs(prompts, active, pad_id), 1, greedy=spec.greedy)
            for i, (t, cap) in enumerate(zip(active, caps, strict=True)):
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


def final_text(t: Trajectory) -> str:
    """The last model turn's text (what the answer is read from)."""
    for turn in reversed(t.turns):
        if turn.role == "assistant":
            return turn.text
    return ""


# ----------------------------------------------------------------------------------------- metrics
def episode_metrics(trajs: list[Trajectory]) -> dict[str, float]:
    """``env/*`` means over episodes: tool calls, validity of attempted calls, turns, budget hits, latency.

    ``valid_call_rate`` = valid tool calls / attempted ones (a turn whose env info says ``tool``
    or whose text holds ``<tool_call>``); 0 when nothing was attempted.
    """
    calls = valid = attempts = 0
    for t in trajs:
        for turn in t.turns:
            if turn.role != "assistant":
                continue
            if _tool_attempt(turn.text, turn.info):
                attempts += 1
                if turn.info.get("kind") == "tool" and turn.info.get("valid", False):
                    valid += 1
            if turn.info.get("kind") == "tool":
                calls += 1
    n = max(len(trajs), 1)
    return {
        "env/tool_calls_per_episode": calls / n,
        "env/valid_call_rate": valid / attempts if attempts else 0.0,
        "env/turns": sum(t.model_turns for t in trajs) / n,
        "env/budget_hit_rate": sum(t.budget_hit for t in trajs) / n,
        "env/latency_s": sum(t.latency_s for t in trajs) / n,
    }


# ------------------------------------------------------------------------------------ logs, replay
def _jsonable(x: Any) -> Any:
    try:
        json.dumps(x)
        return x
    except TypeError:
        if isinstance(x, dict):
            return {str(k): _jsonable(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [_jsonable(v) for v in x]
        return repr(x)


def trajectory_log(t: Trajectory, sample, out_dir: Path, prefix: str) -> dict[str, Any]:
    """A JSON-able record of every turn (images saved as PNG under ``out_dir``, paths relative to
    it), plus what :func:`replay` needs to rebuild the sample (id, problem, answer, facts)."""
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    turns = []
    for k, turn in enumerate(t.turns):
        refs = []
        for j, im in enumerate(turn.images):
            ref = img_dir / f"{prefix}_t{k}_{j}.png"
            im.save(ref)
            refs.append(str(ref.relative_to(out_dir)))
        row: dict[str, Any] = {"role": turn.role, "text": turn.text, "images": refs}
        if turn.role == "assistant":
            row["kind"] = turn.info.get("kind")
            row["tool"] = turn.info.get("tool")
            row["valid"] = bool(turn.info.get("valid", False))
            row["error"] = turn.info.get("error")
            row["tool_call"] = _parsed_call(turn.text)
        turns.append(row)
    sample_imgs = []
    for j, im in enumerate(sample.images):
        ref = img_dir / f"{prefix}_sample_{j}.png"
        im.save(ref)
        sample_imgs.append(str(ref.relative_to(out_dir)))
    return {
        "turns": turns,
        "sample": {
            "id": sample.id,
            "problem": sample.problem,
            "answer": sample.answer,
            "task": sample.task,
            "answer_type": sample.answer_type,
            "facts": _jsonable(sample.facts),
            "images": sample_imgs,
        },
    }


def _parsed_call(text: str) -> dict | None:
    """``{"name", "arguments"}`` of the turn's tool call, or None (the env's parser, never raises)."""
    if "<tool_call>" not in text:
        return None
    try:
        from vlmrl.envs import parse_tool_call
    except ImportError:  # pragma: no cover - envs not installed
        return None
    call = parse_tool_call(text)
    name = getattr(call, "name", None)
    if name is None or not hasattr(call, "arguments"):
        return None
    return {"name": name, "arguments": _jsonable(call.arguments)}


@dataclass
class Replay:
    """What the environment said when the logged model turns were played again, and the reward."""

    observations: list[Turn]  # the env's user turns after the first, in order
    reward: Any  # RewardBreakdown
    matches: bool  # every observation's text and image pixels equal the logged ones


def replay(log_row: dict[str, Any], env, root: str | Path = ".") -> Replay:
    """Play a logged trajectory's model turns through a fresh ``env``; images load from ``root``.

    Deterministic environments give the logged observations and reward back: the trajectory
    is reproducible from ``rollouts/step_N.jsonl`` alone (tested).
    """
    from vlmrl.data import Sample

    root = Path(root)
    traj = log_row.get("trajectory", log_row)
    s = traj["sample"]
    images = [Image.open(root / p).convert("RGB") for p in s["images"]]
    sample = Sample(
        id=s["id"], images=images, problem=s["problem"], answer=s["answer"], task=s.get("task", "custom"),
        answer_type=s.get("answer_type", "math"), facts=s.get("facts", {}),
    )  # fmt: skip
    env.reset(sample)
    turns = traj["turns"]
    observations: list[Turn] = []
    matches = True
    for k, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        res = env.step(turn["text"])
        if res.done or res.observation is None:
            break
        obs = Turn("user", res.observation.text, list(res.observation.images))
        observations.append(obs)
        logged = turns[k + 1] if k + 1 < len(turns) and turns[k + 1]["role"] == "user" else None
        if logged is None:  # the episode ended on the token budget (loop side), not the env
            stop = getattr(env, "stop", None)
            if callable(stop):
                stop("tokens")
            break
        same = logged["text"] == obs.text and len(logged["images"]) == len(obs.images)
        for ref, im in zip(logged["images"], obs.images, strict=False):
            same = same and _same_pixels(Image.open(root / ref), im)
        matches = matches and same
    return Replay(observations, env.reward(), matches)


def _same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and a.convert("RGB").tobytes() == b.convert("RGB").tobytes()
