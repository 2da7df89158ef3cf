"""Blind gap: the image conditions, and the gap of a model that provably cannot see (≈ 0) vs. the same
model seeing. (A trained model that reads the image has a large gap: tests/test_learnability.py.)"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from vlmrl.data import generate
from vlmrl.eval import blind as blind_mod
from vlmrl.eval.accuracy import evaluate
from vlmrl.eval.blind import blind_gap, derangement, flatten_blind, format_blind_table, with_condition
from vlmrl.eval.drift import find_visual
from vlmrl.rewards import RewardBreakdown


def _pixels(im) -> np.ndarray:
    return np.asarray(im)


def test_conditions_replace_only_the_images():
    samples = generate("count", 5, seed=0, split="test")
    before = [_pixels(s.images[0]).copy() for s in samples]
    blank = with_condition(samples, "blank")
    noise = with_condition(samples, "noise", seed=1)
    shuffled = with_condition(samples, "shuffled", seed=2)
    for cond in (blank, noise, shuffled):
        assert [(s.id, s.problem, s.answer, s.facts) for s in cond] == [
            (s.id, s.problem, s.answer, s.facts) for s in samples
        ]
        assert [c.images[0].size for c in cond] == [s.images[0].size for s in samples]
    assert all((_pixels(s.images[0]) == 255).all() for s in blank)
    # noise: seeded (same seed → same pixels), differs per image, spans the byte range
    again = with_condition(samples, "noise", seed=1)
    assert all(
        np.array_equal(_pixels(a.images[0]), _pixels(b.images[0])) for a, b in zip(noise, again, strict=True)
    )
    assert not np.array_equal(_pixels(noise[0].images[0]), _pixels(noise[1].images[0]))
    px = _pixels(noise[0].images[0])
    assert px.min() < 10 and px.max() > 245 and abs(px.mean() - 127.5) < 5
    # shuffled: every sample shows another sample's image (a derangement), deterministically
    donors = [next(j for j, o in enumerate(samples) if o.images[0] is s.images[0]) for s in shuffled]
    assert sorted(donors) == list(range(5)) and all(d != i for i, d in enumerate(donors))
    assert [s.images[0] for s in with_condition(samples, "shuffled", seed=2)] == [
        s.images[0] for s in shuffled
    ]
    # the originals are untouched
    assert all(np.array_equal(_pixels(s.images[0]), b) for s, b in zip(samples, before, strict=True))


def test_shuffled_with_one_sample_falls_back_to_blank():
    (one,) = with_condition(generate("color", 1, seed=0, split="test"), "shuffled")
    assert (_pixels(one.images[0]) == 255).all()


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_derangement_has_no_fixed_point(n):
    for seed in range(5):
        d = derangement(n, seed)
        assert sorted(d) == list(range(n)) and all(d[i] != i for i in range(n))
    assert derangement(n, 0) == derangement(n, 0)


def test_bad_conditions_are_named():
    with pytest.raises(ValueError, match="unknown image condition 'sepia'"):
        with_condition([], "sepia")
    with pytest.raises(ValueError, match="must include 'real'"):
        blind_gap(None, [], "answer", None, conditions=("blank", "noise"))
    with pytest.raises(ValueError, match="at least one"):
        blind_gap(None, [], "answer", None, conditions=("real",))


def test_doctests():
    assert doctest.testmod(blind_mod).failed == 0


def _exact(completion, sample):
    """Accuracy 1 when the completion is exactly ``sample.answer`` (here: the model's own real-image text)."""
    ok = float(completion == sample.answer)
    return RewardBreakdown(ok, {"accuracy": ok})


def _answers_from_real_images(policy, samples):
    """Make each sample's gold answer the model's greedy completion on its real image, so acc(real) = 1
    and a blind condition scores exactly the share of prompts whose answer did not depend on the image."""
    res = evaluate(policy, samples, "answer", _exact, max_new_tokens=4, return_outputs=True)
    for s, o in zip(samples, res["outputs"], strict=True):
        s.answer = o["completion"]


def _zero_image_features(module, inputs, output):
    """Forward hook on the vision tower: the language model gets all-zero image embeddings."""
    output.pooler_output = torch.zeros_like(output.pooler_output)
    return output


def test_blind_gap_is_zero_for_a_model_that_cannot_see_and_positive_when_it_can(tiny_policy):
    samples = generate("color", 4, seed=0, split="test") + generate("count", 2, seed=0, split="test")
    hook = find_visual(tiny_policy.model).register_forward_hook(_zero_image_features)
    try:
        _answers_from_real_images(tiny_policy, samples)
        blind = blind_gap(tiny_policy, samples, "answer", _exact, max_new_tokens=4)
    finally:
        hook.remove()
    accs = {c: r["accuracy"] for c, r in blind["conditions"].items()}
    assert accs == {"real": 1.0, "blank": 1.0, "noise": 1.0, "shuffled": 1.0}  # right every time, blind
    assert blind["blind_gap"] == 0.0
    assert blind["blind_gap_by_task"] == {"color": 0.0, "count": 0.0}

    # the same untrained model with its eyes open: its text depends on the image, so the gap is > 0
    _answers_from_real_images(tiny_policy, samples)
    seeing = blind_gap(tiny_policy, samples, "answer", _exact, max_new_tokens=4)
    accs = {c: r["accuracy"] for c, r in seeing["conditions"].items()}
    assert accs["real"] == 1.0
    assert seeing["blind_gap"] == pytest.approx(1.0 - max(accs["blank"], accs["noise"], accs["shuffled"]))
    assert seeing["blind_gap"] > 0
    by_task = seeing["conditions"]["noise"]["by_task"]
    assert set(by_task) == {"color", "count"}
    assert accs["noise"] == pytest.approx((4 * by_task["color"] + 2 * by_task["count"]) / 6)

    flat = flatten_blind(seeing)
    assert set(flat) == {
        "eval/blind/blank",
        "eval/blind/noise",
        "eval/blind/shuffled",
        "eval/blind_gap",
        "eval/blind_gap/color",
        "eval/blind_gap/count",
    }
    table = format_blind_table(seeing)
    assert table.splitlines()[0].split() == ["task", "real", "blank", "noise", "shuffled", "blind", "gap"]
    assert [ln.split()[0] for ln in table.splitlines()[1:]] == ["color", "count", "all"]


def test_real_result_is_reused_not_recomputed(tiny_policy, monkeypatch):
    samples = generate("color", 3, seed=0, split="test")
    real = evaluate(tiny_policy, samples, "answer", _exact, max_new_tokens=2, return_outputs=True)
    calls = []
    orig = blind_mod.evaluate
    monkeypatch.setattr(blind_mod, "evaluate", lambda *a, **k: calls.append(1) or orig(*a, **k))
    res = blind_gap(tiny_policy, samples, "answer", _exact, 2, conditions=("real", "blank"), real=real)
    assert len(calls) == 1 and res["conditions"]["real"]["accuracy"] == real["accuracy"]


def test_cli_eval_blind_and_pope_tables(tiny_dir, tmp_path, capsys):
    import json
    import shutil

    from vlmrl.cli.main import main

    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    args = ["eval", "data.task=color", "data.eval_size=3", "eval.max_new_tokens=2", "--model", str(model)]
    assert main([*args, "--blind", "--pope", "1"]) == 0
    out = capsys.readouterr().out
    assert '"accuracy"' in out  # the summary `vlmrl eval` always printed
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["task", "real"])
    assert lines[head].split() == ["task", "real", "blank", "noise", "shuffled", "blind", "gap"]
    assert lines[head + 1].split()[0] == "color" and len(lines[head + 1].split()) == 6
    assert any(ln.split()[:1] == ["adversarial"] for ln in lines)  # the POPE table
    saved = json.loads((model / "eval.json").read_text())  # next to the model by default
    assert set(saved) == {"model", "accuracy", "blind", "pope"}
    assert set(saved["blind"]["conditions"]) == {"real", "blank", "noise", "shuffled"}
    assert saved["blind"]["conditions"]["real"]["accuracy"] == saved["accuracy"]["accuracy"]
    # without flags: accuracy only, written where --out says
    assert main([*args, "--out", str(tmp_path / "e" / "res.json")]) == 0
    assert "blind gap" not in capsys.readouterr().out
    assert set(json.loads((tmp_path / "e" / "res.json").read_text())) == {"model", "accuracy"}
