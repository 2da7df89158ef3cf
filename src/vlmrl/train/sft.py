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
from vlmrl.data import Sample, build_messages
from vlmrl.data.describe import describe_scene
from vlmrl.eval.accuracy import evaluate
from vlmrl.models import load_policy
from vlmrl.rollout.batch import batch_from_completions, completion_logprobs, encode_prompts, training_inputs
from vlmrl.train.metrics import MetricsLogger
from vlmrl.train.optim import can_fuse
from vlmrl.train.seeding import seed_everything
from vlmrl.train.stream import PromptStream, eval_samples


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
    enc = encode_prompts(
        policy.processor, [build_messages(s, template) for s in samples], [s.images for s in samples]
    )
    completions = [
        tok(gold_completion(s, template) + "<|im_end|>", add_special_tokens=False)["input_ids"]
        for s in samples
    ]
    batch = batch_from_completions(enc, completions, tok.pad_token_id)
    inputs, _ = training_inputs(batch, list(range(batch.size)))
    logp, _ = completion_logprobs(policy.model, inputs, batch.completion_ids)
    return -(logp * batch.completion_mask).sum() / batch.completion_mask.sum()


def run_sft(cfg: TrainConfig, log_every: int = 25, on_log=None) -> dict[str, float]:
    """Train ``cfg.model.path`` on ``cfg.sft`` settings; save to ``cfg.sft.out``; return eval before/after."""
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
    out = Path(cfg.sft.out)
    data = dataclasses.replace(cfg.data, train_size=cfg.sft.train_size)
    if cfg.sft.task_kwargs is not None:
        data = dataclasses.replace(data, task_kwargs=cfg.sft.task_kwargs)
    stream = PromptStream(data)
    evals = eval_samples(data)  # held-out on the SFT distribution
    from vlmrl.rewards.plugins import reward_from_config

    reward_fn = reward_from_config(cfg.reward)
    params = [p for p in policy.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.sft.lr, fused=can_fuse(params) or None)  # fused: see optim.py
    logger = MetricsLogger(out / "sft_logs", tensorboard=cfg.log.tensorboard)

    def held_out() -> dict:
        if cfg.env.name is not None:  # greedy multi-turn episodes (train/env_round.py)
            from vlmrl.train.env_round import evaluate_multiturn

            return evaluate_multiturn(policy, evals, cfg, cfg.eval.batch_size)
        return evaluate(
            policy, evals, cfg.data.template, reward_fn, cfg.eval.max_new_tokens, cfg.eval.batch_size
        )

    before = held_out()
    policy.model.train()
    t0 = time.perf_counter()
    for step in range(1, cfg.sft.steps + 1):
        if cfg.env.name is not None:  # multi-turn tool traces, loss on the assistant turns (train/sft_env.py)
            from vlmrl.train.sft_env import env_sft_loss

            loss = env_sft_loss(policy, stream.next(cfg.sft.batch_size), cfg)
        else:
            loss = sft_loss(policy, stream.next(cfg.sft.batch_size), cfg.data.template)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == cfg.sft.steps:
            row = {"sft/loss": loss.item(), "time/elapsed_s": time.perf_counter() - t0}
            logger.log(step, row)
            if on_log:
                on_log(step, row)
    after = held_out()
    logger.log(
        cfg.sft.steps, {"eval/accuracy_before": before["accuracy"], "eval/accuracy": after["accuracy"]}
    )
    logger.close()
    policy.model.save_pretrained(out)
    policy.processor.save_pretrained(out)
    return {
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "seconds": time.perf_counter() - t0,
    }
