"""The demo's own config over several seeds: held-out accuracy on the shift before and after GRPO.

    .venv/bin/python bench/demo_seeds.py --seeds 0 1 2

Writes ``bench/results/demo.json`` as ``{"seeds": [{"seed", "before", "after", "seconds"}, …]}``
plus the summary (mean gain ± sample std, standard error, whether the gain passes two standard
errors) and ``demo.md``. The seed changes sampling and the order of training prompts; the
held-out split (``data.seed``) is the same for every seed, so before/after pairs are comparable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import command_line

from vlmrl.demo import run_demo
from vlmrl.experiments.verdict import mean_std, verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--root", default="runs/demo_seeds")
    ap.add_argument("--quick", action="store_true", help="smoke run (4 steps, 16 eval images)")
    ap.add_argument("--out", default="bench/results/demo")
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        r = run_demo(
            Path(args.root) / f"seed{seed}", quick=args.quick, seed=seed, overrides=("log.progress=false",)
        )
        rows.append(
            {
                "seed": seed,
                "before": r["before"],
                "after": r["after"],
                "blind_gap_before": r["blind_gap_before"],
                "blind_gap_after": r["blind_gap_after"],
                "seconds": round(r["seconds"], 1),
            }
        )
    gains = [r["after"] - r["before"] for r in rows]
    v = verdict([r["before"] for r in rows], [r["after"] for r in rows], higher_is_better=True)
    mean, sd = mean_std(gains)
    sd, se = sd or 0.0, v.diff_se or 0.0  # one seed: no spread, no standard error, no verdict
    result = {
        "seeds": rows,
        "task": r["task"],
        "task_kwargs": r["task_kwargs"],
        "eval_size": r["eval_size"],
        "steps": r["steps"],
        "gain_mean": round(mean, 4),
        "gain_std": round(sd, 4),
        "gain_se": round(se, 4),
        "passes_2se": v.fix_beats,
        "every_seed_positive": all(g > 0 for g in gains),
        "command": command_line("demo_seeds.py", args),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# `make demo` over {len(rows)} seeds\n",
        f"`{result['command']}`: GRPO from the tiny base on `{result['task']}` {result['task_kwargs']}, "
        f"{result['steps']} steps, {result['eval_size']} held-out images (greedy).\n",
        "| seed | before | after | gain | blind gap before → after | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row, g in zip(rows, gains, strict=True):
        lines.append(
            f"| {row['seed']} | {row['before']:.3f} | {row['after']:.3f} | {g:+.3f} | "
            f"{row['blind_gap_before']:+.3f} → {row['blind_gap_after']:+.3f} | {row['seconds']:.0f} |"
        )
    lines.append(
        f"\nGain {mean:+.3f} ± {sd:.3f} (sample std), standard error {se:.3f}; "
        f"passes two standard errors: {result['passes_2se']}."
    )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
