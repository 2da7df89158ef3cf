"""``vlmrl view RUN_A RUN_B ...``: the runs' curves side by side, one plot per metric, one line per run.

Written to ``OUT/compare.html`` with ``OUT/compare/*.png`` (one self-contained page, like
``report.html``, with the same Content-Security-Policy). Run names and metric keys come from the
file system and from ``metrics.jsonl``, so every one is escaped; a metric only some runs logged
is drawn for those and its caption says which.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlmrl.errors import MissingFileError
from vlmrl.eval.report import _e, _page
from vlmrl.eval.report_curves import Metrics, read_series, style_axis


def run_labels(runs: list[Path]) -> list[str]:
    """Each run's folder name, or its path when two runs share a name.

    >>> run_labels([Path("a/grpo"), Path("b/dapo")])
    ['grpo', 'dapo']
    """
    names = [r.name or str(r) for r in runs]
    return names if len(set(names)) == len(names) else [str(r) for r in runs]


def write_comparison(runs: list[str | Path], out: str | Path) -> Path:
    """Plot every metric any run logged, one PNG per metric with one line per run; write the page.

    Raises :class:`MissingFileError` naming a run without ``metrics.jsonl``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [Path(r) for r in runs]
    for r in paths:
        if not (r / "metrics.jsonl").is_file():
            raise MissingFileError(f"{r} is not a run directory: no metrics.jsonl in it")
    labels = run_labels(paths)
    series: dict[str, Metrics] = {
        lab: read_series(r / "metrics.jsonl") for lab, r in zip(labels, paths, strict=True)
    }
    keys = sorted({k for m in series.values() for k in m.series})
    out = Path(out)
    png_dir = out / "compare"
    png_dir.mkdir(parents=True, exist_ok=True)
    for old in png_dir.glob("*.png"):
        old.unlink()
    figs = []
    for i, key in enumerate(keys):
        fig, ax = plt.subplots(figsize=(5.6, 3.0), dpi=100)
        have = [lab for lab in labels if key in series[lab].series]
        for lab in have:
            xs, ys = series[lab].series[key]
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, linewidth=1.4, label=lab)
        style_axis(ax)
        ax.set_title(key, fontsize=9)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        name = f"{i:03d}.png"  # keys hold "/" and anything else: numbered files, the key in the caption
        fig.savefig(png_dir / name)
        plt.close(fig)
        missing = [lab for lab in labels if lab not in have]
        note = f' <span class="dim">(not logged by {_e(", ".join(missing))})</span>' if missing else ""
        figs.append(
            f"<figure><figcaption><b>{_e(key)}</b>{note}</figcaption>"
            f'<img class="curve" src="compare/{name}" alt="{_e(key)}"></figure>'
        )
    legend = "".join(
        f"<tr><th>{_e(lab)}</th><td>{_e(r.resolve())}</td><td>{series[lab].rows} rows</td></tr>"
        for lab, r in zip(labels, paths, strict=True)
    )
    body = (
        f"<h1>vlmrl: {len(paths)} runs compared</h1>"
        f'<table class="kv">{legend}</table><h2>Curves ({len(keys)} metrics)</h2>'
        f'<div class="curves">{"".join(figs)}</div>'
    )
    page = out / "compare.html"
    tmp = page.with_suffix(".html.tmp")
    tmp.write_text(_page("vlmrl: " + " vs ".join(labels), body), encoding="utf-8")
    os.replace(tmp, page)
    return page
