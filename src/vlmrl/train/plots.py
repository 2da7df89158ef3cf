"""PNG curves of a run from its metrics.jsonl (reward, accuracy, and whatever else was logged)."""

from __future__ import annotations

from pathlib import Path

from vlmrl.train.metrics import read_metrics

#: (file name, metric keys drawn on it)
PANELS = (
    ("reward.png", ("reward/total", "reward/accuracy", "reward/format")),
    ("accuracy.png", ("eval/accuracy",)),
    ("length_entropy.png", ("rollout/response_length", "actor/entropy")),
)


def plot_run(run_dir: Path) -> list[Path]:
    """Write one PNG per panel that has data into ``run_dir/plots``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, keys in PANELS:
        series = {k: [(r["step"], r[k]) for r in rows if r.get(k) is not None] for k in keys}
        series = {k: v for k, v in series.items() if v}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        for k, pts in series.items():
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=k)
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        written.append(out_dir / name)
    return written
