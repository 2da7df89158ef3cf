"""The command line as a user types it (in-process, so it stays fast)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from vlmrl.cli.main import main
from vlmrl.data import load_dataset


def test_data_synth_writes_geometry3k_schema(tmp_path, capsys):
    out = tmp_path / "count.parquet"
    assert (
        main(["data", "synth", "--task", "count", "--n", "5", "--knob", "max_count=6", "--out", str(out)])
        == 0
    )
    cols = set(pq.read_schema(out).names)
    assert {"images", "problem", "answer", "facts"} <= cols
    samples = load_dataset(out)
    assert len(samples) == 5 and samples[0].problem.count("<image>") == 1


def test_unknown_task_is_one_clear_line(tmp_path, capsys):
    assert (
        main(["data", "synth", "--task", "counting", "--n", "2", "--out", str(tmp_path / "x.parquet")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown task 'counting'" in err[0] and "count" in err[0]


def test_unknown_reward_is_one_clear_line(capsys):
    assert main(["eval", "reward.weights={acuracy: 1.0}", "model.path=/nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert "acuracy" in err or "nonexistent" in err


def test_make_tiny_then_eval(tmp_path, capsys):
    model = tmp_path / "tiny"
    assert main(["make-tiny", str(model)]) == 0
    assert (model / "config.json").exists()
    assert (
        main(["eval", f"model.path={model}", "data.task=color", "data.eval_size=4", "eval.max_new_tokens=3"])
        == 0
    )
    assert '"accuracy"' in capsys.readouterr().out


def test_demo_quick_runs_end_to_end(tmp_path, capsys):
    """`vlmrl demo --quick`: every stage of `make demo` on a smoke budget, offline."""
    import json

    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    result = json.loads((tmp_path / "demo" / "demo_result.json").read_text())
    for key in ("accuracy_untrained", "accuracy_sft", "accuracy_grpo"):
        assert 0.0 <= result[key] <= 1.0
    assert any(p.endswith("accuracy.png") for p in result["plots"])
    assert (tmp_path / "demo" / "grpo" / "checkpoints").exists()
    assert result["report"] == str(tmp_path / "demo" / "grpo" / "report.html")
    assert Path(result["report"]).is_file()
    assert "held-out accuracy" in capsys.readouterr().out
