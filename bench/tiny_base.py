"""Measure the tiny base per task and (re)write its model card and ``bench/results/tiny_base.*``.

    .venv/bin/python bench/tiny_base.py --model runs/tiny-base --n 200 --write-card

For every pretraining-mix entry and every held-out shift: greedy accuracy with the real image,
with a blank image, and the best constant answer's share (chance), on ``--n`` samples of the
``test`` split (never drawn in pretraining). ``--write-card`` rewrites the checkpoint's
``README.md`` and ``card.json`` from these numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import command_line

from vlmrl.eval.base_card import card_table, measure_card, pretrain_command
from vlmrl.models.loading import resolve_model_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vlmrl-tiny-base")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--write-card", action="store_true")
    ap.add_argument("--out", default="bench/results/tiny_base")
    args = ap.parse_args()
    path = Path(resolve_model_path(args.model))
    t0 = time.perf_counter()
    state, rows, held = measure_card(path, args.n, write=args.write_card)
    result = {
        **rows,
        "held_out": held,
        "params": state["params"],
        "bytes": sum(f.stat().st_size for f in path.glob("*.safetensors")),
        "pretrain_seconds": round(state["seconds"], 1),
        "pretrain_steps": state["step"],
        "command": pretrain_command(state),
        "eval_command": command_line("tiny_base.py", args),
        "eval_seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    md = (
        f"# Tiny base: per-task held-out accuracy\n\nPretrained with `{result['command']}` "
        f"({result['pretrain_seconds']:.0f} s, {result['params'] / 1e6:.2f} M params, "
        f"{result['bytes'] / 1e6:.1f} MB); measured with `{result['eval_command']}`.\n\n"
        f"## In-distribution (test split)\n\n{card_table(rows)}\n\n"
        f"## Held-out shifts (never seen in pretraining)\n\n{card_table(held)}\n"
    )
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
