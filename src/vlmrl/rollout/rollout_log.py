"""``rollouts/step_N.jsonl``: what the model said, to whom, and how it was scored."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vlmrl.data import Sample
from vlmrl.rollout.batch import RolloutBatch


def write_rollouts(
    run_dir: Path,
    step: int,
    samples: list[Sample],
    batch: RolloutBatch,
    rewards: torch.Tensor,
    parts: dict[str, torch.Tensor],
    limit: int,
) -> None:
    """Write the first ``limit`` rollouts of the step (images saved once per prompt as PNG).

    ``parts`` are the reward parts per completion (``{name: [N]}``) as the step scored them, so
    the log shows exactly what the advantages were computed from (SR1 included).
    """
    if limit <= 0:
        return
    out = Path(run_dir) / "rollouts"
    out.mkdir(parents=True, exist_ok=True)
    img_dir = out / "images"
    img_dir.mkdir(exist_ok=True)
    rows = []
    for i in range(min(limit, batch.size)):
        s = samples[int(batch.prompt_index[i])]
        refs = []
        for j, im in enumerate(s.images):
            ref = img_dir / f"step{step}_{_safe(s.id)}_{j}.png"
            if not ref.exists():
                im.save(ref)
            refs.append(str(ref.relative_to(out)))
        rows.append(
            {
                "step": step,
                "sample_id": s.id,
                "task": s.task,
                "problem": s.problem,
                "answer": s.answer,
                "images": refs,
                "completion": batch.texts[i],
                "finish_reason": batch.finish_reasons[i],
                "reward": float(rewards[i]),
                "reward_parts": {k: float(v[i]) for k, v in parts.items()},
                "group": int(batch.prompt_index[i]),
            }
        )
    with (out / f"step_{step}.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80]
