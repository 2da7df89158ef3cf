"""The ``shortcut`` challenge: the biased / de-biased data (counted), the counterfactual reward on
hand-made cases, the blind-gap monitor on hand-made metric sequences, and the quick pipeline."""

from __future__ import annotations

import json
import logging
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from vlmrl.config import ConfigError, load_config
from vlmrl.data import generate, get_task
from vlmrl.data.tasks.shortcut import answer_set
from vlmrl.eval import counterfactual
from vlmrl.eval.blind_monitor import BlindGapMonitor
from vlmrl.eval.counterfactual import pay_if_looking, withhold_blind_right
from vlmrl.experiments import shortcut

N = 600


def _samples(bias):
    knobs = {"base": "count", "prior": shortcut.PRIOR, "base_kwargs": shortcut.base_kwargs()}
    return generate("shortcut", N, seed=0, split="train", bias=bias, **knobs)


def test_biased_question_predicts_the_answer_at_the_stated_rate():
    samples = _samples(shortcut.TRAIN_BIAS)
    # one question text for every sample: whatever it predicts, it predicts for all
    assert len({s.problem for s in samples}) == 1
    share = sum(s.answer == shortcut.PRIOR for s in samples) / N
    # binomial(600, 0.9): sd = sqrt(0.9 * 0.1 / 600) = 0.0122; 4 sd = 0.049
    assert abs(share - shortcut.TRAIN_BIAS) < 0.049
    for s in samples:  # the answer is the scene's own count of red circles
        assert int(s.answer) == sum(o["color"] == "red" for o in s.facts["objects"])


def test_debiased_answers_are_uniform():
    samples = _samples(None)
    answers = answer_set(get_task("count", **shortcut.base_kwargs()))
    counts = Counter(s.answer for s in samples)
    assert set(counts) == set(answers)
    # uniform over K = 6: each share 1/6; sd of a share = sqrt(1/6 * 5/6 / 600) = 0.0152; 4 sd = 0.061
    assert max(abs(counts[a] / N - 1 / len(answers)) for a in answers) < 0.061
    # answering the prior is worth TRAIN_BIAS in training and ~1/6 here: the shortcut's whole value
    assert shortcut.TRAIN_BIAS - counts[shortcut.PRIOR] / N > 0.6


def test_task_knobs_are_checked():
    with pytest.raises(ValueError, match="knob 'base'"):
        generate("shortcut", 1, base="pope")
    with pytest.raises(ValueError, match="knob 'bias'"):
        generate("shortcut", 1, bias=1.5)
    with pytest.raises(ValueError, match="knob 'prior'"):
        generate("shortcut", 1, prior="9")
    with pytest.raises(ConfigError, match=r"reward\.counterfactual"):
        load_config(None, ["reward.counterfactual=mirror"])
    with pytest.raises(ConfigError, match=r"eval\.blind_gap_drop"):
        load_config(None, ["eval.blind_gap_drop=-0.1"])


def test_withhold_blind_right_by_hand():
    # 2 prompts x 2 completions; w_acc 0.9, format 0.1 on top.
    # prompt 0: blind answer right -> its right completion (acc 1, total 1.0) keeps only format 0.1;
    #           its wrong completion (acc 0, total 0.1) is untouched.
    # prompt 1: blind answer wrong -> both keep their totals (1.0, 0.0).
    rewards = torch.tensor([1.0, 0.1, 1.0, 0.0])
    acc = torch.tensor([1.0, 0.0, 1.0, 0.0])
    out = withhold_blind_right(rewards, acc, torch.tensor([1.0, 0.0]), torch.tensor([0, 0, 1, 1]), 0.9)
    assert out.tolist() == pytest.approx([0.1, 0.1, 1.0, 0.0])


class _Engine:
    """Answers each blind prompt with a fixed text; records the images it was shown."""

    def __init__(self, texts):
        self.texts, self.seen = texts, None

    def generate(self, enc, n, greedy=False):
        assert n == 1 and greedy
        self.seen = enc
        return SimpleNamespace(texts=self.texts)


def test_pay_if_looking_uses_blank_images_and_the_accuracy_reward(monkeypatch):
    samples = generate("count", 2, seed=0, **shortcut.base_kwargs())
    monkeypatch.setattr(counterfactual, "encode_samples", lambda proc, ss, template: [s.images for s in ss])
    # blind answers: the right count for prompt 0, a wrong one for prompt 1
    wrong = str(int(samples[1].answer) % 6 + 1)
    engine = _Engine([f"<answer>{samples[0].answer}</answer>", f"<answer>{wrong}</answer>"])
    ro = SimpleNamespace(
        samples=samples,
        rewards=torch.tensor([1.0, 1.0, 0.1]),
        parts={"accuracy": torch.tensor([1.0, 1.0, 0.0])},
        batch=SimpleNamespace(prompt_index=torch.tensor([0, 1, 1])),
        metrics={},
    )
    cfg = SimpleNamespace(counterfactual="blank", weights={"accuracy": 0.9, "format": 0.1})
    out = pay_if_looking(ro, engine, None, "answer", cfg)
    assert out.rewards.tolist() == pytest.approx([0.1, 1.0, 0.1])
    assert out.metrics == {"reward/blind_right": 0.5, "reward/withheld": pytest.approx(1 / 3)}
    assert all(im.getextrema() == ((255, 255), (255, 255), (255, 255)) for ims in engine.seen for im in ims)
    # off: the round is returned untouched, and no generation happens
    off = _Engine(None)
    ro.rewards = torch.tensor([1.0, 1.0, 0.1])
    same = pay_if_looking(ro, off, None, "answer", SimpleNamespace(counterfactual="none", weights={}))
    assert same.rewards.tolist() == pytest.approx([1.0, 1.0, 0.1]) and off.seen is None


def _gaps(monitor, gaps):
    return [
        monitor.observe({"eval/accuracy": 0.5, "eval/blind/blank": 0.5 - g, "eval/blind_gap": g})
        for g in gaps
    ]


def test_monitor_fires_once_when_the_gap_falls(caplog):
    m = BlindGapMonitor(threshold=0.2)
    with caplog.at_level(logging.WARNING, logger="vlmrl.eval.blind_monitor"):
        out = _gaps(m, [0.40, 0.35, 0.25, 0.15, 0.05, 0.30])
    # drops 0, .05, .15, .25, .35, .10: the alert holds while the drop exceeds 0.2
    assert [o["eval/blind_gap_alert"] for o in out] == [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert [round(o["eval/blind_gap_drop"], 3) for o in out] == [0.0, 0.05, 0.15, 0.25, 0.35, 0.1]
    warnings = [r for r in caplog.records if "blind gap fell" in r.getMessage()]
    assert len(warnings) == 1 and "0.400 to 0.150" in warnings[0].getMessage()


def test_monitor_quiet_while_the_gap_holds_or_grows(caplog):
    m = BlindGapMonitor(threshold=0.2)
    with caplog.at_level(logging.WARNING, logger="vlmrl.eval.blind_monitor"):
        out = _gaps(m, [0.10, 0.30, 0.45, 0.25])  # grows; its fall from 0.45 to 0.25 is still above the first
    assert all(o["eval/blind_gap_alert"] == 0.0 for o in out)
    assert not [r for r in caplog.records if "blind gap fell" in r.getMessage()]
    assert m.observe({"eval/accuracy": 0.9}) == {}  # no blind gap measured: nothing to say


def test_quick_experiment_writes_an_entry(tmp_path):
    from vlmrl.cli.main import main

    assert main(["experiment", "shortcut", "--quick", "--seeds", "0", "--out", str(tmp_path)]) == 0
    entry = json.loads((tmp_path / "challenges.json").read_text())["shortcut"]
    assert entry["metric"] == shortcut.CHALLENGE.metric and entry["higher_is_better"] is True
    assert entry["seeds"] == [0] and entry["command"].startswith("vlmrl experiment shortcut")
    for key in ("failure", *shortcut.CHALLENGE.side_metrics):
        assert set(entry[key]) == {"baseline", "fix"} and all(len(v) == 1 for v in entry[key].values())
        low, high = (-1, shortcut.steps(True)) if key == "monitor_step" else (0.0, 1.0)
        assert all(low <= v[0] <= high for v in entry[key].values()), key
    assert (tmp_path / "challenge_shortcut.md").exists() and (tmp_path / "challenge_shortcut.png").exists()
