"""POPE metrics on hand-made predictions, the probe sets, and the greedy evaluation wiring."""

from __future__ import annotations

import doctest

import pytest

from vlmrl.eval import pope as pope_mod
from vlmrl.eval.pope import (
    flatten_pope,
    format_pope_table,
    parse_prediction,
    pope_eval,
    pope_metrics,
    pope_probes,
    pope_report,
)


def test_metrics_by_hand():
    golds = ["yes", "yes", "yes", "yes", "no", "no", "no", "no", "no", "no"]
    preds = ["yes", "yes", "yes", "no", "yes", "yes", "no", "no", "no", None]
    # TP = 3 (items 0-2), FN = 1 (item 3), FP = 2 (items 4-5), TN = 3 (items 6-8), item 9 unparsed (gold no)
    # precision = 3/5 = 0.6, recall = 3/4 = 0.75, F1 = 2·0.6·0.75 / 1.35 = 0.9/1.35 = 2/3
    # accuracy = (3 + 3) / 10 = 0.6 (the unparsed one is wrong), yes_ratio = 5/10, unparsed = 1/10
    m = pope_metrics(preds, golds)
    assert m["precision"] == pytest.approx(0.6)
    assert m["recall"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["yes_ratio"] == pytest.approx(0.5)
    assert m["unparsed"] == pytest.approx(0.1)
    assert m["n"] == 10


def test_always_yes_and_never_yes():
    golds = ["yes", "no", "no", "no"]
    # always yes: TP 1, FP 3 → precision 1/4, recall 1, F1 = 2·0.25·1/1.25 = 0.4, yes_ratio 1
    m = pope_metrics(["yes"] * 4, golds)
    assert (m["precision"], m["recall"], m["f1"], m["yes_ratio"], m["accuracy"]) == pytest.approx(
        (0.25, 1.0, 0.4, 1.0, 0.25)
    )
    # never yes: no positive predictions → precision 0 by convention, recall 0, F1 0
    m = pope_metrics(["no"] * 4, golds)
    assert (m["precision"], m["recall"], m["f1"], m["yes_ratio"], m["accuracy"]) == (0.0, 0.0, 0.0, 0.0, 0.75)
    # an unparsed answer to a yes-probe is a missed yes (false negative), not a free pass
    m = pope_metrics([None, "no", "no", "no"], golds)
    assert (m["recall"], m["accuracy"], m["unparsed"]) == (0.0, 0.75, 0.25)


def test_report_splits_by_mode():
    preds = ["yes", "no", "yes", "yes"]
    golds = ["yes", "no", "yes", "no"]
    modes = ["random", "random", "adversarial", "adversarial"]
    rep = pope_report(preds, golds, modes)
    assert list(rep) == ["overall", "random", "adversarial"]
    assert rep["random"]["accuracy"] == 1.0 and rep["random"]["f1"] == 1.0
    # adversarial: TP 1, FP 1 → precision 0.5, recall 1, F1 2/3, yes_ratio 1
    assert rep["adversarial"]["precision"] == 0.5 and rep["adversarial"]["yes_ratio"] == 1.0
    assert rep["adversarial"]["f1"] == pytest.approx(2 / 3)
    assert rep["overall"]["accuracy"] == 0.75 and rep["overall"]["n"] == 4
    flat = flatten_pope(rep, "eval/pope")
    assert flat["eval/pope/accuracy"] == 0.75 and flat["eval/pope/adversarial/f1"] == pytest.approx(2 / 3)
    assert not any(k.endswith("/n") for k in flat)
    table = format_pope_table(rep).splitlines()
    assert table[0].split()[:3] == ["POPE", "n", "accuracy"]
    assert [ln.split()[0] for ln in table[1:]] == ["random", "adversarial", "overall"]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="2 predictions but 1 gold"):
        pope_metrics(["yes", "no"], ["yes"])
    with pytest.raises(ValueError, match="'maybe'"):
        pope_metrics(["yes"], ["maybe"])


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer>yes</answer>", "yes"),
        ("<think>hmm</think><answer>No.</answer>", "no"),
        ("Yes, there is a red circle.", "yes"),
        ("<answer>red</answer>", None),
        ("<answer>yes", None),  # an unclosed tag is neither a span nor a bare yes/no
        ("", None),
        (None, None),
    ],
)
def test_parse_prediction(completion, expected):
    assert parse_prediction(completion) == expected


def test_doctests():
    assert doctest.testmod(pope_mod).failed == 0


def test_probes_cover_every_mode_on_the_same_scenes():
    probes = pope_probes(6, seed=0)
    assert len(probes) == 18 and len({p.id for p in probes}) == 18
    sets = {m: [p for p in probes if p.facts["pope_set"] == m] for m in ("random", "popular", "adversarial")}
    assert all(len(v) == 6 for v in sets.values())
    assert all(p.split == "test" and p.answer in ("yes", "no") for p in probes)
    # one image set, probed three ways: the scenes and the yes-probes are shared across modes
    for i in range(6):
        objs = [sets[m][i].facts["objects"] for m in sets]
        assert objs[0] == objs[1] == objs[2]
        if sets["random"][i].answer == "yes":
            assert len({sets[m][i].problem for m in sets}) == 1
    for m, items in sets.items():
        for p in items:
            present = {(o["color"], o["shape"]) for o in p.facts["objects"]}
            probe = (p.facts["probe"]["color"], p.facts["probe"]["shape"])
            assert (probe in present) == (p.answer == "yes")
            if p.answer == "no":
                assert p.facts["mode"] == m


def test_pope_eval_scores_the_models_answers(monkeypatch):
    """The scoring path with a stand-in for decoding: a model that always says yes."""
    seen = {}

    def always_yes(policy, samples, template, reward_fn, max_new_tokens, batch_size, return_outputs):
        seen["n"], seen["template"], seen["outputs"] = len(samples), template, return_outputs
        return {"outputs": [{"completion": "<answer>yes</answer>"} for _ in samples]}

    monkeypatch.setattr(pope_mod, "evaluate", always_yes)
    rep = pope_eval(None, 10, seed=0, template="answer")
    assert seen == {"n": 30, "template": "answer", "outputs": True}
    golds = [p.answer for p in pope_probes(10, seed=0)]
    share_yes = golds.count("yes") / len(golds)
    assert rep["overall"]["yes_ratio"] == 1.0 and rep["overall"]["recall"] == 1.0
    assert rep["overall"]["precision"] == pytest.approx(share_yes)
    assert set(rep) == {"overall", "random", "popular", "adversarial"}


def test_pope_eval_on_the_tiny_model(tiny_policy):
    rep = pope_eval(tiny_policy, 2, seed=0, max_new_tokens=3)
    assert rep["overall"]["n"] == 6 and all(rep[m]["n"] == 2 for m in ("random", "popular", "adversarial"))
    for m in rep.values():
        assert 0.0 <= m["accuracy"] <= 1.0 - m["unparsed"] + 1e-12  # unparsed answers are never right


def test_false_yes_is_the_hallucination_rate_on_absent_objects():
    # 3 absent-object probes (gold "no"): one answered "yes", one "no", one unparsed -> 1/3;
    # the present-object probe answered "yes" does not count.
    m = pope_metrics(["yes", "no", None, "yes"], ["no", "no", "no", "yes"])
    assert m["false_yes"] == pytest.approx(1 / 3)
    assert pope_metrics(["yes"], ["yes"])["false_yes"] == 0.0
