"""``vlmrl pretrain-tiny``: multi-task supervised pretraining of the tiny Qwen2.5-VL.

The recipe: retrain the tokenizer on the tasks' own prompts and answers, build the tiny model
(``models.tiny``), then minimise the next-token loss of the gold completion (assistant turn
only, the same forward as SFT and GRPO) on a stream of fresh procedural samples drawn from the
mix in ``models.base_mix``: curriculum stage 0 first, every task after. AdamW with linear
warm-up and cosine decay to 10% of the peak. Every ``save_every`` steps the model, processor
and a ``pretrain_state.json`` are written, so a stopped run leaves a usable model behind.

A sample is a pure function of ``(mix entry, seed, index)``: drawing the mix entry for sample
``i`` from ``random.Random(f"...:{seed}:{i}")`` makes the stream independent of batch size.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vlmrl.data import Sample
from vlmrl.data.prompts import render_prompt
from vlmrl.data.tasks import generate
from vlmrl.models.base_mix import PRETRAIN_MIX, MixEntry, entries_at
from vlmrl.models.loading import Policy
from vlmrl.models.tiny import TinyConfig, build_tiny_model, build_tiny_processor
from vlmrl.run.optim import build_optimizer, lr_factor, set_lr
from vlmrl.train.sft import gold_completion, sft_loss

LR_FLOOR = 0.1
"""The cosine schedule ends at this fraction of the peak rate, not 0: late steps still learn."""


@dataclass
class PretrainSpec:
    """Settings of one pretraining run (the model card records them)."""

    out: str = "runs/tiny-base"
    steps: int = 8000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 200
    seed: int = 0
    save_every: int = 500
    eval_every: int = 500
    eval_size: int = 24
    threads: int = 0
    """torch intra-op threads; 0 keeps torch's default."""
    stop_after: int | None = None
    """Stop after this many steps (None: ``steps``); the schedule still spans ``steps``, so a run
    stopped early for time is reproduced exactly by the same two numbers."""


def tokenizer_corpus(seed: int, per_entry: int = 64) -> list[str]:
    """Prompts and gold completions of every mix entry: what the tokenizer's merges should fit."""
    texts = []
    for e in PRETRAIN_MIX:
        for s in generate(e.task, per_entry, seed=seed, split="tokenizer", **e.knobs):
            for t in e.templates:
                texts.append(render_prompt(s, t).replace("<image>", " "))
                texts.append(gold_completion(s, t))
    return texts


def draw_batch(step: int, steps: int, batch_size: int, seed: int) -> list[tuple[Sample, str]]:
    """The ``batch_size`` samples of ``step`` with their templates (deterministic in the arguments)."""
    active = entries_at(step, steps)
    weights = [e.weight for e in active]
    out = []
    for j in range(batch_size):
        index = step * batch_size + j
        rng = random.Random(f"vlmrl-pretrain:{seed}:{index}")
        e: MixEntry = rng.choices(active, weights)[0]
        template = rng.choice(e.templates)
        sample = generate(e.task, 1, seed=seed, split="train", start=index, **e.knobs)[0]
        out.append((sample, template))
    return out


def mixed_loss(policy: Policy, batch: list[tuple[Sample, str]]) -> torch.Tensor:
    """Sample-weighted mean of ``sft_loss`` over the batch's template groups."""
    groups: dict[str, list[Sample]] = {}
    for s, t in batch:
        groups.setdefault(t, []).append(s)
    return sum(sft_loss(policy, ss, t) * (len(ss) / len(batch)) for t, ss in groups.items())


def lr_at(step: int, spec: PretrainSpec) -> float:
    """Linear warm-up over ``warmup_steps`` steps, then cosine from ``lr`` down to ``0.1 · lr``
    (the shared schedule of ``run.optim`` with a floor of 0.1)."""
    return spec.lr * lr_factor(step, spec.steps, spec.warmup_steps, "cosine", floor=LR_FLOOR)


def build_base(spec: PretrainSpec, tiny: TinyConfig | None = None) -> Policy:
    """A fresh tiny model whose tokenizer was trained on the mix's own text."""
    tiny = tiny or TinyConfig(seed=spec.seed)
    processor = build_tiny_processor(tiny, extra_texts=tokenizer_corpus(spec.seed))
    processor.tokenizer.padding_side = "left"
    model = build_tiny_model(tiny, processor.tokenizer)
    return Policy(model=model, processor=processor)


def save(policy: Policy, out: Path, state: dict) -> None:
    """``save_pretrained`` model + processor, then the JSON state (written last: a whole save)."""
    out.mkdir(parents=True, exist_ok=True)
    policy.model.save_pretrained(out)
    policy.processor.save_pretrained(out)
    (out / "pretrain_state.json").write_text(json.dumps(state, indent=2))


def pretrain(spec: PretrainSpec, on_log=print, evaluate_fn=None) -> Path:
    """Run the pretraining; return the output directory.

    ``evaluate_fn(policy) -> dict`` runs every ``eval_every`` steps; its result goes in the state.
    """
    if spec.threads:
        torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    out = Path(spec.out)
    policy = build_base(spec)
    params = [p for p in policy.model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    on_log(f"tiny base: {n_params / 1e6:.2f} M parameters, vocab {len(policy.tokenizer)}")
    opt = build_optimizer(policy.model, spec.lr, weight_decay=0.01)
    policy.model.train()
    t0 = time.perf_counter()
    ema = None
    last = min(spec.steps, spec.stop_after or spec.steps)
    for step in range(last):
        set_lr(opt, lr_at(step, spec) / spec.lr)
        loss = mixed_loss(policy, draw_batch(step, spec.steps, spec.batch_size, spec.seed))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        done = step + 1
        if done % 50 == 0:
            on_log(f"step {done}: loss {ema:.4f} lr {lr_at(step, spec):.2e} {time.perf_counter() - t0:.0f}s")
        if done % spec.save_every == 0 or done == last:
            state = {
                "step": done,
                "seconds": time.perf_counter() - t0,
                "spec": asdict(spec),
                "params": n_params,
                "loss_ema": ema,
            }
            if evaluate_fn is not None and (done % spec.eval_every == 0 or done == last):
                policy.model.eval()
                state["eval"] = evaluate_fn(policy)
                policy.model.train()
                on_log(f"step {done}: eval {json.dumps(state['eval'])}")
            save(policy, out, state)
    return out


def pretrain_and_card(
    out: str = "runs/tiny-base",
    steps: int = 8000,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    threads: int = 0,
    eval_every: int = 1000,
    eval_size: int = 24,
    card_size: int = 200,
    stop_after: int | None = None,
) -> Path:
    """``vlmrl pretrain-tiny``: pretrain, then evaluate every task (mix and held-out) and write the card."""
    from vlmrl.eval.base_card import evaluate_entries, measure_card

    spec = PretrainSpec(
        out=out,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        threads=threads,
        save_every=min(500, eval_every),
        eval_every=eval_every,
        eval_size=eval_size,
        stop_after=stop_after,
    )

    def quick_eval(policy: Policy) -> dict:
        return {k: v["acc"] for k, v in evaluate_entries(policy, PRETRAIN_MIX, eval_size, seed=1).items()}

    path = pretrain(spec, on_log=lambda m: print(m, flush=True), evaluate_fn=quick_eval)
    measure_card(path, card_size, write=True)
    return path
