"""What can the tiny base's *frozen* vision tower separate? Candidate shifts for ``encoder_frozen``.

For each candidate (``position`` knobs: circle radius and contrast):

- ``base acc``: the base's greedy accuracy on 100 ``test``-split samples (``evaluate_entry``), and
  the same with a blank image;
- ``linear probe``: a linear read-out of the quadrant from the frozen tower's merger output (the 16
  image embeddings the language model sees, flattened, standardised per feature), trained with
  cross-entropy on 600 ``train``-split images and scored on 200 others. It asks whether the
  information is *in* the frozen features at all, not whether RL on the language model can use it.

    .venv/bin/python bench/encoder_frozen_probe.py --out bench/results/encoder_frozen_probe.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vlmrl.data.tasks.simple import QUADRANTS
from vlmrl.eval.base_card import entry_samples, evaluate_entry
from vlmrl.eval.drift import probe_batch, tower_features
from vlmrl.models.base_mix import MixEntry
from vlmrl.models.loading import load_policy
from vlmrl.models.vision import find_visual

CANDIDATES: list[dict] = [
    {"radius": (0.09, 0.15)},
    {"radius": (0.04, 0.07)},
    {"radius": (0.02, 0.03)},
    {"radius": (0.04, 0.07), "contrast": 0.3},
    {"radius": (0.04, 0.07), "contrast": 0.15},
    {"radius": (0.04, 0.07), "contrast": 0.06},
]
"""The pretraining distribution first, then smaller and fainter circles."""


def merger_features(policy, samples) -> torch.Tensor:
    """``[n, 16 · hidden]``: the frozen tower's merger output per image, flattened."""
    visual, out = find_visual(policy.model), []
    for i in range(0, len(samples), 64):
        feats = tower_features(
            visual, probe_batch(policy.processor, [s.images[0] for s in samples[i : i + 64]])
        )
        m = feats["merger"]  # [images · 16, hidden]
        out.append(m.view(-1, 16 * m.shape[-1]))
    return torch.cat(out)


def linear_probe(policy, knobs: dict, n_train: int = 600, n_test: int = 200, steps: int = 300) -> float:
    """Held-out accuracy of a linear quadrant read-out (Adam, lr 1e-2, L2 1e-3) on frozen features."""
    e = MixEntry("probe", "position", knobs)
    train, test = entry_samples(e, n_train, seed=1, split="train"), entry_samples(e, n_test, seed=2)
    x_tr, x_te = merger_features(policy, train), merger_features(policy, test)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    y_tr = torch.tensor([QUADRANTS.index(s.answer) for s in train])
    y_te = torch.tensor([QUADRANTS.index(s.answer) for s in test])
    w = torch.zeros(x_tr.shape[1], len(QUADRANTS), requires_grad=True)
    b = torch.zeros(len(QUADRANTS), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x_tr @ w + b, y_tr) + 1e-3 * w.pow(2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((x_te @ w + b).argmax(1) == y_te).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/encoder_frozen_probe.md")
    ap.add_argument("--only", nargs="+", type=int, help="indices into CANDIDATES (default: all)")
    args = ap.parse_args()
    chosen = [CANDIDATES[i] for i in args.only] if args.only else CANDIDATES
    only = f" --only {' '.join(map(str, args.only))}" if args.only else ""
    torch.manual_seed(0)
    policy = load_policy("vlmrl-tiny-base")
    policy.model.eval()
    lines = [
        "# What the frozen tower of vlmrl-tiny-base separates (position shifts)\n",
        f"Command: `python bench/encoder_frozen_probe.py{only} --out {args.out}`\n",
        "| position knobs | base acc | base acc, blank image | linear probe on frozen features |",
        "|---|---|---|---|",
    ]
    for knobs in chosen:
        t0 = time.time()
        row = evaluate_entry(policy, MixEntry("x", "position", knobs, max_new_tokens=10), 100)
        probe = linear_probe(policy, knobs)
        lines.append(f"| `{knobs}` | {row['acc']:.3f} | {row['blind_acc']:.3f} | {probe:.3f} |")
        print(lines[-1], f"({time.time() - t0:.0f} s)", flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
