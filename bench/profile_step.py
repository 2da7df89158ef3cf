"""Where a vlmrl GRPO step's time goes: phases (cProfile) and top tensor ops (torch.profiler).

The same trainer settings as ``bench/vs_trl.py`` (tiny Qwen2.5-VL, B=4 × G=4, ≤32 new tokens,
β=0, fp32). ``--plain`` switches vlmrl's fast paths off (HF ``generate``; one full
prompt+completion forward per rollout; unfused AdamW), i.e. the code before the optimisation, so the two
profiles can be compared.

    .venv/bin/python bench/profile_step.py --threads 1 --out bench/results/profile_step
    .venv/bin/python bench/profile_step.py --threads 1 --plain --out bench/results/profile_step_plain

Writes ``OUT.json`` and prints a markdown summary.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from vs_trl import SIZES

#: Phases of one step: (label, function name as cProfile sees it, file suffix).
PHASES = [
    ("encode prompts (processor)", "encode_prompts", "rollout/batch.py"),
    ("sampling (engine.generate)", "generate", "rollout/hf_engine.py"),
    ("  prompt prefill (once per prompt, no grad)", "_prefill", "rollout/sampler.py"),
    ("rewards", "_score", "train/grpo.py"),
    ("policy update (total)", "policy_update", "train/update.py"),
    ("  training forward", "rollout_logprobs", "rollout/shared_prompt.py"),
    ("    prompt pass (once per prompt)", "_prompt_pass", "rollout/shared_prompt.py"),
    ("  backward", "backward", "torch/_tensor.py"),
    ("  optimizer step", "adam", "torch/optim/adam.py"),
    ("  grad clip", "clip_grad_norm_", "torch/nn/utils/clip_grad.py"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-size", choices=sorted(SIZES), default="default")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plain", action="store_true", help="fast paths off (the pre-optimisation code)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from vlmrl.config import load_config
    from vlmrl.models import TinyConfig, make_tiny
    from vlmrl.rollout import shared_prompt
    from vlmrl.train.grpo import GRPOTrainer

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="profile_step_"))
    make_tiny(work / "model", TinyConfig(**SIZES[args.model_size]))
    if args.plain:
        shared_prompt.shared_prompt_supported = lambda model, batch: False
    cfg = load_config(
        overrides=[
            f"model.path={work / 'model'}",
            "data.task=count",
            "data.task_kwargs={max_count: 6, distractors: 3}",
            "data.eval_size=0",
            "reward.weights={accuracy: 1.0}",
            "rollout.n=4",
            "rollout.max_new_tokens=32",
            "train.batch_prompts=4",
            "train.micro_batch=16",
            "algo.kl_coef=0.0",
            f"log.run_dir={work / 'run'}",
            "log.tensorboard=false",
            "log.progress=false",
            "log.groups_per_step=0",
            "train.save_every=0",
        ]
    )
    trainer = GRPOTrainer(cfg)
    trainer.engine.shared_prefill = not args.plain
    if args.plain:  # the per-tensor AdamW loop of before, too
        for group in trainer.optimizer.param_groups:
            group["fused"] = None
    for _ in range(args.warmup):
        trainer.train_step()

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(args.steps):
        trainer.train_step()
    prof.disable()
    wall = (time.perf_counter() - t0) / args.steps
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    phases = {}
    for label, name, suffix in PHASES:
        ct = sum(v[3] for (f, _, n), v in stats.items() if n == name and f.endswith(suffix))
        phases[label] = ct / args.steps

    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(2):
            trainer.train_step()
    events = sorted(p.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = [
        {"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / 2,
         "share": e.self_cpu_time_total / total, "calls_per_step": e.count / 2}
        for e in events[:12]
    ]  # fmt: skip

    lines = [
        f"step (cProfile on, {args.steps} steps): {wall:.3f} s; {'plain' if args.plain else 'fast'} paths, "
        f"{args.threads} thread(s)\n",
        "| phase | s/step | share |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v:.3f} | {v / wall:.0%} |" for k, v in phases.items()]
    lines += ["", "| top op (self CPU) | ms/step | share | calls/step |", "|---|---|---|---|"]
    for t in top:
        ms, share, calls = t["self_ms_per_step"], t["share"], t["calls_per_step"]
        lines.append(f"| `{t['op']}` | {ms:.1f} | {share:.0%} | {calls:.0f} |")
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        blob = {"command": "python bench/profile_step.py " + " ".join(sys.argv[1:]), "step_s": wall,
                "phases_s": phases, "top_ops": top, "markdown": "\n".join(lines)}  # fmt: skip
        out.with_suffix(".json").write_text(json.dumps(blob, indent=2))


if __name__ == "__main__":
    main()
