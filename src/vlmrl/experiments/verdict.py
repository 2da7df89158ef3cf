"""The verdict of a challenge: does the fix beat the baseline by more than two standard errors?

Pure arithmetic on per-seed numbers (no torch, no files), so it is tested with hand-computed
values. The arms are paired by seed: seed ``s`` of the baseline and seed ``s`` of the fix share
their data order and initial sampling stream, so the test is on the per-seed differences
``d_s = fix_s − baseline_s`` (sign flipped when lower is better, so ``d > 0`` always means
"the fix is better"). With ``n`` seeds, ``SE = std(d, ddof=1) / √n``; the fix *beats* the
baseline when ``n ≥ 2`` and ``mean(d) > 2·SE``. With one seed there is no SE and no verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SE_MULTIPLE = 2.0
"""How many standard errors of the per-seed difference the fix must win by."""


def mean_std(xs: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof=1``; ``None`` for fewer than two values).

    >>> mean_std([1.0, 2.0, 3.0])
    (2.0, 1.0)
    """
    if not xs:
        raise ValueError("mean_std of no values")
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


@dataclass(frozen=True)
class Verdict:
    """Summary statistics of a challenge's two arms over paired seeds."""

    n: int
    """Seeds (pairs)."""
    baseline_mean: float
    baseline_std: float | None
    fix_mean: float
    fix_std: float | None
    diff_mean: float
    """Mean of ``d_s`` (positive: the fix is better, whatever the metric's direction)."""
    diff_se: float | None
    """Standard error of ``mean(d)``; ``None`` with one seed."""
    fix_beats: bool | None
    """``diff_mean > 2·diff_se``; ``None`` (no verdict) with one seed."""


def verdict(baseline: list[float], fix: list[float], higher_is_better: bool) -> Verdict:
    """Paired-seed statistics; see the module docstring.

    >>> v = verdict([0.0, 0.5], [1.0, 1.0], higher_is_better=True)
    >>> v.diff_mean, round(v.diff_se, 4), v.fix_beats
    (0.75, 0.25, True)
    """
    if len(baseline) != len(fix) or not baseline:
        raise ValueError(f"need one value per seed in each arm, got {len(baseline)} and {len(fix)}")
    sign = 1.0 if higher_is_better else -1.0
    diffs = [sign * (f - b) for b, f in zip(baseline, fix, strict=True)]
    bm, bs = mean_std(baseline)
    fm, fs = mean_std(fix)
    dm, ds = mean_std(diffs)
    se = None if ds is None else ds / math.sqrt(len(diffs))
    beats = None if se is None else dm > SE_MULTIPLE * se
    return Verdict(len(diffs), bm, bs, fm, fs, dm, se, beats)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def verdict_line(v: Verdict) -> str:
    """One sentence: the verdict, or why there is none."""
    if v.fix_beats is None:
        return f"no verdict: {v.n} seed (the per-seed difference has no standard error)."
    if v.fix_beats:
        return (
            f"**the fix beats the baseline**: mean difference {v.diff_mean:+.3f} > "
            f"{SE_MULTIPLE:g} × SE ({_fmt(v.diff_se)}) over {v.n} seeds."
        )
    return (
        f"**null result**: mean difference {v.diff_mean:+.3f} is not > {SE_MULTIPLE:g} × SE "
        f"({_fmt(v.diff_se)}) over {v.n} seeds."
    )


def seed_table(seeds: list[int], baseline: list[float], fix: list[float], v: Verdict) -> str:
    """A markdown table: one row per seed, then mean ± std and the difference's SE."""
    rows = ["| seed | baseline | fix | fix − baseline |", "|---|---|---|---|"]
    for s, b, f in zip(seeds, baseline, fix, strict=True):
        rows.append(f"| {s} | {b:.3f} | {f:.3f} | {f - b:+.3f} |")
    rows.append(
        f"| mean ± std | {v.baseline_mean:.3f} ± {_fmt(v.baseline_std)} "
        f"| {v.fix_mean:.3f} ± {_fmt(v.fix_std)} "
        f"| {v.fix_mean - v.baseline_mean:+.3f} (SE {_fmt(v.diff_se)}) |"
    )
    return "\n".join(rows)


def summary_table(entries: dict[str, dict]) -> str:
    """One markdown row per ``challenges.json`` entry: metric, each arm's mean ± std, the
    direction-signed difference with its SE, and the verdict word (beats / null / no verdict)."""
    rows = [
        "| challenge | metric | baseline | fix | difference (SE) | verdict | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in entries.items():
        v = verdict(e["failure"]["baseline"], e["failure"]["fix"], e["higher_is_better"])
        word = "no verdict" if v.fix_beats is None else ("fix beats" if v.fix_beats else "null")
        arrow = "↑" if e["higher_is_better"] else "↓"
        rows.append(
            f"| `{name}` | {e['metric'].split(' (')[0]} {arrow} "
            f"| {v.baseline_mean:.3f} ± {_fmt(v.baseline_std)} | {v.fix_mean:.3f} ± {_fmt(v.fix_std)} "
            f"| {v.diff_mean:+.3f} ({_fmt(v.diff_se)}) | **{word}** | {len(e['seeds'])} |"
        )
    return "\n".join(rows)
