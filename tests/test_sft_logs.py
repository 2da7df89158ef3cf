"""``vlmrl sft`` logs like ``vlmrl train``: a progress bar, and every step's loss in metrics.jsonl
and TensorBoard (read back from the event file)."""

from __future__ import annotations

import json

from vlmrl.cli.main import main


def test_sft_progress_bar_and_tensorboard(tiny_dir, tmp_path, capsys, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import vlmrl.run.progress as progress

    bars: list[tuple[str, int, list[int]]] = []
    real_bar = progress.step_bar

    def spy_bar(label, total, completed=0):  # the real bar, with each update recorded
        seen: list[int] = []
        bars.append((label, total, seen))
        cm = real_bar(label, total, completed)

        class Spy:
            def __enter__(self):
                update = cm.__enter__()
                return lambda step, info: (seen.append(step), update(step, info))

            def __exit__(self, *exc):
                return cm.__exit__(*exc)

        return Spy()

    monkeypatch.setattr(progress, "step_bar", spy_bar)
    out = tmp_path / "sft"
    args = [
        f"model.path={tiny_dir}", "sft.steps=3", "sft.batch_size=2", f"sft.out={out}", "data.eval_size=2",
        "eval.max_new_tokens=2", "vision.train=frozen",
    ]  # fmt: skip
    assert main(["sft", *args]) == 0
    assert bars == [("SFT", 3, [1, 2, 3])]
    assert "sft step" not in capsys.readouterr().out  # the bar replaces the per-step lines
    rows = [json.loads(x) for x in (out / "sft_logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "sft/loss" in r] == [1, 2, 3]
    acc = EventAccumulator(str(out / "sft_logs" / "tb"))
    acc.Reload()
    losses = acc.Scalars("sft/loss")
    assert [e.step for e in losses] == [1, 2, 3]
    logged = [r["sft/loss"] for r in rows if "sft/loss" in r]
    assert all(abs(e.value - v) < 1e-5 for e, v in zip(losses, logged, strict=True))
    assert "eval/accuracy" in acc.Tags()["scalars"]
