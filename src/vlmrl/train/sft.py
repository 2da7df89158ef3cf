"""Supervised warm-start on formatted gold answers (loss on the assistant turn only).

The same prompt encoding and training forward as GRPO (``vlmrl.rollout.batch``), so what SFT
teaches is exactly what the RL sampler sees.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from vlmrl.config import TrainConfig
from vlmrl.data import Sample
from vlmrl.data.describe import describe_scene
from vlmrl.data.stream import PromptStream, eval_samples
from vlmrl.eval.accuracy import evaluate
from vlmrl.eval.multiturn import evaluate_multiturn
from vlmrl.models import load_policy
from vlmrl.models.lora import has_lora, merged_state_dict
from vlmrl.models.vision import apply_vision_policy
from vlmrl.rollout.batch import (
    batch_from_completions,
    completion_logprobs,
    encode_samples,
    training_inputs,
)
from vlmrl.rollout.env_round import env_factory
from vlmrl.rollout.multiturn import trace_batch
from vlmrl.run.metrics import MetricsLogger
from vlmrl.run.optim import build_optimizer
from vlmrl.run.seeding import seed_everything


def gold_completion(sample: Sample, template: str) -> str:
    """The target text for ``sample`` under ``template``: the format the rewards check."""
    answer = f"<answer>{sample.answer}</answer>"
    if template == "answer":
        return answer
    think = f"<think>The answer is {sample.answer}.</think>"
    if template == "look":  # a dataset's own description wins over the one made from its objects
        description = sample.facts.get("description") or describe_scene(sample.facts)
        return f"<look>{description}</look>{think}{answer}"
    return think + answer


def sft_loss(policy, samples: list[Sample], template: str) -> torch.Tensor:
    """Mean negative log-likelihood of the gold completions' tokens (incl. the closing <|im_end|>)."""
    tok = policy.tokenizer
    enc = encode_samples(policy.processor, samples, template)
    completions = [
        tok(gold_completion(s, template) + "<|im_end|>", add_special_tokens=False)["input_ids"]
        for s in samples
    ]
    batch = batch_from_completions(enc, completions, tok.pad_token_id)
    inputs, _ = training_inputs(batch, list(range(batch.size)))
    logp, _ = completion_logprobs(policy.model, inputs, batch.completion_ids)
    return -(logp * batch.completion_mask).sum() / batch.completion_mask.sum()


def env_sft_loss(policy, samples: list[Sample], cfg: TrainConfig) -> torch.Tensor:
    """Mean negative log-likelihood of the assistant tokens of ``vlmrl.envs.sft_trace`` traces
    (the ideal conversation: question + image, the right tool call, the tool's answer, the answer),
    laid out as a multi-turn rollout (:func:`vlmrl.rollout.multiturn.trace_batch`)."""
    from vlmrl.envs import sft_trace

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


def run_sft(cfg: TrainConfig, log_every: int = 25, on_log=None, on_step=None) -> dict[str, float]:
    """Train ``cfg.model.path`` on ``cfg.sft`` settings; save to ``cfg.sft.out``; return eval before/after.

    Every step's ``sft/loss`` goes to ``sft.out/sft_logs`` (metrics.jsonl, and tb/ with
    ``log.tensorboard``) and to ``on_step(step, row)`` (the progress bar); ``on_log`` is called
    every ``log_every`` steps (the plain-text log when there is no bar)."""
    seed_everything(cfg.train.seed)
    m = cfg.model
    policy = load_policy(
        cfg.sft.init or m.path,
        m.dtype,
        m.device,
        m.attn_implementation,
        min_pixels=m.min_pixels,
        max_pixels=m.max_pixels,
    )
    apply_vision_policy(policy.model, cfg.vision.train)  # frozen / projector_only / lora as in RL
    out = Path(cfg.sft.out)
    data = dataclasses.replace(cfg.data, train_size=cfg.sft.train_size)
    if cfg.sft.task_kwargs is not None:
        data = dataclasses.replace(data, task_kwargs=cfg.sft.task_kwargs)
    stream = PromptStream(data)
    evals = eval_samples(data)  # held-out on the SFT distribution
    from vlmrl.rewards.plugins import reward_from_config

    reward_fn = reward_from_config(cfg.reward)
    # weight decay 0.01: torch's AdamW default, which the SFT warm-start has always used
    opt = build_optimizer(policy.model, cfg.sft.lr, weight_decay=0.01, vision_lr_scale=cfg.vision.lr_scale)
    params = [p for g in opt.param_groups for p in g["params"]]
    logger = MetricsLogger(out / "sft_logs", tensorboard=cfg.log.tensorboard)

    def held_out() -> dict:
        if cfg.env.name is not None:  # greedy multi-turn episodes
            return evaluate_multiturn(policy, evals, cfg, cfg.eval.batch_size)
        return evaluate(
            policy, evals, cfg.data.template, reward_fn, cfg.eval.max_new_tokens, cfg.eval.batch_size
        )

    before = held_out()
    policy.model.train()
    t0 = t_step = time.perf_counter()
    for step in range(1, cfg.sft.steps + 1):
        if cfg.env.name is not None:  # multi-turn tool traces, loss on the assistant turns
            loss = env_sft_loss(policy, stream.next(cfg.sft.batch_size), cfg)
        else:
            loss = sft_loss(policy, stream.next(cfg.sft.batch_size), cfg.data.template)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        now = time.perf_counter()
        row = {"sft/loss": loss.item(), "time/step_s": now - t_step, "time/elapsed_s": now - t0}
        t_step = now
        logger.log(step, row)
        if on_step:
            on_step(step, row)
        if on_log and (step % log_every == 0 or step == cfg.sft.steps):
            on_log(step, row)
    after = held_out()
    logger.log(
        cfg.sft.steps, {"eval/accuracy_before": before["accuracy"], "eval/accuracy": after["accuracy"]}
    )
    logger.close()
    if has_lora(policy.model):  # vision.train: lora: the adapters merged into plain weights
        policy.model.save_pretrained(out, state_dict=merged_state_dict(policy.model))
    else:
        policy.model.save_pretrained(out)
    policy.processor.save_pretrained(out)
    return {
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "seconds": time.perf_counter() - t0,
    }
