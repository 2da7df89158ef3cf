"""Run-directory logging: metrics.jsonl (always), tensorboard (optional), wandb (optional)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Append one JSON line per step; mirror scalars to tensorboard / wandb when enabled."""

    def __init__(
        self, run_dir: Path, tensorboard: bool = True, wandb: bool = False, config: dict | None = None
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        if wandb:
            try:
                import wandb as wb
            except ImportError as e:
                raise RuntimeError(
                    "log.wandb is true but wandb is not installed: pip install 'vlmrl[wandb]'"
                ) from e
            self._wandb = wb.init(project="vlmrl", dir=str(self.run_dir), config=config or {})

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines logged after the checkpoint's step (they will be redone)."""
        if not self.path.exists():
            return
        keep = [
            ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= step
        ]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(row, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln] if p.exists() else []


class NullLogger:
    """What ranks other than 0 log to under torch.distributed: nothing (rank 0 writes the run)."""

    def truncate_after(self, step: int) -> None:
        pass

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
