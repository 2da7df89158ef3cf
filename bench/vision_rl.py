"""The vision-specific experiments: encoder policy, perception credit, and whether guessing pays.

Superseded, kept as history: these runs start from a from-scratch SFT model and came out at noise.
The failure-mode experiments on the pretrained tiny base replace them (``vlmrl experiment NAME``,
``vlmrl.experiments``; results in ``bench/results/challenges.json``).

Each experiment: one SFT warm-start (cached in ``--work``), then GRPO arms × seeds from it, each
evaluated on the same held-out split (greedy) every ``eval.every`` steps.

- ``encoder`` — ``vision.train`` frozen vs full vs lora on the demo's shifted counting task
  (SFT on blue distractors, GRPO on green/yellow ones): final accuracy, blind gap and drift.
- ``credit`` — ``algo.credit`` scalar vs segment with the ``look`` template and reward
  ``accuracy + 0.5·perception`` on the same shift: steps to reach a held-out accuracy target.
- ``looking`` — plain GRPO vs PAPO (``algo.papo_coef``, the paper's γ 0.02 / η 0.03 / mask 0.6)
  vs NoisyRollout (half of each group from a noised image, σ 0.3 annealed) on the same shift:
  final accuracy, blind gap, PAPO's KL, reward of noisy vs clean rollouts.
- ``guessing`` — POPE-style existence questions where 80% of training probes are "yes" (guessing
  "yes" pays), with and without the perception reward: the hallucination rate (``false_yes``:
  "yes" about an absent object on balanced held-out probes) and the look span's false mentions.

    .venv/bin/python bench/vision_rl.py --experiments encoder credit guessing --seeds 0 1 2

Writes ``OUT.json`` (every number and curve), ``OUT.md`` (tables) and ``OUT_<experiment>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from vlmrl.config import load_config
from vlmrl.demo import demo_config_path
from vlmrl.models import TinyConfig, make_tiny
from vlmrl.train.grpo import GRPOTrainer
from vlmrl.train.sft import run_sft

COUNT_SHIFT: list[str] = []  # demo.yaml as it is
LOOK = [
    "data.template=look",
    "rollout.max_new_tokens=32",
    "eval.max_new_tokens=32",
]

#: experiment -> (SFT + common overrides, {arm: overrides}, what to report)
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "encoder": {
        "common": [*COUNT_SHIFT, "train.steps=100", "eval.every=25", "eval.blind=true", "data.eval_size=100"],
        "arms": {
            "frozen": ["vision.train=frozen"],
            "full": ["vision.train=full"],
            "lora": ["vision.train=lora"],
        },
        "report": [
            "eval/accuracy",
            "eval/blind_gap",
            "vision/cos_sim",
            "vision/merger_cos_sim",
            "vision/weight_change",
        ],
    },
    "credit": {
        "common": [
            *COUNT_SHIFT,
            *LOOK,
            "reward.weights={accuracy: 1.0, perception: 0.5}",
            "train.steps=100",
            "eval.every=10",
            "data.eval_size=100",
        ],
        "arms": {"scalar": ["algo.credit=scalar"], "segment": ["algo.credit=segment"]},
        "report": ["eval/accuracy", "eval/reward"],
        "target": 0.8,
    },
    "looking": {
        "common": [*COUNT_SHIFT, "train.steps=100", "eval.every=20", "eval.blind=true", "data.eval_size=100"],
        "arms": {
            "grpo": [],
            "papo": ["algo.papo_coef=0.02", "algo.papo_entropy_coef=0.03", "algo.papo_mask_ratio=0.6"],
            "noisy": ["rollout.noisy_frac=0.5", "rollout.noise_std=0.3"],
        },
        "report": [
            "eval/accuracy",
            "eval/blind_gap",
            "actor/papo_kl",
            "actor/papo_entropy_masked",
            "reward/noisy",
            "reward/clean",
        ],
    },
    "guessing": {
        "common": [
            *LOOK,
            "data.task=pope",
            "data.task_kwargs={yes_ratio: 0.8, min_objects: 1, max_objects: 2, mode: mixed}",
            "sft.task_kwargs={yes_ratio: 0.5, min_objects: 1, max_objects: 2, mode: mixed}",
            "sft.train_size=null",
            "sft.steps=600",
            "train.steps=100",
            "eval.every=25",
            "eval.pope_size=50",
            "data.eval_size=100",
        ],
        "arms": {
            "accuracy_only": ["reward.weights={accuracy: 1.0, perception: 0.0}"],
            "with_perception": ["reward.weights={accuracy: 1.0, perception: 0.5}"],
        },
        "report": [
            "eval/accuracy",
            "eval/pope/false_yes",
            "eval/pope/yes_ratio",
            "eval/pope/accuracy",
            "reward/perception/false_mentions",
        ],
    },
}


def _final(hist: list[dict], key: str) -> float | None:
    vals = [h[key] for h in hist if key in h]
    if not vals:
        return None
    if key.startswith("reward/"):  # a training-rollout mean: average the last 10 steps
        return statistics.mean(vals[-10:])
    return vals[-1]


def run_experiment(
    name: str, seeds: list[int], root: Path, extra: list[str], only: list[str] | None = None
) -> dict:
    spec = EXPERIMENTS[name]
    base = [
        *spec["common"],
        *extra,
        f"sft.init={root / 'tiny'}",
        f"sft.out={root / 'sft'}",
        f"model.path={root / 'sft'}",
        "log.progress=false",
        "log.tensorboard=false",
        "train.save_every=0",
    ]
    sft_file = root / "sft_result.json"
    if sft_file.exists():
        sft = json.loads(sft_file.read_text())
    else:
        make_tiny(root / "tiny", TinyConfig())
        sft = run_sft(load_config(demo_config_path(), base))
        sft_file.write_text(json.dumps(sft))
    print(f"{name}: SFT {sft}", flush=True)
    arms: dict[str, list[dict]] = {}
    for arm, overrides in spec["arms"].items():
        if only and arm not in only:
            continue
        for seed in seeds:
            run_dir = root / f"{arm}_s{seed}"
            cfg = load_config(
                demo_config_path(),
                [*base, *overrides, f"train.seed={seed}", f"data.seed={seed}", f"log.run_dir={run_dir}"],
            )
            t0 = time.perf_counter()
            hist = GRPOTrainer(cfg).train()
            run = {
                "seed": seed,
                "seconds": time.perf_counter() - t0,
                "curve": [(h["step"], h["eval/accuracy"]) for h in hist if "eval/accuracy" in h],
                "final": {k: _final(hist, k) for k in spec["report"]},
                "start": {k: next((h[k] for h in hist if k in h), None) for k in spec["report"]},
            }
            if "target" in spec:
                run["steps_to_target"] = next((s for s, a in run["curve"] if a >= spec["target"]), None)
            arms.setdefault(arm, []).append(run)
            print(f"{name}/{arm} seed {seed}: {run['final']}", flush=True)
            (root / "partial.json").write_text(json.dumps(arms, indent=1))
    return {"experiment": name, "sft": sft, "arms": arms, "target": spec.get("target")}


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _mean_std(xs: list[float | None]) -> str:
    vals = [x for x in xs if x is not None]
    if not vals:
        return "—"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    miss = len(xs) - len(vals)
    return f"{statistics.mean(vals):.3f} ± {sd:.3f}" + (f" ({miss} n/a)" if miss else "")


def write_report(results: list[dict], out: Path, command: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "python": platform.python_version(),
    }
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = ["# Vision-specific RL experiments (tiny model, held-out, greedy)\n",
             f"Command: `{command}`  ", f"Machine: {meta['machine']}\n"]  # fmt: skip
    for r in results:
        keys = list(next(iter(r["arms"].values()))[0]["final"])
        lines += [f"## {r['experiment']}\n", f"SFT: {json.dumps(r['sft'])}\n"]
        head = ["arm", "start accuracy", *[f"final {k}" for k in keys]]
        if r["target"] is not None:
            head.append(f"steps to accuracy ≥ {r['target']}")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for arm, runs in r["arms"].items():
            row = [arm, _mean_std([x["start"]["eval/accuracy"] for x in runs])]
            row += [_mean_std([x["final"][k] for x in runs]) for k in keys]
            if r["target"] is not None:
                row.append(", ".join(str(x["steps_to_target"]) for x in runs) + " (per seed)")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("\nPer seed (final):\n")
        for arm, runs in r["arms"].items():
            for x in runs:
                vals = ", ".join(f"{k.split('/', 1)[1]}={_fmt(v)}" for k, v in x["final"].items())
                lines.append(f"- {arm} s{x['seed']}: {vals}")
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for r in results:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (arm, runs) in enumerate(r["arms"].items()):
            for j, x in enumerate(runs):
                xs, ys = zip(*x["curve"], strict=True)
                ax.plot(xs, ys, color=colours[i % len(colours)], alpha=0.8, marker=".",
                        label=arm if j == 0 else None)  # fmt: skip
        ax.set_title(f"{r['experiment']}: held-out accuracy during GRPO (one line per seed)")
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out.parent / f"{out.name}_{r['experiment']}.png")
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", nargs="+", default=sorted(EXPERIMENTS), choices=sorted(EXPERIMENTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=None, help="run only these arms (default: all)")
    ap.add_argument("--work", default="runs/bench_vision", help="where models and runs go")
    ap.add_argument("--out", default="bench/results/vision_rl", help="results path without suffix")
    ap.add_argument("overrides", nargs="*", help="extra dotted config overrides for every run")
    args = ap.parse_args()
    command = "python bench/vision_rl.py " + " ".join(
        ["--experiments", *args.experiments, "--seeds", *map(str, args.seeds)]
        + (["--arms", *args.arms] if args.arms else [])
        + ["--out", args.out, *args.overrides]
    )
    results = []
    for name in args.experiments:
        results.append(run_experiment(name, args.seeds, Path(args.work) / name, args.overrides, args.arms))
        write_report(results, Path(args.out), command)


if __name__ == "__main__":
    main()
