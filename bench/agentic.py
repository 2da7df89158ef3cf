"""Agentic ``zoom`` on the tiny model: SFT on tool traces + multi-turn GRPO vs the same budget without tools.

Two arms per seed, each from the same freshly made tiny model, the same number of SFT steps,
GRPO steps, prompts and samples per step:

- ``tools``    — SFT on ``sft_trace`` conversations (the right ``zoom_in`` call, the tool's
  enlarged crop, the gold answer), loss on the assistant turns only; then multi-turn GRPO with
  the env's trajectory reward (accuracy + format + tool bonus − call cost − budget penalty);
  held-out accuracy from greedy multi-turn episodes.
- ``no_tools`` — the plain single-turn path on the same task: SFT on ``<answer>gold</answer>``,
  then single-turn GRPO with reward ``accuracy + 0.1·format``; greedy single-turn accuracy.

The ``zoom`` task is built so that the pattern is unreadable at the processor's 112-px view
(chance: 1/3) but plain after ``zoom_in`` on the right 3×3 region. The default knobs
(``--task-kwargs``: ``say_region: true, tile: 96``) name the region in the question and make the
tile large in the zoomed crop: *where* to look is told, *what* is there must be seen through
the tool. With the region left to the red frame (``{}``) and the 40-px tile, the tiny model did
not learn the 9-way region choice in the first run (region right in 9% of calls, chance 1/9).

One departure, for time on 2 CPU cores: the tools arm uses ``tools_short``, the ``tools`` env
with only ``zoom_in`` and a one-line system prompt. The full JSON-schema system prompt is ~690
tokens under the tiny model's 1,024-token vocabulary — 4× the rest of an episode — which would
make every step ~4× slower. The model, the tool and the reward are the same.

    .venv/bin/python bench/agentic.py --seeds 0 --sft-steps 150 --grpo-steps 30

Writes ``bench/results/agentic.{json,md,png}``.
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

from _common import command_line  # bench/ is sys.path[0] when run as a script

from vlmrl.config import load_config
from vlmrl.data.stream import eval_samples
from vlmrl.envs import ToolEnv, register_env
from vlmrl.envs.registry import ENVS
from vlmrl.eval.multiturn import evaluate_multiturn
from vlmrl.models import TinyConfig, make_tiny
from vlmrl.run.metrics import read_metrics
from vlmrl.train.grpo import GRPOTrainer
from vlmrl.train.sft import run_sft

SHORT_SYSTEM = (
    "Tool zoom_in(region): region is one of top-left, top, top-right, left, center, right, "
    "bottom-left, bottom, bottom-right. Call it as "
    '<tool_call>{"name": "zoom_in", "arguments": {"region": ...}}</tool_call>, '
    "then answer as <answer>...</answer>."
)


class ShortToolEnv(ToolEnv):
    """``ToolEnv`` with ``zoom_in`` only and a one-line system prompt (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("tools", ("zoom_in",))
        super().__init__(**kwargs)

    def system_prompt(self) -> str:
        return SHORT_SYSTEM


if "tools_short" not in ENVS:
    register_env("tools_short", ShortToolEnv)


def common(model: Path, run: Path, args, seed: int) -> list[str]:
    return [
        f"model.path={model}",
        f"log.run_dir={run}",
        "data.task=zoom",
        f"data.task_kwargs={args.task_kwargs}",
        f"data.seed={seed}",
        f"train.seed={seed}",
        f"train.steps={args.grpo_steps}",
        f"train.batch_prompts={args.prompts}",
        f"rollout.n={args.n}",
        "rollout.temperature=1.0",
        f"train.lr={args.lr}",
        f"train.micro_batch={args.prompts * args.n}",
        f"eval.every={args.eval_every}",
        f"data.eval_size={args.eval_size}",
        f"eval.batch_size={args.eval_size}",
        "eval.drift=false",
        "log.progress=false",
        "log.tensorboard=false",
        "log.groups_per_step=2",
        "train.save_every=0",
        "train.keep_checkpoints=1",
        "reward.weights={accuracy: 1.0, format: 0.1}",
        f"sft.steps={args.sft_steps}",
        f"sft.batch_size={args.sft_batch}",
        f"sft.lr={args.sft_lr}",
    ]


ARMS = {
    "tools": [
        "env.name=tools_short",
        "env.max_turns=3",
        "env.max_tool_calls=2",
        "env.turn_max_new_tokens=48",  # a zoom_in call is 38 tokens under the tiny vocabulary
        "env.max_total_tokens=256",
    ],
    "no_tools": ["data.template=answer", "rollout.max_new_tokens=12", "eval.max_new_tokens=12"],
}


def run_arm(arm: str, seed: int, args, work: Path) -> dict[str, Any]:
    base = work / f"seed{seed}"
    model = base / "tiny"
    if not (model / "config.json").exists():
        make_tiny(model, TinyConfig(seed=seed))
    sft_out = base / f"{arm}_sft"
    run = base / f"{arm}_grpo"
    overrides = [*common(model, run, args, seed), *ARMS[arm], f"sft.out={sft_out}"]
    cfg = load_config(overrides=overrides)
    cached = sft_out / "sft_result.json"
    if (sft_out / "config.json").exists() and cached.exists():  # an SFT of these settings already ran
        sft = json.loads(cached.read_text())
    else:
        t0 = time.perf_counter()
        sft = run_sft(cfg, log_every=max(1, args.sft_steps // 5))
        sft["seconds"] = time.perf_counter() - t0
        cached.write_text(json.dumps(sft))
    t_sft = sft["seconds"]
    cfg = load_config(overrides=[*overrides[1:], f"model.path={sft_out}"])
    t1 = time.perf_counter()
    trainer = GRPOTrainer(cfg)
    history = trainer.train()
    t_grpo = time.perf_counter() - t1
    region = region_right(trainer, cfg) if arm == "tools" else None
    rows = read_metrics(run) if (run / "metrics.jsonl").exists() else history
    evals = [(r["step"], r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]
    train_curve = {
        k: [(r["step"], r[k]) for r in rows if k in r]
        for k in (
            "env/valid_call_rate",
            "env/tool_calls_per_episode",
            "reward/total",
            "reward/accuracy",
            "env/turns",
        )
    }
    eval_env = {
        k: [(r["step"], r[k]) for r in rows if k in r]
        for k in ("eval/valid_call_rate", "eval/tool_calls_per_episode")
    }
    return {
        "arm": arm,
        "seed": seed,
        "sft": sft,
        "sft_seconds": t_sft,
        "grpo_seconds": t_grpo,
        "grpo_s_per_step": t_grpo / max(args.grpo_steps, 1),
        "eval_accuracy": evals,
        "final_accuracy": evals[-1][1] if evals else None,
        "train": train_curve,
        "eval_env": {k: v for k, v in eval_env.items() if v},
        "region_right": region,
    }


def region_right(trainer: GRPOTrainer, cfg) -> float:
    """Held-out greedy episodes of the trained policy: the share whose first call zooms into the
    tile's region (the tool's argument is right, whatever the answer)."""
    samples = eval_samples(cfg.data)
    res = evaluate_multiturn(trainer.policy, samples, cfg, cfg.eval.batch_size, return_outputs=True)
    hits = [
        bool(o["turns"]) and f'"region": "{s.facts["region"]}"' in o["turns"][0]
        for s, o in zip(samples, res["outputs"], strict=True)
    ]
    return sum(hits) / max(len(hits), 1)


def summarise(results: list[dict], args) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arm in ARMS:
        rs = [r for r in results if r["arm"] == arm]
        if not rs:
            continue
        finals = [r["final_accuracy"] for r in rs if r["final_accuracy"] is not None]
        # the GRPO run's step-0 evaluation: the SFT model, the run's own eval settings
        after_sft = [r["eval_accuracy"][0][1] if r["eval_accuracy"] else None for r in rs]
        out[arm] = {
            "seeds": [r["seed"] for r in rs],
            "accuracy_after_sft": after_sft,
            "accuracy_final": finals,
            "accuracy_final_mean": statistics.mean(finals) if finals else None,
            "accuracy_final_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "grpo_s_per_step": statistics.mean(r["grpo_s_per_step"] for r in rs),
            "sft_seconds": statistics.mean(r["sft_seconds"] for r in rs),
            "region_right": [r.get("region_right") for r in rs],
        }
    return out


def write_md(path: Path, summary: dict, results: list[dict], args, cmd: str) -> None:
    lines = [
        "# Agentic `zoom`: tools (SFT on traces + multi-turn GRPO) vs the same budget without tools",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared), "
        "torch CPU.",
        f"Tiny Qwen2.5-VL (`make-tiny`, default config, seed = run seed); SFT {args.sft_steps} steps × "
        f"{args.sft_batch}, GRPO {args.grpo_steps} steps × {args.prompts} prompts × {args.n} samples; "
        f"held-out greedy accuracy on {args.eval_size} samples. Chance = 1/3. "
        f"Task knobs: `{args.task_kwargs}`.",
        "",
        "| arm | seeds | acc. after SFT | acc. after GRPO (mean ± std) | zoom region right | GRPO s/step |",
        "|---|---|---|---|---|---|",
    ]
    for arm, s in summary.items():
        acc = (
            "n/a"
            if s["accuracy_final_mean"] is None
            else f"{s['accuracy_final_mean']:.3f} ± {s['accuracy_final_std']:.3f}"
        )
        sft = ", ".join("n/a" if a is None else f"{a:.2f}" for a in s["accuracy_after_sft"])
        region = ", ".join("–" if x is None else f"{x:.2f}" for x in s["region_right"])
        lines.append(f"| {arm} | {s['seeds']} | {sft} | {acc} | {region} | {s['grpo_s_per_step']:.1f} |")
    lines += ["", "Tool use over GRPO training (tools arm; sampled episodes, mean per step):", ""]
    lines += [
        "| seed | step | valid call rate | tool calls / episode | turns | reward |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["arm"] != "tools":
            continue
        t = r["train"]
        steps = [s for s, _ in t["env/valid_call_rate"]]
        pick = sorted({steps[0], steps[len(steps) // 2], steps[-1]}) if steps else []
        for st in pick:
            get = {k: dict(v).get(st) for k, v in t.items()}
            lines.append(
                f"| {r['seed']} | {st} | {get['env/valid_call_rate']:.2f} | "
                f"{get['env/tool_calls_per_episode']:.2f} | {get['env/turns']:.2f} | "
                f"{get['reward/total']:.3f} |"
            )
    lines += ["", "Plot: `agentic.png`. Every number: `agentic.json`.", ""]
    path.write_text("\n".join(lines))


def plot(path: Path, results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for r in results:
        style = "-" if r["arm"] == "tools" else "--"
        if r["eval_accuracy"]:
            xs, ys = zip(*r["eval_accuracy"], strict=True)
            ax[0].plot(xs, ys, style, marker="o", label=f"{r['arm']} seed {r['seed']}")
        if r["arm"] == "tools":
            for k, a in (("env/valid_call_rate", ax[1]), ("env/tool_calls_per_episode", ax[2])):
                if r["train"][k]:
                    xs, ys = zip(*r["train"][k], strict=True)
                    a.plot(xs, ys, label=f"seed {r['seed']}")
    ax[0].axhline(1 / 3, color="grey", lw=0.8, ls=":", label="chance")
    ax[0].set(title="held-out accuracy (greedy)", xlabel="GRPO step", ylim=(0, 1))
    ax[1].set(title="tool-call validity (sampled)", xlabel="GRPO step", ylim=(0, 1.05))
    ax[2].set(title="tool calls per episode (sampled)", xlabel="GRPO step")
    for a in ax:
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--sft-steps", type=int, default=150)
    ap.add_argument("--sft-batch", type=int, default=16)
    ap.add_argument("--sft-lr", type=float, default=1e-3)
    ap.add_argument("--grpo-steps", type=int, default=30)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--eval-size", type=int, default=48)
    ap.add_argument(
        "--task-kwargs", default="{say_region: true, tile: 96}", help="zoom task knobs (YAML mapping)"
    )
    ap.add_argument("--work", type=Path, default=Path("runs/bench_agentic"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/agentic"))
    args = ap.parse_args()
    cmd = command_line("agentic.py", args)
    results = []
    for seed in args.seeds:
        for arm in args.arms:
            r = run_arm(arm, seed, args, args.work)
            print(
                json.dumps(
                    {k: r[k] for k in ("arm", "seed", "final_accuracy", "sft_seconds", "grpo_seconds")}
                )
            )
            results.append(r)
            summary = summarise(results, args)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".json").write_text(
                json.dumps({"command": cmd, "summary": summary, "runs": results}, indent=1)
            )
            write_md(args.out.with_suffix(".md"), summary, results, args, cmd)
            plot(args.out.with_suffix(".png"), results)


if __name__ == "__main__":
    main()
