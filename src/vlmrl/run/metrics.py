"""Run-directory logging: metrics.jsonl (always), tensorboard (optional), wandb (optional).

A kill can tear the last line of ``metrics.jsonl`` (a row is appended with one write, but a
write is not atomic): readers skip a line that does not parse, and a resume rewrites the file
without it, with a warning that names the file and line. A write that fails (full disk,
read-only) is one :class:`StorageError` naming the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from vlmrl.errors import StorageError

log = logging.getLogger(__name__)


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
        """On resume: drop lines logged after the checkpoint's step (they will be redone) and
        lines that do not parse (a kill's torn last line), warning about each. Rewritten through a
        temporary file and a rename, so a kill during the rewrite loses nothing."""
        if not self.path.exists():
            return
        rows = _parse_lines(self.path, warn=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows if r.get("step", 0) <= step))
            os.replace(tmp, self.path)
        except OSError as e:
            raise StorageError.from_os(e, "rewriting metrics", self.path) from e

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            raise StorageError.from_os(e, f"logging step {step}", self.path) from e
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
    """Every row of ``run_dir/metrics.jsonl`` that parses (a torn line is skipped)."""
    p = Path(run_dir) / "metrics.jsonl"
    return _parse_lines(p) if p.exists() else []


def _parse_lines(path: Path, warn: bool = False) -> list[dict[str, Any]]:
    """The JSON-object lines of ``path``; with ``warn``, one warning per line dropped."""
    rows = []
    for i, ln in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError: a torn or corrupt line
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif warn:
            log.warning("%s: line %d is not a JSON row (torn by a kill?); dropped: %r", path, i, ln[:60])
    return rows


class NullLogger:
    """What ranks other than 0 log to under torch.distributed: nothing (rank 0 writes the run)."""

    def truncate_after(self, step: int) -> None:
        pass

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
