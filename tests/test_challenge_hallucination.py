"""The ``hallucination`` challenge: its probe task, the false-yes penalty, false-yes counting, and
the quick pipeline end to end (the files and their shape, not the effect)."""

from __future__ import annotations

import doctest
import json

import pytest

from vlmrl.cli.main import main
from vlmrl.data import Sample, generate, get_task
from vlmrl.data.tasks import count_probe
from vlmrl.eval.pope import parse_prediction, pope_metrics
from vlmrl.rewards import build_reward, get_reward, hallucination
from vlmrl.rewards.hallucination import is_false_yes, prior_cancelling_weight


def reds(s: Sample) -> int:
    return sum(o["color"] == "red" for o in s.facts["objects"])


def test_doctests():
    for module in (count_probe, hallucination):
        assert doctest.testmod(module).failed == 0


def test_count_probe_answers_match_the_scene():
    for s in generate("count_probe", 40, seed=1, kind="count"):
        asked = s.facts["probe"]["count"]
        assert reds(s) == s.facts["count"]
        assert s.answer == ("yes" if asked == reds(s) else "no")
        if s.answer == "no":  # a near miss, never a far one
            assert abs(asked - reds(s)) == 1 and 1 <= asked <= 6
        assert f"Are there {asked} red circles?" in s.problem
    for s in generate("count_probe", 40, seed=1, kind="color"):
        drawn = {o["color"] for o in s.facts["objects"]}
        assert s.answer == ("yes" if s.facts["probe"]["color"] in drawn else "no")
        assert s.facts["probe"]["color"] in s.problem


def test_count_probe_yes_ratio_and_knob_errors():
    assert {s.answer for s in generate("count_probe", 30, kind="color", yes_ratio=0.0)} == {"no"}
    assert {s.answer for s in generate("count_probe", 30, kind="count", yes_ratio=1.0)} == {"yes"}
    share = sum(s.answer == "yes" for s in generate("count_probe", 400, yes_ratio=0.9)) / 400
    assert 0.85 < share < 0.95
    with pytest.raises(ValueError, match="'kind'"):
        get_task("count_probe", kind="shape")
    with pytest.raises(ValueError, match="'yes_ratio'"):
        get_task("count_probe", yes_ratio=1.5)
    with pytest.raises(ValueError, match="min_count < max_count"):
        get_task("count_probe", min_count=3, max_count=3)
    with pytest.raises(ValueError, match="never drawn"):
        get_task("count_probe", kind="color", probe_colors=("red", "blue"))


def sample(answer: object) -> Sample:
    return Sample(id="t", images=[], problem="<image>Is there a red circle?", answer=answer)  # type: ignore[arg-type]


def test_no_false_yes_hand_cases():
    r = get_reward("no_false_yes")
    cases = [
        ("<answer>yes</answer>", "no", 0.0),  # the false yes
        ("<answer>Yes, there is.</answer>", "no", 0.0),
        ("<answer>no</answer>", "no", 1.0),
        ("<answer>yes</answer>", "yes", 1.0),
        ("<answer>no</answer>", "yes", 1.0),  # a miss is the accuracy reward's business
        ("<answer>maybe</answer>", "no", 0.0),  # unparsed: no answer is never paid
        ("yes", "no", 0.0),  # no answer span: nothing parsed as an answer
    ]
    for completion, gold, want in cases:
        got = r(completion, sample(gold))
        assert got.total == want, (completion, gold)
        assert got.parts == {"no_false_yes": want}


@pytest.mark.parametrize(
    "completion",
    [
        None,
        "",
        "<answer>",
        "</answer>yes<answer>",
        "<answer>" + "yes " * 10_000 + "</answer>",
        "<answer>\x00yes\ud800</answer>",
        "<answer><answer>yes</answer></answer>",
        "<answer>ЙЕС</answer>",
    ],
)
def test_no_false_yes_hostile_strings_never_raise(completion):
    for gold in ("no", "yes", "", None, 3):
        total = get_reward("no_false_yes")(completion, sample(gold)).total
        assert total in (0.0, 1.0)
    assert get_reward("no_false_yes")(completion, None).total in (0.0, 1.0)  # type: ignore[arg-type]


def test_prior_cancelling_weight_makes_blind_answers_pay_the_same():
    # 9 yes-probes and 1 no-probe (pi = 0.9), w = 0.9 / 0.1 - 1 = 8.
    # always "yes": 9 x (1 + 8) + 1 x 0 = 81; always "no": 9 x 8 + 1 x (1 + 8) = 81.
    w = prior_cancelling_weight(0.9)
    assert w == pytest.approx(8.0)
    reward = build_reward({"accuracy": 1.0, "no_false_yes": w})
    probes = [sample("yes")] * 9 + [sample("no")]
    for s in probes:
        s.answer_type = "yesno"
    always_yes = sum(reward("<answer>yes</answer>", s).total for s in probes)
    always_no = sum(reward("<answer>no</answer>", s).total for s in probes)
    assert always_yes == pytest.approx(81.0) and always_no == pytest.approx(81.0)
    plain = build_reward({"accuracy": 1.0})  # without it, guessing "yes" pays 9 to 1
    assert sum(plain("<answer>yes</answer>", s).total for s in probes) == pytest.approx(9.0)
    assert prior_cancelling_weight(0.5) == 0.0 and prior_cancelling_weight(0.3) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prior_cancelling_weight(1.0)


def test_false_yes_counting():
    # 4 no-probes: one "yes" (false yes), one "no", one unparsed, one "no" -> false_yes 1/4.
    # 2 yes-probes: one "yes" (TP), one "no" (FN). P = 1/2, R = 1/2, F1 = 1/2.
    completions = ["<answer>yes</answer>", "<answer>no</answer>", "<answer>blue</answer>", "no",
                   "<answer>Yes.</answer>", "<answer>no</answer>"]  # fmt: skip
    golds = ["no", "no", "no", "no", "yes", "yes"]
    assert [is_false_yes(c, g) for c, g in zip(completions, golds, strict=True)] == [True] + [False] * 5
    m = pope_metrics([parse_prediction(c) for c in completions], golds)
    assert m["false_yes"] == pytest.approx(0.25)
    assert m["f1"] == pytest.approx(0.5) and m["yes_ratio"] == pytest.approx(2 / 6)


def test_quick_hallucination_writes_a_valid_entry(tmp_path):
    (tmp_path / "challenges.json").write_text(json.dumps({"other": {"metric": "kept"}}))
    assert main(["experiment", "hallucination", "--quick", "--seeds", "0", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "challenges.json").read_text())
    assert data["other"] == {"metric": "kept"}
    e = data["hallucination"]
    assert {"metric", "higher_is_better", "failure", "seeds", "command"} <= set(e)
    assert e["higher_is_better"] is False and e["seeds"] == [0]
    assert e["command"].startswith("vlmrl experiment hallucination") and "--quick" in e["command"]
    for key in ("failure", "pope_f1", "balanced_accuracy"):
        assert set(e[key]) == {"baseline", "fix"}
        for arm in ("baseline", "fix"):
            assert len(e[key][arm]) == 1 and 0.0 <= e[key][arm][0] <= 1.0
    md = (tmp_path / "challenge_hallucination.md").read_text()
    assert "| seed | baseline | fix |" in md and "pope_f1" in md
    assert (tmp_path / "challenge_hallucination.png").stat().st_size > 0
