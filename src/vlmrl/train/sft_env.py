"""SFT warm start on multi-turn tool traces (``env.name`` set): loss on the assistant turns only.

A trace is ``vlmrl.envs.sft_trace(sample, env.name, **env.kwargs)``: the ideal conversation
(user question + image, the right tool call, the tool's answer with its image, the final
answer). It is laid out token for token as a multi-turn rollout lays out an episode
(:mod:`vlmrl.rollout.multiturn`: the env's system prompt, the initial prompt, then assistant
turns closed by ``<|im_end|>`` and user turns in the chat template's words, tool images in the
completion), so SFT teaches exactly the sequences the RL sampler will produce and read. The
mask is 1 on assistant tokens (incl. each ``<|im_end|>``), 0 on user turns and image tokens.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from vlmrl.config import TrainConfig
from vlmrl.data import Sample
from vlmrl.rollout.batch import RolloutBatch, completion_logprobs, encode_prompts, training_inputs
from vlmrl.rollout.messages import encode_segment, env_segment_text, user_content
from vlmrl.rollout.multiturn import _add_env_turn, _add_model_turn, _assemble
from vlmrl.rollout.trajectory import Trajectory


def trace_batch(policy, systems: list[str], traces: list[list[dict]]) -> RolloutBatch:
    """A batch whose rows are the given conversations (first turn = the user's; ``systems[b]`` the
    system turn of row b, as the env wrote it after ``reset``), mask on assistant turns."""
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


def env_sft_loss(policy, samples: list[Sample], cfg: TrainConfig) -> torch.Tensor:
    """Mean negative log-likelihood of the traces' assistant tokens."""
    from vlmrl.envs import sft_trace
    from vlmrl.train.env_round import env_factory

    factory = env_factory(cfg)
    systems = []
    for s in samples:  # the system turn after reset: it may depend on the sample (the region grid)
        env = factory()
        env.reset(s)
        systems.append(env.system_prompt())
    e = cfg.env
    kwargs = {"max_turns": e.max_turns, "max_tool_calls": e.max_tool_calls, **e.kwargs}
    traces = [sft_trace(s, e.name, **kwargs) for s in samples]
    batch = trace_batch(policy, systems, traces)
    inputs, _ = training_inputs(batch, list(range(batch.size)))
    logp, _ = completion_logprobs(policy.model, inputs, batch.completion_ids)
    return -(logp * batch.completion_mask).sum() / batch.completion_mask.sum()
