"""A rich progress bar around ``GRPOTrainer.train`` showing reward, accuracy, KL and s/step."""

from __future__ import annotations

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def run_with_progress(trainer, enabled: bool = True) -> list[dict]:
    if not enabled:
        return trainer.train()
    cols = (
        TextColumn("[bold]GRPO[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    last_acc = {"v": None}
    with Progress(*cols, refresh_per_second=2) as bar:
        task = bar.add_task("grpo", total=trainer.cfg.train.steps, completed=trainer.step, info="")

        def on_step(step: int, m: dict) -> None:
            if "eval/accuracy" in m:
                last_acc["v"] = m["eval/accuracy"]
            acc = f" acc {last_acc['v']:.3f}" if last_acc["v"] is not None else ""
            kl = f" kl {m['actor/kl_ref']:.4f}" if "actor/kl_ref" in m else ""
            bar.update(
                task,
                completed=step,
                info=f"reward {m['reward/total']:.3f}{acc}{kl} {m['time/step_s']:.2f}s/step",
            )

        return trainer.train(on_step=on_step)
