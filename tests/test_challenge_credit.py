"""The ``credit`` challenge: the error split (``vlmrl eval --errors``) on hand-made responses and
end to end on the tiny base, and ``vlmrl experiment credit --quick`` (the pipeline, not the effect)."""

from __future__ import annotations

import json
import re

import pytest

from vlmrl.cli.main import main
from vlmrl.data.sample import Sample
from vlmrl.errors import UserError
from vlmrl.eval.errors import Outcome, check_error_setup, classify, error_split, format_error_table
from vlmrl.models.loading import tiny_base_path

RED, BLUE = {"shape": "circle", "color": "red"}, {"shape": "circle", "color": "blue"}
SCENE = Sample(
    id="s", images=[], problem="How many red circles?", answer="2", task="count", answer_type="number",
    facts={"objects": [RED, RED, BLUE]},
)  # fmt: skip
GOLD_LOOK = "<look>2 red circles, 1 blue circle</look><think>The answer is 2.</think>"


@pytest.mark.parametrize(
    ("completion", "outcome"),
    [
        (GOLD_LOOK + "<answer>2</answer>", Outcome.RIGHT),
        # right answer, but the look leaves the blue circle out (recall 2/3): right for the wrong reason
        ("<look>2 red circles</look><think></think><answer>2</answer>", Outcome.RIGHT_WRONG_LOOK),
        # right answer with no look at all: not looking is a wrong look
        ("<think>two</think><answer>2</answer>", Outcome.RIGHT_WRONG_LOOK),
        # the look miscounts and the answer follows it
        ("<look>3 red circles, 1 blue circle</look><think></think><answer>3</answer>", Outcome.PERCEPTION),
        # a false mention (a green square that is not there)
        ("<look>2 red circles, 1 blue circle, 1 green square</look><answer>3</answer>", Outcome.PERCEPTION),
        # the look is exactly the scene, the answer is not what it says
        (GOLD_LOOK + "<answer>3</answer>", Outcome.REASONING),
        (GOLD_LOOK + "<answer>two and a half</answer>", Outcome.REASONING),
        # nothing to read as an answer
        (GOLD_LOOK, Outcome.FORMAT),
        (GOLD_LOOK + "<answer>   </answer>", Outcome.FORMAT),
        (GOLD_LOOK + "<answer>2", Outcome.FORMAT),
    ],
)
def test_classify_each_outcome(completion, outcome):
    assert classify(completion, SCENE) is outcome


@pytest.mark.parametrize(
    "hostile",
    [
        None,
        "",
        "<look>" * 5000,
        "<look>" + "9" * 500 + " red circles</look><answer>" + "9" * 2000 + "</answer>",
        "<answer>__import__('os').system('echo pwned')</answer>",
        "<look>\x00\ufffd</look><answer>\ud800</answer>",
        "<answer>1e308</answer><answer>nan</answer><look>inf red circles</look>",
        "<look><script>alert(1)</script></look><think>{{ 7*7 }}</think><answer>${2}</answer>",
    ],
)
def test_hostile_strings_never_raise(hostile):
    assert classify(hostile, SCENE) in set(Outcome)
    broken = Sample(id="b", images=[], problem="", answer="2", answer_type="number", facts={"objects": "x"})
    assert classify(hostile, broken) in set(Outcome)


def test_split_rates_and_shares():
    completions = [
        GOLD_LOOK + "<answer>2</answer>",  # right
        "<look>2 red circles</look><answer>2</answer>",  # right, wrong look
        GOLD_LOOK + "<answer>3</answer>",  # reasoning
        GOLD_LOOK,  # format
    ]
    split = error_split(completions, [SCENE] * 4)
    assert split["n"] == 4
    want = {"right": 1, "right_wrong_look": 1, "perception": 0, "reasoning": 1, "format": 1}
    assert split["counts"] == want
    assert split["rates"]["right_wrong_look"] == 0.25 and sum(split["rates"].values()) == pytest.approx(1.0)
    assert split["wrong"] == {"perception": 0.0, "reasoning": 0.5, "format": 0.5}
    assert split["right_wrong_look_of_right"] == 0.5
    assert [r["outcome"] for r in split["per_sample"]] == ["right", "right_wrong_look", "reasoning", "format"]
    table = format_error_table(split)
    assert "right_wrong_look" in table and "0.500" in table
    empty = error_split([], [])
    assert empty["n"] == 0 and empty["right_wrong_look_of_right"] == 0.0
    with pytest.raises(ValueError, match="2 completions for 1 samples"):
        error_split(["a", "b"], [SCENE])


def test_setup_refused_with_one_line():
    with pytest.raises(UserError, match=re.escape("data.template='answer' asks for no <look> span")):
        check_error_setup([SCENE], "answer")
    no_scene = Sample(id="n", images=[], problem="1+1?", answer="2")
    with pytest.raises(UserError, match="1 of 2 samples have no scene facts"):
        check_error_setup([SCENE, no_scene], "look")
    with pytest.raises(UserError, match=re.escape("env.name='calc'")):
        check_error_setup([SCENE], "look", env="calc")
    check_error_setup([SCENE], "look")  # fine


def test_eval_errors_end_to_end_on_the_tiny_base(tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = ["eval", "data.task=count", "data.template=look", "data.eval_size=6", "eval.max_new_tokens=40"]
    assert main([*argv, "--model", str(tiny_base_path()), "--errors", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "right_wrong_look" in printed and "of wrong" in printed
    summary = json.loads(out.read_text())["errors"]
    assert "per_sample" not in summary and summary["n"] == 6
    full = json.loads((tmp_path / "errors.json").read_text())
    assert sum(full["counts"].values()) == 6 and len(full["per_sample"]) == 6
    assert {r["outcome"] for r in full["per_sample"]} <= {o.value for o in Outcome}
    # the base counts in-distribution red circles with a look (its card: 1.000): some right answers
    assert full["counts"]["right"] + full["counts"]["right_wrong_look"] > 0


def test_eval_errors_refused_before_the_model(capsys):
    assert main(["eval", "data.task=count", "data.template=answer", "--errors"]) == 2
    assert "asks for no <look> span" in capsys.readouterr().err


def test_quick_credit_writes_its_entry(tmp_path):
    (tmp_path / "challenges.json").write_text(json.dumps({"other": {"metric": "kept"}}))
    assert main(["experiment", "credit", "--quick", "--seeds", "0", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "challenges.json").read_text())
    assert data["other"] == {"metric": "kept"}
    e = data["credit"]
    assert set(e) == {"metric", "higher_is_better", "failure", "seeds", "command", "held_out_accuracy"}
    assert e["higher_is_better"] is False and e["seeds"] == [0]
    for key in ("failure", "held_out_accuracy"):
        assert set(e[key]) == {"baseline", "fix"}
        assert all(len(v) == 1 and 0.0 <= v[0] <= 1.0 for v in e[key].values())
    assert e["command"] == f"vlmrl experiment credit --seeds 0 --quick --out {tmp_path}"
    md = (tmp_path / "challenge_credit.md").read_text()
    assert "Verdict: no verdict: 1 seed" in md and "wrong_perception" in md
    assert (tmp_path / "challenge_credit.png").stat().st_size > 0
