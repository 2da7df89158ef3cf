"""Run a challenge over seeds and write its results: ``challenges.json`` entry, verdict, plot.

``challenges.json`` maps each experiment to ``{"metric", "higher_is_better", "failure":
{"baseline": [per seed], "fix": [per seed]}, "seeds", "command"}`` (plus one ``{"baseline",
"fix"}`` pair per :attr:`Challenge.side_metrics` key); an experiment's run replaces
its own entry and keeps the others. ``challenge_NAME.md`` holds the per-seed table and the
verdict (:mod:`vlmrl.experiments.verdict`), ``challenge_NAME.png`` the metric's curves.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path

from vlmrl.errors import UserError
from vlmrl.experiments.registry import ArmResult, Challenge, get_challenge
from vlmrl.experiments.verdict import seed_table, verdict, verdict_line

ARM_NAMES = ("baseline", "fix")


def command(name: str, seeds: list[int], quick: bool, out: str) -> str:
    """The command line that reproduces a run."""
    flags = f"--seeds {' '.join(map(str, seeds))}{' --quick' if quick else ''} --out {out}"
    return f"vlmrl experiment {name} {flags}"


def merge_entry(path: Path, name: str, entry: dict) -> dict:
    """``path``'s JSON with ``name`` set to ``entry`` (other entries kept); written back, returned."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = entry
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def plot_curves(path: Path, ch: Challenge, results: dict[str, list[ArmResult]], seeds: list[int]) -> None:
    """The metric over training steps, one line per arm × seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for arm, colour in zip(ARM_NAMES, ("tab:red", "tab:blue"), strict=True):
        for i, (seed, r) in enumerate(zip(seeds, results[arm], strict=True)):
            steps, vals = zip(*r.curve, strict=True)
            ax.plot(steps, vals, color=colour, alpha=0.8, marker="o", ms=3, label=arm if i == 0 else None)
            ax.annotate(f"s{seed}", (steps[-1], vals[-1]), fontsize=7, color=colour)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel(ch.metric.split(" (")[0], fontsize=8)
    ax.set_title(f"{ch.name}: baseline vs fix", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict_markdown(ch: Challenge, seeds: list[int], results: dict[str, list[ArmResult]], cmd: str) -> str:
    """The ``challenge_NAME.md`` text."""
    base = [r.value for r in results["baseline"]]
    fix = [r.value for r in results["fix"]]
    v = verdict(base, fix, ch.higher_is_better)
    lines = [
        f"# Challenge `{ch.name}`",
        "",
        ch.question,
        "",
        f"- metric: {ch.metric} ({'higher' if ch.higher_is_better else 'lower'} is better)",
        f"- baseline: {ch.arms['baseline']}",
        f"- fix: {ch.arms['fix']}",
        f"- seeds: {' '.join(map(str, seeds))}",
        "",
        seed_table(seeds, base, fix, v),
        "",
        f"Verdict: {verdict_line(v)}",
        "",
    ]
    keys = sorted({k for arm in ARM_NAMES for r in results[arm] for k in r.extra})
    if keys:
        lines += ["Context at the end of training (mean over seeds):", ""]
        lines += ["| arm | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for arm in ARM_NAMES:
            cells = []
            for k in keys:
                xs = [r.extra[k] for r in results[arm] if k in r.extra]
                cells.append(f"{sum(xs) / len(xs):.3f}" if xs else "n/a")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"Curves: `challenge_{ch.name}.png`. Command: `{cmd}`", ""]
    lines += [
        f"Setup, what was tried to make the failure happen, reading: `docs/challenges/{ch.name}.md`.",
        "",
    ]
    return "\n".join(lines)


def work_folder(name: str, keep: str | Path | None) -> contextlib.AbstractContextManager[str]:
    """The experiment's working folder (warm starts, each arm's run directory): ``keep`` when given
    (created; it must be empty, so no earlier run's files mix in), else a temporary one deleted at
    the end."""
    if keep is None:
        return tempfile.TemporaryDirectory(prefix=f"vlmrl-{name}-")
    keep = Path(keep)
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise UserError(f"--work {keep}: must be an empty folder or not exist yet")
    keep.mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(str(keep))


def run_experiment(
    name: str, seeds: list[int], quick: bool, out: str | Path, keep: str | Path | None = None
) -> dict:
    """Run both arms of ``name`` for every seed, write the three results files; the JSON entry.
    ``keep``: a folder to keep the working files in (see :func:`work_folder`)."""
    ch = get_challenge(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[ArmResult]] = {arm: [] for arm in ARM_NAMES}
    with work_folder(name, keep) as work:
        for seed in seeds:
            for arm in ARM_NAMES:
                t0 = time.time()
                r = ch.run_arm(arm, seed, quick, Path(work))
                results[arm].append(r)
                print(f"{name} seed {seed} {arm}: {r.value:.3f} ({time.time() - t0:.0f} s)", flush=True)
    cmd = command(name, seeds, quick, str(out))
    entry = {
        "metric": ch.metric,
        "higher_is_better": ch.higher_is_better,
        "failure": {arm: [r.value for r in results[arm]] for arm in ARM_NAMES},
        "seeds": list(seeds),
        "command": cmd,
    }
    for key in ch.side_metrics:
        entry[key] = {arm: [r.extra[key] for r in results[arm]] for arm in ARM_NAMES}
    merge_entry(out / "challenges.json", name, entry)
    (out / f"challenge_{name}.md").write_text(verdict_markdown(ch, seeds, results, cmd))
    plot_curves(out / f"challenge_{name}.png", ch, results, seeds)
    if ch.write_extra is not None:
        ch.write_extra(results, seeds, out)
    return entry
