"""Asynchronous vs synchronous rollouts on the demo task, side by side, with the same cores.

    .venv/bin/python bench/async.py            # 3 seeds, 150 steps, ~8 min on 2 quiet cores
    .venv/bin/python bench/async.py --quick    # smoke run: 1 seed, 4 steps, 16 eval images

The demo's config (``src/vlmrl/configs/demo.yaml``: GRPO from ``vlmrl-tiny-base`` on
``count_new_distractors``, i.e. counting red circles among green/yellow distractors that
pretraining never showed) for ``--steps`` steps, once per arm and seed, the arms interleaved
(sync then async on even seeds, async then sync on odd ones) so that a change in the machine's
load hits both. Sync: one process, ``--threads`` (2) torch threads. Async (``rollout.mode: async``,
``rollout.staleness`` k): the trainer and its generation worker with ``--threads`` / 2 each.

Seconds per step: the mean of ``time/step_s`` after the first ``--warmup`` steps (the async
worker starts during the first). Held-out accuracy: greedy, on the task's eval split (``eval_size``
images never trained on), once at the end. Writes ``bench/results/async.json`` (the issue's keys
plus per-seed rows, load averages and both verdicts) and ``async.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# OpenMP threads that spin while waiting steal a shared CPU from the other arm's process; passive
# waiting is the fair setting for a side-by-side run (set before torch loads libgomp; recorded).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import command_line

from vlmrl.config import load_config
from vlmrl.experiments.verdict import mean_std, verdict, verdict_line
from vlmrl.train.grpo import GRPOTrainer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "vlmrl" / "configs" / "demo.yaml"


def run_arm(mode: str, seed: int, args: argparse.Namespace) -> dict:
    """One training run of ``mode`` (sync | async); returns its step times and final accuracy."""
    threads = args.threads if mode == "sync" else max(1, args.threads // 2)
    torch.set_num_threads(threads)
    overrides = [
        f"log.run_dir={Path(args.root) / f'{mode}_seed{seed}'}",
        f"train.seed={seed}",
        f"train.steps={args.steps}",
        f"rollout.mode={mode}",
        f"rollout.staleness={args.staleness}",
        f"data.eval_size={args.eval_size}",
        "train.save_every=0",
        "eval.every=0",
        "eval.blind=false",
        "eval.drift=false",
        "log.progress=false",
        "log.tensorboard=false",
    ]
    cfg = load_config(DEMO, overrides)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    trainer = GRPOTrainer(cfg)
    metrics = []
    for i in range(args.steps):
        metrics.append(trainer.train_step())
        if (i + 1) % 10 == 0:
            print(
                f"{mode} seed {seed}: step {i + 1}/{args.steps}, {metrics[-1]['time/step_s']:.2f} s",
                flush=True,
            )
    wall = time.perf_counter() - t0
    acc = trainer.evaluate()["eval/accuracy"]
    if mode == "async":
        trainer.engine.close()
    steps_s = [m["time/step_s"] for m in metrics[args.warmup :]]
    row = {
        "mode": mode,
        "seed": seed,
        "threads": threads,
        "s_per_step": sum(steps_s) / len(steps_s),
        "wall_s": round(wall, 1),
        "accuracy": acc,
        "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    for key in ("time/generate_s", "time/update_s", "time/wait_rollout_s", "time/worker_generate_s"):
        if key in metrics[-1]:  # where a step's time goes (async: the trainer's wait, the worker's sampling)
            row[key.split("/")[1]] = sum(m[key] for m in metrics[args.warmup :]) / len(steps_s)
    if mode == "async":
        row["staleness_mean"] = sum(m["rollout/staleness"] for m in metrics) / len(metrics)
        clip = [m["offpolicy/is_clip_frac"] for m in metrics if "offpolicy/is_clip_frac" in m]
        row["is_clip_frac_mean"] = sum(clip) / len(clip) if clip else 0.0
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=150, help="the demo config's own length")
    ap.add_argument("--warmup", type=int, default=2, help="first steps left out of the step time")
    ap.add_argument("--staleness", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="cores in all: sync gets them, async half each")
    ap.add_argument("--eval-size", type=int, default=200)
    ap.add_argument("--root", default="runs/bench_async")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 4 steps, 16 eval images")
    ap.add_argument("--out", default="bench/results/async")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.steps, args.warmup, args.eval_size = args.seeds[:1], 4, 1, 16
    rows: dict[str, list[dict]] = {"sync": [], "async": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(args.seeds):
        for mode in ("sync", "async") if i % 2 == 0 else ("async", "sync"):
            rows[mode].append(run_arm(mode, seed, args))
            partial = {
                "complete": False,
                "runs": rows["sync"] + rows["async"],
                "command": command_line("async.py", args),
            }
            out.with_suffix(".json").write_text(json.dumps(partial, indent=2) + "\n")  # replaced at the end
    sync_s = [r["s_per_step"] for r in rows["sync"]]
    async_s = [r["s_per_step"] for r in rows["async"]]
    sync_acc = [r["accuracy"] for r in rows["sync"]]
    async_acc = [r["accuracy"] for r in rows["async"]]
    speedups = [s / a for s, a in zip(sync_s, async_s, strict=True)]
    speed_v = verdict(sync_s, async_s, higher_is_better=False)  # async faster: fewer seconds per step
    acc_v = verdict(sync_acc, async_acc, higher_is_better=True)
    same_acc = acc_v.diff_se is not None and abs(acc_v.diff_mean) <= 2 * acc_v.diff_se
    sync_mean, async_mean = mean_std(sync_s)[0], mean_std(async_s)[0]
    result = {
        "complete": True,
        "sync_s_per_step": sync_mean,
        "async_s_per_step": async_mean,
        "speedup": sync_mean / async_mean,
        "seeds": args.seeds,
        "sync_acc": sync_acc,
        "async_acc": async_acc,
        "speedup_per_seed": speedups,
        "speed_verdict": verdict_line(speed_v),
        "accuracy_diff_mean": acc_v.diff_mean,
        "accuracy_diff_se": acc_v.diff_se,
        "accuracy_within_2se": same_acc or (acc_v.diff_se == 0.0 and acc_v.diff_mean == 0.0),
        "staleness": args.staleness,
        "steps": args.steps,
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "held_out": f"count_new_distractors eval split ({args.eval_size} images never trained on), greedy",
        "runs": rows["sync"] + rows["async"],
        "command": command_line("async.py", args),
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(result, rows))
    print(json.dumps({k: result[k] for k in ("sync_s_per_step", "async_s_per_step", "speedup")}))


def _markdown(r: dict, rows: dict[str, list[dict]]) -> str:
    lines = [
        "# Asynchronous vs synchronous rollouts",
        "",
        f"`{r['command']}`: the demo config, {r['steps']} steps, staleness k = {r['staleness']}, "
        f"{r['threads']} threads in all (sync: {r['threads']}; async: trainer + worker, half each). "
        f"Held-out: {r['held_out']}.",
        "",
        "| seed | sync s/step | async s/step | speedup | sync acc | async acc | load (1 min) sync / async |",
        "|---|---|---|---|---|---|---|",
    ]
    for s, a, sp in zip(rows["sync"], rows["async"], r["speedup_per_seed"], strict=True):
        lines.append(
            f"| {s['seed']} | {s['s_per_step']:.3f} | {a['s_per_step']:.3f} | {sp:.2f}× | "
            f"{s['accuracy']:.3f} | {a['accuracy']:.3f} | {s['load_avg_1min']} / {a['load_avg_1min']} |"
        )
    lines += [
        "",
        f"Speedup {r['speedup']:.2f}× (mean seconds per step {r['sync_s_per_step']:.3f} → "
        f"{r['async_s_per_step']:.3f}); {r['speed_verdict']}",
        f"Accuracy async − sync {r['accuracy_diff_mean']:+.3f} (SE {r['accuracy_diff_se']}); within 2 SE: "
        f"{r['accuracy_within_2se']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
