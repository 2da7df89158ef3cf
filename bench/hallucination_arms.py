"""The ``hallucination`` challenge's other fixes, measured beside the registered one.

``vlmrl experiment hallucination`` runs the baseline and the registered fix (negatives in the
mix). This script runs more arms of the same setting (``vlmrl.experiments.hallucination.ARMS``)
with the same shared warm-start, seeds and held-out set, and compares each with the baseline's
per-seed values read from ``challenges.json`` (paired by seed, ``vlmrl.experiments.verdict``):

    .venv/bin/python bench/hallucination_arms.py --arms penalty --seeds 0 1 2 \
        --challenges bench/results/challenges.json --out bench/results/hallucination_arms

Writes ``OUT.json`` (every arm × seed: false-yes, curve and side numbers) and ``OUT.md`` (one row
per arm: mean ± std, the paired difference to the baseline, its SE and the verdict).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from vlmrl.experiments.hallucination import ARMS, run_arm
from vlmrl.experiments.verdict import mean_std, verdict


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def table(rows: dict[str, list[dict]], baseline: list[float], seeds: list[int]) -> str:
    """One markdown row per arm: false-yes per seed, mean ± std, paired difference to the baseline."""
    lines = [
        "| arm | false-yes per seed | mean ± std | POPE F1 (mean) | baseline − arm (SE) | beats baseline |",
        "|---|---|---|---|---|---|",
    ]
    for arm, runs in rows.items():
        vals = [r["value"] for r in runs]
        m, s = mean_std(vals)
        f1 = sum(r["extra"]["pope_f1"] for r in runs) / len(runs)
        v = verdict(baseline, vals, higher_is_better=False)
        per_seed = " / ".join(fmt(x) for x in vals)
        beats = "n/a" if v.fix_beats is None else ("yes" if v.fix_beats else "no")
        diff = f"{v.diff_mean:+.3f} ({fmt(v.diff_se)})"
        lines.append(f"| `{arm}` | {per_seed} | {fmt(m)} ± {fmt(s)} | {f1:.3f} | {diff} | {beats} |")
    return "\n".join(lines) + f"\n\nSeeds {' '.join(map(str, seeds))}; baseline false-yes {baseline}.\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arms", nargs="+", default=["penalty"], choices=sorted(ARMS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--challenges", default="bench/results/challenges.json")
    ap.add_argument("--out", default="bench/results/hallucination_arms")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--table-only",
        action="store_true",
        help="no runs: the table from OUT.json's runs (baseline done later)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.table_only:
        record = json.loads(out.with_suffix(".json").read_text())
        write_table(out, record, args.challenges)
        return
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="vlmrl-hallucination-arms-") as work:
        for arm in args.arms:
            for seed in args.seeds:
                t0 = time.time()
                r = run_arm(arm, seed, False, Path(work))
                rows.setdefault(arm, []).append(
                    {"seed": seed, "value": r.value, "curve": r.curve, "extra": r.extra}
                )
                print(f"{arm} seed {seed}: false-yes {r.value:.3f} ({time.time() - t0:.0f} s)", flush=True)
    cmd = (
        f"python bench/hallucination_arms.py --arms {' '.join(args.arms)} --seeds "
        f"{' '.join(map(str, args.seeds))} --challenges {args.challenges} --out {args.out}"
    )
    record = {"command": cmd, "seeds": args.seeds, "arms": rows}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")  # the runs, whatever follows
    write_table(out, record, args.challenges)


def write_table(out: Path, record: dict, challenges: str) -> None:
    """``OUT.md``, and ``OUT.json`` with the baseline's per-seed values from ``challenges``."""
    entry = json.loads(Path(challenges).read_text())["hallucination"]
    if entry["seeds"] != record["seeds"]:
        raise SystemExit(f"seeds {record['seeds']} differ from the baseline's seeds {entry['seeds']}")
    baseline = entry["failure"]["baseline"]
    out.with_suffix(".json").write_text(json.dumps(record | {"baseline": baseline}, indent=2) + "\n")
    md = "# `hallucination`: other fixes beside the registered one\n\n"
    md += table(record["arms"], baseline, record["seeds"])
    out.with_suffix(".md").write_text(md + f"\nCommand: `{record['command']}`\n")


if __name__ == "__main__":
    main()
