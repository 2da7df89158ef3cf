"""RL for visual generation on the CPU: Flow-GRPO vs DDPO on the same budget, and KL on vs off.

One pretrained generator (``vlmrl gen pretrain``: the 1.1 M-parameter flow-matching UNet of
``docs/facts.md``, 32 px, 18 prompts "N colour circles on the side"), then per seed three
arms with the same steps, prompts, group size, sampler steps and learning rate:

- ``flow_grpo``      — SDE rollouts (noise level a), group-relative advantages, KL β to the
  pretrained model on the step means;
- ``flow_grpo_nokl`` — the same with β = 0;
- ``ddpo``           — DDIM-η rollouts (η = 1), DDPO's per-prompt stat tracker, the same β.

Measured: the composite reward (count, colour, position; ``gen/rewards.py``) of 20-step ODE
samples on the 4 held-out prompts that RL never trains on (fixed noise, ``--eval-samples`` per
prompt), before and after RL; the same on the 14 train prompts (``--train-eval-samples``); the
rollout reward; and the reward-hacking watch (saturation, ink, distance to the pretraining
images). Seeds vary the RL run (prompt order, noise, timesteps), not the pretrained model.

The recorded run (``bench/results/gen_rl.md``) starts from a 200-step pretrain, which leaves
room to improve (washed-out colours: strict 0.04), with 224 images per step:

    vlmrl gen pretrain --steps 200 --out runs/gen_base200
    .venv/bin/python bench/gen_rl.py --base runs/gen_base200 --seeds 0 1 2 \
        --arms flow_grpo ddpo flow_grpo_nokl --steps 20 --prompts 14 --group 16 --lr 0.0001 \
        --timestep-fraction 0.3 --warmup 3 --eval-every 10 --eval-samples 64 --train-eval-samples 16

Writes ``bench/results/gen_rl.{json,md,png}`` and sample grids ``gen_rl_samples_*.png``
(``gen_rl_b48.*``: the earlier 48-images-per-step run from the 600-step base).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import command_line  # bench/ is sys.path[0] when run as a script

from vlmrl.gen.config import load_gen_config
from vlmrl.gen.model import load_flow_policy, sample_ode, to_uint8
from vlmrl.gen.prompts import prompt_ids
from vlmrl.gen.rewards import score_batch
from vlmrl.gen.trainer import GenGRPOTrainer, resolve_prompts

ARMS: dict[str, list[str]] = {
    "flow_grpo": ["algo.name=flow_grpo"],
    "flow_grpo_nokl": ["algo.name=flow_grpo", "algo.kl_coef=0"],
    "ddpo": ["algo.name=ddpo"],
}
WATCH = ("watch/saturation", "watch/ink", "watch/ref_distance", "watch/pixel_var")


def run_arm(arm: str, seed: int, args) -> dict[str, Any]:
    run = args.work / f"{arm}_seed{seed}"
    shutil.rmtree(run, ignore_errors=True)
    cfg = load_gen_config(
        overrides=[
            f"model.path={args.base}",
            f"log.run_dir={run}",
            f"train.seed={seed}",
            f"train.steps={args.steps}",
            f"train.prompts_per_step={args.prompts}",
            f"algo.group_size={args.group}",
            f"train.lr={args.lr}",
            f"algo.kl_coef={args.kl}",
            f"algo.clip_range={args.clip}",
            f"algo.timestep_fraction={args.timestep_fraction}",
            f"sample.stochastic_steps={args.stochastic_steps}",
            f"sample.same_noise={str(args.same_noise).lower()}",
            f"train.warmup_steps={args.warmup}",
            f"eval.every={args.eval_every}",
            f"eval.samples_per_prompt={args.eval_samples}",
            "log.progress=false",
            *ARMS[arm],
        ]
    )
    t0 = time.perf_counter()
    trainer = GenGRPOTrainer(cfg)
    rows = trainer.train()
    seconds = time.perf_counter() - t0
    train_after = ode_reward(trainer.policy, trainer.train_prompts, args.train_eval_samples, seed)
    evals = [r for r in rows if "eval/reward" in r]
    train_rows = [r for r in rows if "reward/total" in r]
    return {
        "arm": arm,
        "seed": seed,
        "seconds": seconds,
        "eval": [{k: v for k, v in r.items() if k.startswith("eval/") or k == "step"} for r in evals],
        "train_reward": [(r["step"], r["reward/total"]) for r in train_rows],
        "watch": {k: [(r["step"], r[k]) for r in train_rows if k in r] for k in WATCH},
        "kl": [(r["step"], r["actor/kl_ref"]) for r in train_rows if "actor/kl_ref" in r],
        "train_prompts_ode_after": train_after,
        "run_dir": str(run),
    }


def ode_reward(policy, prompts, k: int, seed: int) -> dict[str, float]:
    """Mean reward parts of ``k`` 20-step ODE samples per prompt from noise fixed by ``seed`` (the
    trainer evaluates only its held-out prompts; this scores the prompts RL trained on)."""
    ps = [p for p in prompts for _ in range(k)]
    x1 = torch.randn(
        (len(ps), 3, policy.spec.size, policy.spec.size), generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        imgs = to_uint8(sample_ode(policy.eval(), prompt_ids(ps), 20, x1=x1))
    _, parts = score_batch(imgs, ps)
    return {k_: float(np.mean(v)) for k_, v in parts.items()}


def _ms(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def summarise(results: list[dict]) -> dict[str, Any]:
    out = {}
    for arm in ARMS:
        rs = [r for r in results if r["arm"] == arm]
        if not rs:
            continue
        first = [r["eval"][0] for r in rs]
        last = [r["eval"][-1] for r in rs]
        late = [statistics.mean(v for _, v in r["train_reward"][-5:]) for r in rs]
        early = [statistics.mean(v for _, v in r["train_reward"][:5]) for r in rs]
        out[arm] = {
            "seeds": [r["seed"] for r in rs],
            "heldout_before": [e["eval/reward"] for e in first],
            "heldout_after": [e["eval/reward"] for e in last],
            "gain": [b["eval/reward"] - a["eval/reward"] for a, b in zip(first, last, strict=True)],
            "parts_after": {
                p: [e[f"eval/reward/{p}"] for e in last] for p in ("count", "colour", "position", "strict")
            },
            "parts_before": {
                p: [e[f"eval/reward/{p}"] for e in first] for p in ("count", "colour", "position", "strict")
            },
            "train_prompts_ode_before": [r["train_prompts_ode_before"]["total"] for r in rs],
            "train_prompts_ode_after": [r["train_prompts_ode_after"]["total"] for r in rs],
            "train_reward_first5": early,
            "train_reward_last5": late,
            "watch_before": {k: [e[f"eval/{k}"] for e in first] for k in WATCH},
            "watch_after": {k: [e[f"eval/{k}"] for e in last] for k in WATCH},
            "seconds": statistics.mean(r["seconds"] for r in rs),
        }
    return out


def write_md(path: Path, summary: dict, args, cmd: str) -> None:
    lines = [
        "# RL for visual generation: Flow-GRPO vs DDPO, KL on vs off (CPU, 32 px generator)",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared), "
        f"torch CPU. Base: `{args.base}` (`vlmrl gen pretrain`). Each arm: {args.steps} steps × "
        f"{args.prompts} prompts × {args.group} images, 10 sampler steps "
        f"({'the first ' + str(args.stochastic_steps) if args.stochastic_steps else 'all'} stochastic"
        f"{', one initial noise per group' if args.same_noise else ''}), each image trained on "
        f"{args.timestep_fraction:.0%} of its steps, lr {args.lr} ({args.warmup} warm-up steps), "
        f"clip {args.clip}, "
        f"β {args.kl} (nokl: 0). Held-out reward: 20-step ODE samples, {args.eval_samples} per prompt, "
        "4 prompts RL never trains on, fixed noise. Train prompts (ODE): the same, "
        f"{args.train_eval_samples} per prompt, on the 14 prompts RL trains on.",
        "",
        "| arm | seeds | held-out reward before | after | gain | count after | colour after | position after "
        "| strict before → after | train prompts (ODE) before → after "
        "| train rollouts first 5 → last 5 steps "
        "| s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, s in summary.items():
        pa = s["parts_after"]
        lines.append(
            f"| {arm} | {s['seeds']} | {_ms(s['heldout_before'])} | {_ms(s['heldout_after'])} | "
            f"{_ms(s['gain'])} | {_ms(pa['count'])} | {_ms(pa['colour'])} | {_ms(pa['position'])} | "
            f"{_ms(s['parts_before']['strict'])} → {_ms(pa['strict'])} | "
            f"{_ms(s['train_prompts_ode_before'])} → {_ms(s['train_prompts_ode_after'])} | "
            f"{_ms(s['train_reward_first5'])} → {_ms(s['train_reward_last5'])} | "
            f"{s['seconds']:.0f} |"
        )
    lines += [
        "",
        "Reward-hacking watch on the held-out samples, before → after (mean over seeds):",
        "",
        "| arm | saturation | ink share | pixel variance | distance to pretraining images |",
        "|---|---|---|---|---|",
    ]
    for arm, s in summary.items():
        cells = []
        for k in ("watch/saturation", "watch/ink", "watch/pixel_var", "watch/ref_distance"):
            b, a = statistics.mean(s["watch_before"][k]), statistics.mean(s["watch_after"][k])
            cells.append(f"{b:.3f} → {a:.3f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Plot: `gen_rl.png`. Sample grids: `gen_rl_samples_*.png`. Every number: `gen_rl.json`.",
        "",
    ]
    path.write_text("\n".join(lines))


def plot(path: Path, results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    colours = {"flow_grpo": "tab:blue", "flow_grpo_nokl": "tab:orange", "ddpo": "tab:green"}
    for r in results:
        c = colours.get(r["arm"], "k")
        lab = f"{r['arm']} s{r['seed']}"
        xs, ys = zip(*[(e["step"], e["eval/reward"]) for e in r["eval"]], strict=True)
        ax[0].plot(xs, ys, marker="o", color=c, alpha=0.7, label=lab)
        xs, ys = zip(*r["train_reward"], strict=True)
        ax[1].plot(xs, ys, color=c, alpha=0.5)
        if r["watch"]["watch/ref_distance"]:
            xs, ys = zip(*r["watch"]["watch/ref_distance"], strict=True)
            ax[2].plot(xs, ys, color=c, alpha=0.6)
    ax[0].set(title="held-out reward (ODE samples)", xlabel="RL step")
    ax[1].set(title="train reward (SDE/DDIM rollouts)", xlabel="RL step")
    ax[2].set(title="watch: distance to pretraining images", xlabel="RL step")
    ax[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, default=Path("runs/gen_base"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--kl", type=float, default=0.04)
    ap.add_argument("--clip", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--eval-samples", type=int, default=16, help="ODE samples per prompt in evaluations")
    ap.add_argument("--train-eval-samples", type=int, default=16, help="… per train prompt, after RL")
    ap.add_argument("--timestep-fraction", type=float, default=0.6)
    ap.add_argument(
        "--stochastic-steps", type=int, default=0, help="only the first N steps stochastic (0: all)"
    )
    ap.add_argument("--same-noise", action="store_true", help="one initial noise per group")
    ap.add_argument("--warmup", type=int, default=10, help="lr warm-up steps")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_gen"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/gen_rl"))
    args = ap.parse_args()
    cmd = command_line("gen_rl.py", args)
    base = load_flow_policy(args.base)
    train_before = {
        s: ode_reward(base, resolve_prompts("train"), args.train_eval_samples, s) for s in args.seeds
    }
    results = []
    for seed in args.seeds:
        for arm in args.arms:
            r = run_arm(arm, seed, args)
            r["train_prompts_ode_before"] = train_before[seed]
            print(
                json.dumps({"arm": arm, "seed": seed, "eval": [e["eval/reward"] for e in r["eval"]]}),
                flush=True,
            )
            results.append(r)
            summary = summarise(results)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".json").write_text(
                json.dumps({"command": cmd, "summary": summary, "runs": results}, indent=1)
            )
            write_md(args.out.with_suffix(".md"), summary, args, cmd)
            plot(args.out.with_suffix(".png"), results)
            if seed == args.seeds[0]:  # before / after grids of the first seed
                samples = Path(r["run_dir"]) / "samples"
                shutil.copy(samples / "step_0.png", args.out.parent / "gen_rl_samples_before.png")
                shutil.copy(samples / f"step_{args.steps}.png", args.out.parent / f"gen_rl_samples_{arm}.png")


if __name__ == "__main__":
    main()
