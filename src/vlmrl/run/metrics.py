"""Run-directory logging: metrics.jsonl (always), tensorboard (optional), wandb (optional).

A kill can tear the last line of ``metrics.jsonl`` (a row is appended with one write, but a
write is not atomic): readers skip a line that does not parse, and a resume rewrites the file
without it, with a warning that names the file and line. A write that fails (full disk,
read-only) is one :class:`StorageError` naming the file.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from vlmrl.config.log_spec import LogConfig
from vlmrl.errors import StorageError

log = logging.getLogger(__name__)


class MetricsLogger:
    """Append one JSON line per step; mirror scalars to tensorboard / wandb when enabled, and each
    step's logged groups (prompt image, question, completions, rewards, advantages) as a table."""

    def __init__(
        self,
        run_dir: Path,
        tensorboard: bool = True,
        wandb: bool = False,
        config: dict | None = None,
        wandb_project: str = "vlmrl",
        wandb_name: str | None = None,
        wandb_tags: list[str] | tuple[str, ...] = (),
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        if wandb:  # imported only when enabled: wandb is an optional extra
            try:
                import wandb as wb
            except ImportError as e:
                raise RuntimeError(
                    "log.wandb is true but wandb is not installed: pip install 'vlmrl[wandb]'"
                ) from e
            self._wandb = wb.init(
                project=wandb_project,
                name=wandb_name or self.run_dir.resolve().name,
                tags=list(wandb_tags) or None,
                dir=str(self.run_dir),
                config=config or {},
            )

    @classmethod
    def from_spec(cls, run_dir: Path, spec: LogConfig, config: dict | None = None) -> MetricsLogger:
        """The logger ``log.*`` describes (``config``: the whole tree, recorded by wandb)."""
        s = spec
        return cls(run_dir, s.tensorboard, s.wandb, config, s.wandb_project, s.wandb_name, s.wandb_tags)

    def log_completions(self, step: int, rows: list[dict[str, Any]], root: Path) -> None:
        """Mirror the step's logged rollouts (``rollouts/step_N.jsonl`` rows; image paths relative
        to ``root``) to the trackers, as TRL's ``log_completions`` does: tensorboard gets one
        markdown table (text, escaped) under ``completions`` and each prompt's first image under
        ``completions/group_<g>``; wandb a ``completions`` table with the images."""
        if not rows or (self._tb is None and self._wandb is None):
            return
        if self._tb is not None:
            self._tb.add_text("completions", completions_markdown(rows), step)
            for group, path in _group_images(rows, root).items():
                self._tb.add_image(f"completions/group_{group}", _hwc(path), step, dataformats="HWC")
        if self._wandb is not None:
            import wandb as wb

            images = _group_images(rows, root)
            table = wb.Table(columns=list(COMPLETION_COLUMNS))
            for r in rows:
                img = images.get(r.get("group"))
                table.add_data(
                    step, r.get("group"), wb.Image(str(img)) if img else None,
                    *(r.get(k) for k in COMPLETION_COLUMNS[3:]),
                )  # fmt: skip
            self._wandb.log({"completions": table}, step=step)

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


#: The columns of the completions table (tensorboard and wandb), after step, group and image.
COMPLETION_COLUMNS: tuple[str, ...] = (
    "step", "group", "image", "problem", "answer", "completion", "reward", "advantage"
)  # fmt: skip


def completions_markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the rows for tensorboard's text tab: HTML escaped (tensorboard renders
    markdown, and a completion is untrusted model output), pipes and newlines neutralised."""
    head = COMPLETION_COLUMNS[1:2] + COMPLETION_COLUMNS[3:]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k)) for k in head) + " |")
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    text = html.escape("" if v is None else str(v))
    return text.replace("|", "&#124;").replace("\r", " ").replace("\n", "<br>")


def _group_images(rows: list[dict[str, Any]], root: Path) -> dict[Any, Path]:
    """Each group's first prompt image that exists under ``root`` (one per group: the G rows share it)."""
    out: dict[Any, Path] = {}
    for r in rows:
        refs = r.get("images") or []
        if r.get("group") not in out and refs and (Path(root) / refs[0]).is_file():
            out[r.get("group")] = Path(root) / refs[0]
    return out


def _hwc(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))  # [H, W, 3] uint8


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

    def log_completions(self, step: int, rows: list[dict[str, Any]], root: Path) -> None:
        pass

    def truncate_after(self, step: int) -> None:
        pass

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
