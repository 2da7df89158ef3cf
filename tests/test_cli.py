"""The command line as a user types it (in-process, so it stays fast)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

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
    """Checked before the model path (it passed on the model-path error when the CLI loaded first)."""
    assert main(["eval", "reward.weights={acuracy: 1.0}", "model.path=/nonexistent"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'acuracy'" in err[0] and "accuracy" in err[0] and "nonexistent" not in err[0]


def test_missing_model_path_is_found_before_torch_loads_a_model(capsys, monkeypatch):
    import vlmrl.models.loading as loading

    def no_load(*a, **k):
        raise AssertionError("load_policy must not run for a path that does not exist")

    monkeypatch.setattr(loading, "load_policy", no_load)
    assert main(["eval", "model.path=/nonexistent"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.path: '/nonexistent' does not exist" in err[0]


def test_the_shipped_base_alias_passes_the_path_check(tmp_path):
    """``model.path: vlmrl-tiny-base`` (the docs' and demo config's spelling) is not a missing path."""
    from vlmrl.config import load_config
    from vlmrl.config.checks import check_before_loading, check_path
    from vlmrl.errors import UserError

    check_path("model.path", "vlmrl-tiny-base")
    check_before_loading(load_config(None, ["model.path=vlmrl-tiny-base", "sft.init=vlmrl-tiny-base"]))
    with pytest.raises(UserError, match="vlmrl-tiny-bas' does not exist"):
        check_path("model.path", "vlmrl-tiny-bas")


def test_an_internal_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Only the project's user errors become one-line messages; a KeyError from a bug propagates."""
    import vlmrl.data

    def buggy(*a, **k):
        raise KeyError("internal")

    monkeypatch.setattr(vlmrl.data, "generate", buggy)
    with pytest.raises(KeyError, match="internal"):
        main(["data", "synth", "--task", "count", "--n", "2", "--out", str(tmp_path / "x.parquet")])


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
    """`vlmrl demo --quick`: every stage of `make demo` on a smoke budget, offline; the accuracies it
    reports are the ones its run measured (the first and last held-out evaluation in metrics.jsonl)."""
    import json

    from vlmrl.run.metrics import read_metrics

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    result = json.loads((out / "demo_result.json").read_text())
    evals = [r["eval/accuracy"] for r in read_metrics(out) if "eval/accuracy" in r]
    assert len(evals) >= 2
    assert (result["before"], result["after"]) == (pytest.approx(evals[0]), pytest.approx(evals[-1]))
    assert any(p.endswith("accuracy.png") for p in result["plots"])
    assert (out / "checkpoints").exists()
    assert result["report"] == str(out / "report.html")
    assert Path(result["report"]).is_file()
