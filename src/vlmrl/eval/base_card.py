"""Per-task numbers for the tiny base's model card: accuracy with the real image, with a blank one, chance.

- ``acc``: greedy accuracy on the task's held-out ``test`` split (same distribution as
  pretraining, samples never drawn in it).
- ``blind_acc``: the same prompts with every image replaced by a blank one of the same size: what
  the model gets from the text alone.
- ``chance``: the best constant answer's accuracy on the same samples (the majority gold
  answer's share), computed, not assumed.
- ``pope*``: also ``f1`` (POPE's F1 on "yes"); ``*_look``: also ``look_f1`` (the perception
  reward: F1 of the objects named in ``<look>`` against the scene).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from vlmrl.data.tasks import generate
from vlmrl.eval.accuracy import evaluate
from vlmrl.eval.blind import with_condition
from vlmrl.eval.pope import parse_prediction, pope_metrics
from vlmrl.models.base_mix import HELD_OUT, HELD_OUT_NOTES, PRETRAIN_MIX, MixEntry
from vlmrl.rewards import get_reward
from vlmrl.rewards.perception import perception_reward

FIRST = 50
"""The card also records accuracy on the first ``FIRST`` samples (a prefix of the same split)."""


def entry_samples(e: MixEntry, n: int, seed: int = 0, split: str = "test"):
    """``n`` samples of a mix entry's distribution (``test`` split: never drawn in pretraining)."""
    return generate(e.task, n, seed=seed, split=split, **e.knobs)


def evaluate_entry(policy, e: MixEntry, n: int, seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """The card's row for one entry; see the module docstring."""
    samples = entry_samples(e, n, seed)
    template = e.templates[0]
    reward = get_reward("accuracy")
    real = evaluate(policy, samples, template, reward, e.max_new_tokens, batch_size, return_outputs=True)
    blind = evaluate(policy, with_condition(samples, "blank"), template, reward, e.max_new_tokens, batch_size)
    golds = [s.answer for s in samples]
    row: dict[str, Any] = {
        "acc": round(real["accuracy"], 4),
        "blind_acc": round(blind["accuracy"], 4),
        "chance": round(Counter(golds).most_common(1)[0][1] / len(golds), 4),
        "n": len(samples),
    }
    completions = [o["completion"] for o in real["outputs"]]
    if len(samples) > FIRST:  # what a quick re-check of the card measures (tests/test_tiny_base.py)
        row["acc_first_50"] = round(sum(o["accuracy"] for o in real["outputs"][:FIRST]) / FIRST, 4)
    if e.task == "pope":
        row["f1"] = round(pope_metrics([parse_prediction(c) for c in completions], golds)["f1"], 4)
    if "look" in e.templates:
        scores = [perception_reward(c, s).total for c, s in zip(completions, samples, strict=True)]
        row["look_f1"] = round(sum(scores) / len(scores), 4)
    return row


def evaluate_entries(policy, entries, n: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{entry name: row}`` for every entry."""
    return {e.name: evaluate_entry(policy, e, n, seed) for e in entries}


def pretrain_command(state: dict[str, Any]) -> str:
    """The ``vlmrl pretrain-tiny`` line that reproduces a checkpoint from its ``pretrain_state.json``
    (``--stop-after`` when it was saved before the schedule's end)."""
    spec = state["spec"]
    cmd = (
        f"vlmrl pretrain-tiny --out {spec['out']} --steps {spec['steps']} --batch-size {spec['batch_size']} "
        f"--lr {spec['lr']} --seed {spec['seed']} --threads {spec['threads']}"
    )
    return cmd + (f" --stop-after {state['step']}" if state["step"] < spec["steps"] else "")


def card_table(rows: dict[str, dict[str, Any]]) -> str:
    """A markdown table of card rows (extra metrics in the last column)."""
    lines = ["| task | acc (real image) | acc (blank image) | chance | other |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        extra = ", ".join(f"{k} {r[k]:.3f}" for k in ("f1", "look_f1") if k in r)
        lines.append(f"| `{name}` | {r['acc']:.3f} | {r['blind_acc']:.3f} | {r['chance']:.3f} | {extra} |")
    return "\n".join(lines)


def write_card(path, state: dict[str, Any], rows: dict, held: dict) -> None:
    """Write ``README.md`` (the model card) and ``card.json`` (the same numbers) into the checkpoint."""
    path = Path(path)
    spec = state["spec"]
    mix = "\n".join(
        f"| `{e.name}` | `{e.task}` | `{json.dumps(e.knobs)}` | {', '.join(e.templates)} "
        f"| {e.weight} | {e.stage} |"
        for e in PRETRAIN_MIX
    )
    held_notes = "\n".join(f"- `{k}`: {v}" for k, v in HELD_OUT_NOTES.items())
    command = pretrain_command(state)
    n = next(iter(rows.values()))["n"] if rows else 0
    text = f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [vlmrl, qwen2_5_vl, tiny, procedural]
---
# vlmrl-tiny-base

A {state["params"] / 1e6:.2f} M-parameter Qwen2.5-VL (real architecture, tiny config) pretrained by
vlmrl's own code on procedural visual tasks, so that what RL does to perception can be seen on a
CPU. Load it with `load_policy("vlmrl-tiny-base")` or plain
`AutoModelForImageTextToText.from_pretrained(<this folder>)`.

- Command: `{command}`
- Seed {spec["seed"]}; {state["step"]} steps of batch {spec["batch_size"]};
  wall time {state["seconds"]:.0f} s on a 2-core CPU machine ({spec["threads"] or "default"} torch thread(s)).
- Images are resized to 112×112 (16 image tokens); tokenizer: byte-level BPE trained on the tasks' text.

## Data mix (fresh procedural samples every step; stage 1 joins after 15% of the steps)
| entry | task | knobs | templates | weight | stage |
|---|---|---|---|---|---|
{mix}

## Held-out accuracy, in-distribution ({n} `test`-split samples per task, greedy)
{card_table(rows)}

## Held-out shifts: distributions it never saw (what RL is measured on)
{held_notes}

{card_table(held)}

`chance` is the best constant answer's share of the same samples; `blank image` replaces every
image with a blank one. Numbers: `card.json` in this folder.
"""
    (path / "README.md").write_text(text)
    (path / "card.json").write_text(json.dumps({"state": state, "tasks": rows, "held_out": held}, indent=2))


def measure_card(path, n: int, write: bool = False) -> tuple[dict, dict, dict]:
    """Load the checkpoint at ``path`` and evaluate every mix entry and held-out shift on ``n``
    samples; returns ``(state, rows, held)`` and, with ``write``, rewrites its card from them."""
    from vlmrl.models.loading import load_policy

    path = Path(path)
    policy = load_policy(path)
    policy.model.eval()
    rows = evaluate_entries(policy, PRETRAIN_MIX, n)
    held = evaluate_entries(policy, HELD_OUT, n)
    state = json.loads((path / "pretrain_state.json").read_text())
    if write:
        write_card(path, state, rows, held)
    return state, rows, held
