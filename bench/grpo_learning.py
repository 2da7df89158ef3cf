"""Does GRPO improve held-out accuracy over its starting checkpoint? Several tasks × seeds, on the CPU.

Per task: start from the shipped tiny base (``*_base`` settings) or build the tiny model from
scratch and SFT it on a few labelled images (the first release's setting), then run GRPO from
that checkpoint with several seeds (sampling, data order and procedural content all change with
the seed) and evaluate on the same held-out split before and after.

    .venv/bin/python bench/grpo_learning.py --tasks count_shift_base position_shift_base \
        --seeds 0 1 2 --out bench/results/grpo_learning_base

Writes ``OUT.json`` (every number) and ``OUT.md`` (the table), plus a plot ``OUT.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from vlmrl.config import load_config
from vlmrl.demo import demo_config_path
from vlmrl.experiments.verdict import mean_std, verdict
from vlmrl.models import TinyConfig, make_tiny
from vlmrl.train.grpo import GRPOTrainer
from vlmrl.train.sft import run_sft

#: The from-scratch SFT warm-start the first release measured (demo.yaml no longer carries it).
SCRATCH_SFT = [
    "sft.task_kwargs={max_count: 6, distractors: 3, distractor_colors: [blue]}",
    "sft.steps=400",
    "sft.batch_size=32",
    "sft.lr=1e-3",
    "sft.train_size=96",
]
#: Per-setting overrides on top of the demo config (vlmrl/configs/demo.yaml: GRPO on counting among
#: unseen green/yellow distractors). ``*_base`` settings start from the shipped tiny base (no SFT);
#: the others build the tiny model from scratch and SFT it first, as the first release did.
#: ``count_shift``: SFT on blue distractors, GRPO and evaluation on unseen green/yellow ones.
#: ``count_few_labels``: SFT on 16 labelled images of the GRPO distribution.
#: ``position_shift``: SFT on where a BLUE circle is (fresh labels, 700 steps: 100% held-out);
#: GRPO and evaluation on RED circles, which that model places right ~40% of the time.
#: ``count_shift_base`` / ``position_shift_base``: the base's held-out shifts ``count_new_distractors``
#: and ``position_small`` (vlmrl.models.base_mix.HELD_OUT).
POSITION = ["data.task=position", "rollout.max_new_tokens=8", "eval.max_new_tokens=8"]
TASKS: dict[str, list[str]] = {
    "count_shift": [*SCRATCH_SFT],
    "count_few_labels": [
        *SCRATCH_SFT,
        "data.task_kwargs={max_count: 6, distractors: 3, distractor_colors: [blue]}",
        "sft.train_size=16",
    ],
    "position_shift": [
        *POSITION,
        "data.task_kwargs={color: red}",
        "sft.task_kwargs={color: blue}",
        "sft.train_size=null",
        "sft.steps=700",
        "sft.batch_size=32",
        "sft.lr=1e-3",
    ],
    "count_shift_base": [],
    "position_shift_base": [*POSITION, "data.task_kwargs={radius: [0.04, 0.07]}"],
}


def run_task(task: str, seeds: list[int], root: Path, extra: list[str]) -> dict:
    from_base = task.endswith("_base")
    if from_base:
        base = [*TASKS[task], *extra]
        cfg = load_config(demo_config_path(), base)
        sft = {"accuracy_before": None, "accuracy_after": None, "model": cfg.model.path}
    else:
        base = [
            *TASKS[task],
            *extra,
            f"sft.init={root / 'tiny'}",
            f"sft.out={root / 'sft'}",
            f"model.path={root / 'sft'}",
        ]
        make_tiny(root / "tiny", TinyConfig())
        cfg = load_config(demo_config_path(), base)
        sft = run_sft(cfg)
    runs = []
    for seed in seeds:
        run_cfg = load_config(
            demo_config_path(),
            [
                *base,
                f"train.seed={seed}",
                f"data.seed={seed}",
                f"log.run_dir={root / f'grpo_s{seed}'}",
                "log.progress=false",
                "train.save_every=0",
                "eval.blind=false",
            ],
        )
        t0 = time.perf_counter()
        hist = GRPOTrainer(run_cfg).train()
        evals = [(h["step"], h["eval/accuracy"]) for h in hist if "eval/accuracy" in h]
        runs.append(
            {
                "seed": seed,
                "before": evals[0][1],
                "after": evals[-1][1],
                "curve": evals,
                "seconds": time.perf_counter() - t0,
            }
        )
        print(f"{task} seed {seed}: {evals[0][1]:.3f} -> {evals[-1][1]:.3f}", flush=True)
    gains = [r["after"] - r["before"] for r in runs]
    gain_mean, gain_std = mean_std(gains)
    gain_se = verdict([r["before"] for r in runs], [r["after"] for r in runs], higher_is_better=True).diff_se
    return {
        "task": task,
        "sft": sft,
        "runs": runs,
        "gain_mean": gain_mean,
        "gain_std": gain_std or 0.0,
        "gain_se": gain_se or 0.0,
        "after_mean": statistics.mean(r["after"] for r in runs),
        "before_mean": statistics.mean(r["before"] for r in runs),
    }


def write_report(results: list[dict], out: Path, command: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": command,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
        "python": platform.python_version(),
    }
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "# GRPO vs its starting checkpoint (held-out accuracy, greedy)\n",
        f"Command: `{command}`  ",
        f"Machine: {meta['machine']}\n",
        "| task | start (untrained → SFT, or the base) | after GRPO, per seed | gain mean ± std (SE) |",
        "|---|---|---|---|",
    ]
    for r in results:
        per_seed = ", ".join(f"s{x['seed']}: {x['before']:.3f}→{x['after']:.3f}" for x in r["runs"])
        sft = r["sft"]
        start = (
            f"{sft['model']}"
            if sft["accuracy_before"] is None
            else f"{sft['accuracy_before']:.3f} → {sft['accuracy_after']:.3f}"
        )
        lines.append(
            f"| {r['task']} | {start} | {per_seed} | {r['gain_mean']:+.3f} ± {r['gain_std']:.3f} "
            f"({r.get('gain_se', 0.0):.3f}) |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        for run in r["runs"]:
            xs, ys = zip(*run["curve"], strict=True)
            ax.plot(xs, ys, marker="o", label=f"seed {run['seed']}")
        ax.set_title(f"{r['task']}: held-out accuracy during GRPO")
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["count_shift"], choices=sorted(TASKS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--work", default="runs/bench_grpo", help="where models and runs go")
    ap.add_argument("--out", default="bench/results/grpo_learning", help="results path without suffix")
    ap.add_argument("overrides", nargs="*", help="extra dotted config overrides for every run")
    args = ap.parse_args()
    command = "python bench/grpo_learning.py " + " ".join(
        ["--tasks", *args.tasks, "--seeds", *map(str, args.seeds), "--out", args.out, *args.overrides]
    )
    results = []
    for task in args.tasks:
        results.append(run_task(task, args.seeds, Path(args.work) / task, args.overrides))
        write_report(results, Path(args.out), command)


if __name__ == "__main__":
    main()
