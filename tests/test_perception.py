"""The canonical scene description and the ``perception`` reward, on hand-made cases.

Scene used throughout: 2 red circles + 1 blue square, so |S| = 3. For mentions M,
matched = Σ min(M_k, S_k), P = matched/|M|, R = matched/|S|, F1 = 2PR/(P+R),
false_mentions = (|M| − matched)/|M|.
"""

from __future__ import annotations

import doctest
import time

import pytest

import vlmrl.data.describe as describe_mod
import vlmrl.rewards.perception as perception_mod
from vlmrl.data import Sample, generate, task_names
from vlmrl.data.describe import describe_scene, scene_counts
from vlmrl.rewards import build_reward, get_reward
from vlmrl.rewards.perception import parse_mentions
from vlmrl.train.sft import gold_completion

OBJECTS = [
    {"shape": "circle", "color": "red", "box": [0, 0, 10, 10]},
    {"shape": "square", "color": "blue", "box": [20, 20, 30, 30]},
    {"shape": "circle", "color": "red", "box": [40, 0, 50, 10]},
]


def scene(objects=OBJECTS, **facts) -> Sample:
    return Sample(
        id="p",
        images=[],
        problem="<image>How many red circles?",
        answer="2",
        answer_type="number",
        facts={"objects": objects, **facts},
    )


def parts(completion: str | None, s: Sample | None = None) -> dict[str, float]:
    r = get_reward("perception")(completion, s or scene())
    assert r.total == r.parts["perception"]
    return {k: round(v, 6) for k, v in r.parts.items()}


def expect(f1: float, p: float, r: float, fm: float) -> dict[str, float]:
    return {"perception": round(f1, 6), "precision": round(p, 6), "recall": round(r, 6), "false_mentions": fm}


@pytest.mark.parametrize("module", [describe_mod, perception_mod])
def test_docstring_examples(module) -> None:
    assert doctest.testmod(module).failed == 0


# ---------------------------------------------------------------- describe_scene


def test_description_groups_counts_and_orders() -> None:
    # palette order puts red before blue; plural only for counts other than 1
    assert describe_scene({"objects": OBJECTS}) == "2 red circles, 1 blue square"
    assert describe_scene({"objects": list(reversed(OBJECTS))}) == "2 red circles, 1 blue square"
    assert describe_scene({"objects": []}) == "nothing"
    assert describe_scene({}) == "nothing"
    mixed = [
        {"shape": "triangle", "color": "red"},
        {"shape": "bar", "color": "orange"},
        {"shape": "circle", "color": "red"},
        {"shape": "rectangle", "color": "black"},
    ]
    # red (circle before triangle), then orange (palette), then black (not in the palette)
    assert (
        describe_scene({"objects": mixed}) == "1 red circle, 1 red triangle, 1 orange bar, 1 black rectangle"
    )


#: GUI screens are widgets with state, not a scene of coloured objects: the look span does not apply.
NO_SCENE = {"gui", "gui_ground"}


@pytest.mark.parametrize("task", [t for t in task_names() if t not in NO_SCENE])
def test_gold_description_of_every_task_scores_one(task: str) -> None:
    for s in generate(task, 6, seed=3):
        assert s.facts["objects"], task
        gold = gold_completion(s, "look")
        assert gold.startswith(f"<look>{describe_scene(s.facts)}</look><think>")
        assert parse_mentions(
            describe_scene(s.facts),
            frozenset({c for c, _ in scene_counts(s.facts)}),
            frozenset({sh for _, sh in scene_counts(s.facts)}),
        ) == scene_counts(s.facts)
        assert get_reward("perception")(gold, s).total == 1.0
        assert get_reward("format")(gold, s).total == 1.0


def test_a_dataset_description_wins() -> None:
    s = scene(description="two red circles and a blue square")
    assert gold_completion(s, "look").startswith("<look>two red circles and a blue square</look>")
    assert get_reward("perception")(gold_completion(s, "look"), s).total == 1.0


# ---------------------------------------------------------------- hand-made cases


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        # exact: M = S, matched 3
        ("2 red circles, 1 blue square", expect(1.0, 1.0, 1.0, 0.0)),
        # same content in other words and order: "a" = 1, "two" = 2
        ("A blue square and two red circles.", expect(1.0, 1.0, 1.0, 0.0)),
        # missing object: M = {red circle: 2}, matched 2 -> P = 1, R = 2/3, F1 = 2·(2/3)/(5/3) = 0.8
        ("2 red circles", expect(0.8, 1.0, 2 / 3, 0.0)),
        # hallucinated object: |M| = 4, matched 3 -> P = 3/4, R = 1, F1 = 1.5/1.75 = 6/7; 1/4 false
        ("2 red circles, 1 blue square, a green triangle", expect(6 / 7, 0.75, 1.0, 0.25)),
        # a hallucinated shape outside the tasks' shapes still counts: same numbers
        ("2 red circles, 1 blue square, 1 pink star", expect(6 / 7, 0.75, 1.0, 0.25)),
        # wrong count (over): |M| = 6, matched 2 + 1 = 3 -> P = 1/2, R = 1, F1 = 2/3; 3/6 false
        ("five red circles and one blue square", expect(2 / 3, 0.5, 1.0, 0.5)),
        # wrong count (under): |M| = 2, matched 2 -> P = 1, R = 2/3, F1 = 0.8
        ("1 red circle, 1 blue square", expect(0.8, 1.0, 2 / 3, 0.0)),
        # wrong colour: |M| = 3, matched 1 (the square) -> P = R = F1 = 1/3; 2/3 false
        ("2 green circles, 1 blue square", expect(1 / 3, 1 / 3, 1 / 3, round(2 / 3, 6))),
        # "no" / "zero" mention nothing: M = {red circle: 2}
        ("2 red circles, no green triangles, zero blue squares", expect(0.8, 1.0, 2 / 3, 0.0)),
        # garbage: no (colour, shape) pair -> nothing mentioned -> all 0
        ("asdf 12 !! circles red, ???", expect(0.0, 0.0, 0.0, 0.0)),
        ("", expect(0.0, 0.0, 0.0, 0.0)),
    ],
)
def test_hand_made_cases(span: str, expected: dict[str, float]) -> None:
    assert parts(f"<look>{span}</look><think>t</think><answer>2</answer>") == expected


def test_no_span_scores_zero() -> None:
    zero = expect(0.0, 0.0, 0.0, 0.0)
    assert parts("2 red circles, 1 blue square") == zero  # right words, no tags
    assert parts("<look>2 red circles, 1 blue square") == zero  # unclosed
    assert parts("</look>2 red circles<look>") == zero  # wrong order
    assert parts(None) == zero
    assert parts("<look>2 red circles, 1 blue square</look>", Sample("x", [], "", "2")) == zero  # no facts


def test_first_span_only_and_empty_scene() -> None:
    assert parts("<look>2 red circles, 1 blue square</look><look>9 red circles</look>")["perception"] == 1.0
    empty = scene(objects=[])
    assert parts("<look>nothing</look>", empty) == expect(1.0, 1.0, 1.0, 0.0)
    assert parts("<look>a red circle</look>", empty) == expect(0.0, 0.0, 0.0, 1.0)


def test_malformed_facts_never_raise() -> None:
    for objects in ("x", None, [1, None, {"color": 3, "shape": "circle"}, {"color": "red"}], [[]]):
        assert parts("<look>a red circle</look>", scene(objects=objects))["perception"] == 0.0


def test_long_inputs_are_bounded() -> None:
    fn = get_reward("perception")
    huge_span = "<look>" + "2 red circles, 1 blue square " * 3600 + "</look>"  # ~100 kB inside the span
    opens = "<look>" * 17000  # ~100 kB of unclosed tags
    tail = "<look>2 red circles, 1 blue square</look>" + "x" * 100_000  # short span, 100 kB after
    start = time.perf_counter()
    assert fn(huge_span, scene()).total == 0.0  # longer than MAX_LOOK_CHARS: not a description
    assert fn(opens, scene()).total == 0.0
    assert fn(tail, scene()).total == 1.0
    assert time.perf_counter() - start < 0.5


def test_compose_exposes_the_extra_parts() -> None:
    fn = build_reward({"accuracy": 1.0, "perception": 0.5})
    r = fn(
        "<look>2 red circles, 1 blue square, a green triangle</look><think>t</think><answer>2</answer>",
        scene(),
    )
    assert r.parts["accuracy"] == 1.0
    assert r.parts["perception"] == pytest.approx(6 / 7)
    assert r.parts["perception/precision"] == 0.75
    assert r.parts["perception/recall"] == 1.0
    assert r.parts["perception/false_mentions"] == 0.25
    assert r.total == pytest.approx(1.0 + 0.5 * 6 / 7)


def test_sr1_name_is_a_zero_reward_for_configs() -> None:
    r = build_reward({"accuracy": 1.0, "sr1": 0.5})("<answer>2</answer>", scene())
    assert r.parts["sr1"] == 0.0 and r.total == 1.0
