"""GRPO on video prompts from the tiny base: held-out accuracy before and after, over seeds.

    .venv/bin/python bench/video.py --seeds 0 1 2          # the numbers in bench/results/video.md
    .venv/bin/python bench/video.py --quick --seeds 0      # smoke run (CI), under a minute
    # or one process per seed, then the summary:
    .venv/bin/python bench/video.py --seeds 1 --out runs/video_seed1   # (and 0, 2 alike)
    .venv/bin/python bench/video.py --merge runs/video_seed0.json runs/video_seed1.json runs/video_seed2.json

Config: ``src/vlmrl/configs/video.yaml`` (task ``motion``: a circle jumps between quadrants over
4 frames; the answer is where it ends). Held-out: ``motion`` with smaller circles (radius 5-8 %
of the side; training saw 9-15 %), never trained on; beside it, the training distribution's own
``test`` split and a far shift, 8-frame videos (4 temporal patches; training saw 2). All greedy,
on the same samples for every seed (``data.seed`` fixed), so before/after pairs are comparable;
the seed changes sampling and the order of training prompts.
The temporal blind gap is ``acc(real) − acc(shuffled_frames)`` on the held-out videos
(:mod:`vlmrl.eval.blind`). Statistics: per-seed gain, mean ± sample std, the paired standard
error and the 2-SE verdict of :mod:`vlmrl.experiments.verdict`.

Writes ``bench/results/video.json`` and ``video.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import command_line

from vlmrl.config.checks import claim_run_dir
from vlmrl.config.load import load_config
from vlmrl.data.tasks import generate, get_task
from vlmrl.eval.accuracy import evaluate
from vlmrl.eval.blind import blind_gap
from vlmrl.experiments.verdict import mean_std, verdict, verdict_line
from vlmrl.models.loading import load_policy
from vlmrl.rewards.plugins import reward_from_config
from vlmrl.train.grpo import GRPOTrainer

CONFIG = Path(__file__).parents[1] / "src" / "vlmrl" / "configs" / "video.yaml"
#: The held-out distribution: the training task with smaller circles (never trained on) ...
HELD_OUT = {"radius": [0.05, 0.08]}
#: ... and a far shift: twice as many frames (temporal patches the model never saw together).
LONG = {"frames": 8}
QUICK = ("train.steps=2", "train.batch_prompts=2", "rollout.n=4")


def measure(policy, cfg, reward_fn, n: int) -> dict[str, float]:
    """Greedy accuracy on the held-out and in-distribution test videos, and the temporal blind gap."""
    knobs = dict(cfg.data.task_kwargs)
    held = generate(get_task(cfg.data.task, **{**knobs, **HELD_OUT}), n, seed=cfg.data.seed, split="test")
    same = generate(get_task(cfg.data.task, **knobs), n, seed=cfg.data.seed, split="test")
    long = generate(get_task(cfg.data.task, **{**knobs, **LONG}), n, seed=cfg.data.seed, split="test")
    tok = cfg.eval.max_new_tokens
    gap = blind_gap(
        policy, held, cfg.data.template, reward_fn, tok, 50, ("real", "shuffled_frames"), cfg.data.seed
    )
    return {
        "held_out": gap["conditions"]["real"]["accuracy"],
        "held_out_shuffled_frames": gap["conditions"]["shuffled_frames"]["accuracy"],
        "blind_gap": gap["blind_gap"],
        "in_distribution": evaluate(policy, same, cfg.data.template, reward_fn, tok, 50)["accuracy"],
        "long_videos": evaluate(policy, long, cfg.data.template, reward_fn, tok, 50)["accuracy"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=0, help="train.steps (0: the config's)")
    ap.add_argument("--eval-size", type=int, default=200)
    ap.add_argument("--root", default="runs/video_seeds")
    ap.add_argument("--quick", action="store_true", help="smoke run (2 steps, 16 eval videos)")
    ap.add_argument("--out", default="bench/results/video")
    ap.add_argument("--merge", nargs="+", default=None, help="combine the seeds of these result files")
    args = ap.parse_args()
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        rows = sorted((row for p in parts for row in p["seeds"]), key=lambda row: row["seed"])
        commands = "; ".join([*(p["command"] for p in parts), command_line("video.py", args)])
        write(summarize(rows, load_config(CONFIG), parts[0]["eval_size"], commands), Path(args.out))
        return
    torch.set_num_threads(1)
    n_eval = 16 if args.quick else args.eval_size
    base = [*(QUICK if args.quick else ()), *((f"train.steps={args.steps}",) if args.steps else ())]
    base += ["log.progress=false", "eval.blind=false"]
    cfg = load_config(CONFIG, base)
    reward_fn = reward_from_config(cfg.reward)
    before = measure(load_policy(cfg.model.path), cfg, reward_fn, n_eval)  # greedy: the same for every seed
    print("before", before, flush=True)
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        run_dir = Path(args.root) / f"seed{seed}"
        run_cfg = load_config(
            CONFIG, [*base, f"train.seed={seed}", f"log.run_dir={run_dir}", f"eval.every={cfg.train.steps}"]
        )
        claim_run_dir(run_dir, overwrite=True)  # each bench run replaces the last one's
        trainer = GRPOTrainer(run_cfg)
        trainer.train()
        after = measure(trainer.policy, run_cfg, reward_fn, n_eval)
        rows.append(
            {"seed": seed, "before": before, "after": after, "seconds": round(time.perf_counter() - t0, 1)}
        )
        print(rows[-1], flush=True)
    run_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "merge"})
    write(summarize(rows, cfg, n_eval, command_line("video.py", run_args)), Path(args.out))


def write(result: dict, out: Path) -> None:
    """``out.json`` and ``out.md``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def summarize(rows: list[dict], cfg, n_eval: int, command: str) -> dict:
    """Per-seed rows plus mean ± std of the held-out gain, its paired SE and the 2-SE verdict."""
    v = verdict([r["before"]["held_out"] for r in rows], [r["after"]["held_out"] for r in rows], True)
    gains = [r["after"]["held_out"] - r["before"]["held_out"] for r in rows]
    mean, sd = mean_std(gains)
    return {
        "command": command,
        "task": cfg.data.task,
        "task_kwargs": cfg.data.task_kwargs,
        "held_out_kwargs": {**cfg.data.task_kwargs, **HELD_OUT},
        "long_kwargs": {**cfg.data.task_kwargs, **LONG},
        "eval_size": n_eval,
        "steps": cfg.train.steps,
        "seeds": rows,
        "gain_mean": round(mean, 4),
        "gain_std": None if sd is None else round(sd, 4),
        "gain_se": None if v.diff_se is None else round(v.diff_se, 4),
        "passes_2se": v.fix_beats,
        "verdict": verdict_line(v),
    }


def markdown(r: dict) -> str:
    """The results page: command, setting, one row per seed, the summary line."""
    lines = [
        "# GRPO on video prompts (tiny base)\n",
        f"`{r['command']}`: GRPO from `vlmrl-tiny-base` on `{r['task']}` {r['task_kwargs']}, "
        f"{r['steps']} steps (`src/vlmrl/configs/video.yaml`). Held-out: `{r['task']}` "
        f"{r['held_out_kwargs']} (smaller circles, never trained on), {r['eval_size']} videos, greedy; "
        f"in-distribution: the training knobs' test split; long: {r['long_kwargs']}. "
        "Blind gap: held-out accuracy with real minus shuffled frames (`shuffled_frames`).\n",
        "| seed | held-out before | after | gain | in-dist before → after | long before → after "
        "| shuffled frames before → after | blind gap before → after | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["seeds"]:
        b, a = row["before"], row["after"]
        lines.append(
            f"| {row['seed']} | {b['held_out']:.3f} | {a['held_out']:.3f} "
            f"| {a['held_out'] - b['held_out']:+.3f} "
            f"| {b['in_distribution']:.3f} → {a['in_distribution']:.3f} "
            f"| {b['long_videos']:.3f} → {a['long_videos']:.3f} "
            f"| {b['held_out_shuffled_frames']:.3f} → {a['held_out_shuffled_frames']:.3f} "
            f"| {b['blind_gap']:+.3f} → {a['blind_gap']:+.3f} | {row['seconds']:.0f} |"
        )
    sd = "n/a" if r["gain_std"] is None else f"{r['gain_std']:.3f}"
    se = "n/a" if r["gain_se"] is None else f"{r['gain_se']:.3f}"
    lines.append(
        f"\nHeld-out gain {r['gain_mean']:+.3f} ± {sd} (sample std), standard error {se}; {r['verdict']}"
    )
    lines.append(
        "\nThe base is greedy, so *before* is one number for every seed; the standard error is over seeds "
        "and leaves out the sampling error of the held-out set itself (about √(p(1−p)/n) ≈ 0.05 for "
        f"n = {r['eval_size']}), which every seed shares."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
