"""``rollouts/step_N.jsonl``: what the model said, to whom, and how it was scored, group by group.

GRPO learns from the differences *within* a group (the G completions of one prompt), so the log
keeps whole groups: the first ``groups`` prompts of the step, each with all G completions, their
rewards, reward parts and advantages. Eight completions of one prompt would show one group; a few
groups show whether the model's spread, and so its learning signal, differs between prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vlmrl.data import Sample
from vlmrl.rollout.rollouts import Rollouts
from vlmrl.rollout.trajectory_log import trajectory_log


def first_groups(prompt_index: torch.Tensor, groups: int) -> list[int]:
    """Rows of the first ``groups`` prompts (in order of first appearance), every row of each.

    >>> first_groups(torch.tensor([0, 0, 1, 1, 2, 2]), 2)
    [0, 1, 2, 3]
    """
    keep: list[int] = []
    for p in prompt_index.tolist():
        if p not in keep:
            if len(keep) == groups:
                break
            keep.append(p)
    return [i for i, p in enumerate(prompt_index.tolist()) if p in keep]


def completion_advantages(adv_tok: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One advantage per completion: the mean of its token advantages over its completion tokens
    (with scalar credit every token holds the same value, so this is that value). ``[N, C] → [N]``."""
    mask = mask.float().cpu()
    return (adv_tok.float().cpu() * mask).sum(1) / mask.sum(1).clamp(min=1)  # [N]


def write_rollouts(
    run_dir: Path,
    step: int,
    ro: Rollouts,
    rewards: torch.Tensor,
    adv_tok: torch.Tensor | None,
    groups: int,
) -> list[dict[str, Any]]:
    """Write the first ``groups`` whole groups of the step; return the rows written.

    ``rewards`` ([N]) are the rewards the advantages were computed from (after a safety cost or a
    KL-in-reward penalty); ``ro.parts`` the reward parts per completion (``{name: [N]}``);
    ``adv_tok`` ([N, C]) the token advantages of the update. Prompt images are saved once per
    prompt as PNG; env runs (``ro.trajectories``) add every turn (``trajectory``).
    """
    if groups <= 0:
        return []
    out = Path(run_dir) / "rollouts"
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    batch = ro.batch
    adv = completion_advantages(adv_tok, batch.completion_mask) if adv_tok is not None else None
    rows = []
    for i in first_groups(batch.prompt_index, groups):
        s = ro.samples[int(batch.prompt_index[i])]
        row: dict[str, Any] = {
            "step": step,
            "sample_id": s.id,
            "task": s.task,
            "problem": s.problem,
            "answer": s.answer,
            "images": [],
            "completion": batch.texts[i],
            "finish_reason": batch.finish_reasons[i],
            "reward": float(rewards[i]),
            "advantage": None if adv is None else float(adv[i]),
            "reward_parts": {k: float(v[i]) for k, v in ro.parts.items()},
            "group": int(batch.prompt_index[i]),
        }
        if ro.trajectories:  # env runs: every turn, and the sample so ``replay`` can play it again
            row["trajectory"] = trajectory_log(ro.trajectories[i], s, out, f"step{step}_r{i}")
            row["images"] = row["trajectory"]["sample"]["images"]
        else:
            row["images"] = _save_images(s, img_dir, out, step)
        rows.append(row)
    with (out / f"step_{step}.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return rows


def _save_images(s: Sample, img_dir: Path, out: Path, step: int) -> list[str]:
    refs = []
    for j, im in enumerate(s.images):
        ref = img_dir / f"step{step}_{_safe(s.id)}_{j}.png"
        if not ref.exists():
            im.save(ref)
        refs.append(str(ref.relative_to(out)))
    return refs


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80]
