"""``vlmrl view RUN_A RUN_B``: one plot per metric with one line per run, escaped names, and axis
tick labels that read as numbers (no offset, no ×1e-5 multiplier)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

from vlmrl.cli.main import main
from vlmrl.eval.report_curves import style_axis

matplotlib.use("Agg")


def _run(root: Path, rows: list[dict]) -> Path:
    root.mkdir(parents=True)
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture()
def two_runs(tmp_path) -> tuple[Path, Path]:
    a = _run(tmp_path / "grpo", [{"step": s, "reward/total": s / 10, "lr": 1e-5 * s} for s in (1, 2, 3)])
    b = _run(
        tmp_path / "dapo<script>x</script>",  # a folder name is user text too
        [{"step": s, "reward/total": s / 5, "actor/kl_ref": 1.00001 + s * 1e-5} for s in (1, 2)],
    )
    return a, b


def test_view_two_runs_one_plot_per_metric_one_line_per_run(two_runs, tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    drawn: dict[str, list[str]] = {}
    save = Figure.savefig

    def spy(fig, path, *a, **k):
        (ax,) = fig.axes
        drawn[ax.get_title()] = [line.get_label() for line in ax.lines]
        return save(fig, path, *a, **k)

    monkeypatch.setattr(Figure, "savefig", spy)
    out = tmp_path / "cmp"
    assert main(["view", *map(str, two_runs), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "compare.html")
    a, b = (p.name for p in two_runs)
    assert drawn == {"actor/kl_ref": [b], "lr": [a], "reward/total": [a, b]}
    page = (out / "compare.html").read_text()
    assert page.count("<figure>") == 3 and len(list((out / "compare").glob("*.png"))) == 3
    assert "<script>x" not in page and "dapo&lt;script&gt;x&lt;/script&gt;" in page
    assert page.count("<script") == 1  # only the page's own
    assert "(not logged by grpo)" in page  # actor/kl_ref: only the second run has it


def test_view_refuses_a_folder_without_metrics(two_runs, tmp_path, capsys):
    assert main(["view", str(two_runs[0]), str(tmp_path / "empty"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty is not a run directory" in err[0]


@pytest.mark.parametrize("ys", [[1.00001, 1.00004], [1e-5, 3e-5], [1200000.0, 1200003.0]])
def test_tick_labels_read_as_numbers(ys):
    import matplotlib.pyplot as plt

    fig, (plain, styled) = plt.subplots(1, 2)
    for ax in (plain, styled):
        ax.plot([1, 2], ys)
    style_axis(styled)
    fig.canvas.draw()
    assert plain.yaxis.get_offset_text().get_text() != ""  # matplotlib's default: offset or ×1e-5
    assert styled.yaxis.get_offset_text().get_text() == ""
    labels = [t.get_text().replace("\u2212", "-") for t in styled.get_yticklabels() if t.get_text()]
    values = [float(t) for t in labels]  # each label is the number itself
    assert min(ys) - 1e-3 * abs(min(ys)) <= max(values) and "e" not in "".join(labels)
    plt.close(fig)


def test_compare_page_renders_in_headless_chromium(two_runs, tmp_path):
    from test_report import _rendered_body

    out = tmp_path / "cmp"
    assert main(["view", *map(str, two_runs), "--out", str(out)]) == 0
    attrs, _ = _rendered_body((out / "compare.html").resolve().as_uri(), tmp_path / "chromium")
    assert attrs.get("ready") == "1", attrs
    assert int(attrs["curves"]) == int(attrs["images-loaded"]) == int(attrs["images-total"]) == 3
