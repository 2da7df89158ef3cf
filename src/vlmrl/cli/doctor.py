"""``vlmrl doctor MODEL [--data D] [--config C]``: what the command reads, then the checks.

The config and data are read (and their mistakes reported) before the model loads; the checks
themselves live in :mod:`vlmrl.eval.doctor`.
"""

from __future__ import annotations

import argparse
import textwrap

from vlmrl.eval.checklist import CHECKS

#: Samples read from the data for the checks (image sizes, boxes, prompt length).
DOCTOR_SAMPLES = 16


def help_text() -> str:
    """The checks, one paragraph each, for ``vlmrl doctor --help``."""
    lines = [
        "Preflight checks of a model (and dataset, and config), one table with pass/FAIL and the fix.",
        "",
    ]
    lines += [
        textwrap.fill(f"{name}: {what}", 96, initial_indent="  ", subsequent_indent="    ")
        for name, what in CHECKS.items()
    ]
    lines += ["", "Exit status 1 when a check fails, 0 when all pass or are skipped."]
    return "\n".join(lines)


def add_parser(sub) -> None:
    """The ``doctor`` subcommand."""
    d = sub.add_parser(
        "doctor",
        help="preflight checks: image tokens, log-prob gap, tool images, boxes, memory (pass/FAIL + fix)",
        description=help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("model", help="model directory or hub id (overrides model.path of --config)")
    d.add_argument("--data", default=None, help="a dataset file / folder / hub id, or a procedural task name")
    d.add_argument("--config", default=None, help="YAML config: its model, data, rollout and train settings")
    d.add_argument(
        "--gpu-gib", type=float, default=None, help="GPU memory for the estimate (default: this GPU, else 80)"
    )
    d.set_defaults(fn=run)


def _samples(cfg, data: str | None) -> list:
    from vlmrl.data.stream import load_data
    from vlmrl.data.tasks import generate, get_task, task_names

    if data in task_names() or (data is None and not cfg.data.path):
        task = data or cfg.data.task
        knobs = cfg.data.task_kwargs if task == cfg.data.task else {}
        return generate(get_task(task, **knobs), DOCTOR_SAMPLES, seed=cfg.data.seed)
    return load_data(cfg.data, data or cfg.data.path, "train")[:DOCTOR_SAMPLES]


def run(args) -> int:
    """Load config and data (cheap, first), then the model; print the table; 1 if a check failed."""
    from vlmrl.config import load_config

    cfg = load_config(args.config)
    samples = _samples(cfg, args.data)
    from rich.console import Console

    from vlmrl.eval.doctor import checks_table, run_doctor
    from vlmrl.eval.memory_estimate import MemorySpec, gpu_memory_gib
    from vlmrl.models import load_policy

    m = cfg.model
    policy = load_policy(args.model, m.dtype, m.device, min_pixels=m.min_pixels, max_pixels=m.max_pixels)
    gib, measured = (args.gpu_gib, False) if args.gpu_gib else gpu_memory_gib()
    spec = MemorySpec(
        dtype=m.dtype,
        lora_r=m.lora.r,
        vision_train=cfg.vision.train,
        gradient_checkpointing=cfg.train.gradient_checkpointing,
        micro_batch=cfg.train.micro_batch,
        batch_prompts=cfg.train.batch_prompts,
        n=cfg.rollout.n,
        max_new_tokens=cfg.rollout.max_new_tokens,
        kl_coef=cfg.algo.kl_coef,
        engine=cfg.rollout.engine,
        vllm_share=cfg.rollout.vllm_gpu_memory_utilization,
        gpu_gib=gib,
    )
    checks = run_doctor(policy, samples, spec, measured)
    Console(width=160).print(checks_table(checks))
    return 1 if any(c.ok is False for c in checks) else 0
