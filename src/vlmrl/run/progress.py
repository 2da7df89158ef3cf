"""Rich progress bars for the training loops: GRPO (reward, accuracy, KL, s/step) and SFT (loss)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def step_bar(label: str, total: int, completed: int = 0) -> Iterator[Callable[[int, str], None]]:
    """A bar from ``completed`` to ``total`` steps; yields ``update(step, info)``."""
    cols = (
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*cols, refresh_per_second=2) as bar:
        task = bar.add_task(label, total=total, completed=completed, info="")
        yield lambda step, info: bar.update(task, completed=step, info=info)


def run_with_progress(trainer, enabled: bool = True) -> list[dict]:
    if not enabled:
        return trainer.train()
    last_acc = {"v": None}
    with step_bar("GRPO", trainer.cfg.train.steps, trainer.step) as update:

        def on_step(step: int, m: dict) -> None:
            if "eval/accuracy" in m:
                last_acc["v"] = m["eval/accuracy"]
            acc = f" acc {last_acc['v']:.3f}" if last_acc["v"] is not None else ""
            kl = f" kl {m['actor/kl_ref']:.4f}" if "actor/kl_ref" in m else ""
            update(step, f"reward {m['reward/total']:.3f}{acc}{kl} {m['time/step_s']:.2f}s/step")

        return trainer.train(on_step=on_step)


def sft_with_progress(run: Callable[..., dict], total: int, enabled: bool = True) -> dict:
    """``run(on_step=...)`` (``vlmrl.train.sft.run_sft`` with its config bound) under an SFT bar
    showing the loss and s/step; without ``enabled``, ``run()`` as it is."""
    if not enabled:
        return run()
    with step_bar("SFT", total) as update:
        return run(
            on_step=lambda step, m: update(step, f"loss {m['sft/loss']:.4f} {m['time/step_s']:.2f}s/step")
        )
