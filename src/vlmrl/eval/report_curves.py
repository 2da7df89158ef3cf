"""Metric families of a run and their curves as PNGs (matplotlib, Agg), for ``report.html``.

Metric names are not known in advance (other modules add theirs), so keys are grouped by name:
the families below claim the keys they match, in order, and every key left over joins a panel
named after its first path segment (``actor/*``, ``rollout/*``, ``lr``). A panel overlays its
series when they share a scale (largest / smallest magnitude ≤ ``OVERLAY_RATIO`` and at most
``MAX_OVERLAY`` of them), else draws one small axis per series, so ``vision/weight_change``
(≈1e-3) does not flatten ``vision/cos_sim`` (≈1).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

#: Overlay series in one axis only when their magnitudes differ by at most this factor.
OVERLAY_RATIO = 20.0
#: More series than this get one small axis each, however alike their scales.
MAX_OVERLAY = 6

Series = dict[str, tuple[list[int], list[float]]]


@dataclass(frozen=True)
class Family:
    """A panel of the report: keys equal to one of ``exact`` or starting with one of ``prefixes``."""

    slug: str
    title: str
    exact: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    def matches(self, key: str) -> bool:
        return key in self.exact or key.startswith(self.prefixes)


FAMILIES: tuple[Family, ...] = (
    Family("reward", "Reward and its parts (sampled rollouts, mean per step)", prefixes=("reward/",)),
    Family(
        "accuracy",
        "Held-out accuracy (greedy), overall and per task",
        ("eval/accuracy",),
        ("eval/accuracy/",),
    ),
    Family("blind", "Blind gap: accuracy with the real image vs. blank / shuffled", prefixes=("eval/blind",)),
    Family("pope", "Hallucination probes (POPE)", prefixes=("eval/pope",)),
    Family("drift", "Vision-encoder drift vs. the reference", prefixes=("vision/",)),
    Family("kl", "KL to the reference policy", prefixes=("actor/kl",)),
    Family("entropy", "Policy entropy (nats per token)", prefixes=("actor/entropy",)),
    Family("length", "Response length (tokens)", ("rollout/response_length",)),
    Family("time", "Wall time (seconds)", prefixes=("time/",)),
)


@dataclass
class Metrics:
    """The numeric series of a ``metrics.jsonl``: ``series[key] = (steps, values)``, sorted by step."""

    series: Series
    rows: int
    bad_lines: int


def read_series(path: Path) -> Metrics:
    """Parse ``metrics.jsonl``; non-numeric, boolean and non-finite values are left out, and
    unparseable lines (a run killed mid-write) are counted, not fatal."""
    series: Series = {}
    rows = bad = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            step = int(row["step"])
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        rows += 1
        for k, v in row.items():
            if k != "step" and _is_number(v):
                xs, ys = series.setdefault(k, ([], []))
                xs.append(step)
                ys.append(float(v))
    for k, (xs, ys) in series.items():
        order = sorted(range(len(xs)), key=xs.__getitem__)
        series[k] = ([xs[i] for i in order], [ys[i] for i in order])
    return Metrics(series, rows, bad)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def group_keys(keys: list[str]) -> list[tuple[Family, list[str]]]:
    """Assign each key to the first family that matches it, the rest by first path segment;
    families with no keys are skipped. Keys within a family are sorted (the family's exact keys first)."""
    left = sorted(keys)
    out: list[tuple[Family, list[str]]] = []
    for fam in FAMILIES:
        mine = [k for k in left if fam.matches(k)]
        if mine:
            mine.sort(key=lambda k: (k not in fam.exact, k))
            out.append((fam, mine))
            left = [k for k in left if k not in mine]
    by_head: dict[str, list[str]] = {}
    for k in left:
        by_head.setdefault(k.split("/", 1)[0], []).append(k)
    for head, mine in by_head.items():
        title = f"{head}/*" if any("/" in k for k in mine) else head
        out.append((Family(f"other_{_slug(head)}", title), mine))
    return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60] or "_"


def overlay(series: Series, keys: list[str]) -> bool:
    """True when the keys can share one axis: few enough and of similar magnitude (all-zero
    series fit any scale)."""
    if len(keys) > MAX_OVERLAY:
        return False
    mags = [max(abs(y) for y in series[k][1]) for k in keys]
    mags = [m for m in mags if m > 0]
    return not mags or max(mags) / min(mags) <= OVERLAY_RATIO


@dataclass
class Curve:
    """One written panel: its family, the keys drawn, the PNG, and whether it is a wide grid."""

    family: Family
    keys: list[str]
    path: Path
    wide: bool


def plot_families(metrics: Metrics, out_dir: Path) -> list[Curve]:
    """Write one PNG per family with data into ``out_dir`` (old PNGs there are removed first);
    returns the panels in report order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    written = []
    for fam, keys in group_keys(list(metrics.series)):
        together = overlay(metrics.series, keys)
        axes_keys = [keys] if together else [[k] for k in keys]
        cols = 1 if together else min(3, len(keys))
        rows = math.ceil(len(axes_keys) / cols)
        size = (5.8, 3.0) if together else (3.8 * cols, 2.5 * rows)
        fig, axes = plt.subplots(rows, cols, figsize=size, dpi=100, squeeze=False)
        for ax, ks in zip(axes.flat, axes_keys, strict=False):
            for k in ks:
                xs, ys = metrics.series[k]
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, linewidth=1.4, label=k)
            style_axis(ax)
            if together:
                ax.legend(fontsize=8, loc="best")
            else:
                ax.set_title(ks[0], fontsize=9)
        for ax in list(axes.flat)[len(axes_keys) :]:
            ax.axis("off")
        fig.tight_layout()
        path = out_dir / f"{fam.slug}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(Curve(fam, keys, path, wide=cols > 1))
    return written


def style_axis(ax) -> None:
    """Grid, integer steps on x, and y tick labels that read as the numbers they are.

    matplotlib's default formatter moves a shared part of the values into an offset or a
    multiplier at the axis' corner (``+1`` or ``1e-5`` above ticks ``0.0002 0.0004``), which a
    reader misses; a :class:`ScalarFormatter` without offset and without scientific notation
    writes each tick in full (``1.00002``, ``0.00003``)."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fmt = ScalarFormatter(useOffset=False)
    fmt.set_scientific(False)
    ax.yaxis.set_major_formatter(fmt)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)


def plot_run(run_dir: Path) -> list[Path]:
    """The run's curves as PNGs in ``run_dir/report`` (the same panels ``report.html`` shows)."""
    run_dir = Path(run_dir)
    return [c.path for c in plot_families(read_series(run_dir / "metrics.jsonl"), run_dir / "report")]
