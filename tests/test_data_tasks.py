"""Procedural tasks: determinism, facts that agree with answers and pixels, class coverage, knobs."""

from __future__ import annotations

import io
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmrl.data import ANSWER_TYPES, IMAGE_PLACEHOLDER, Sample, generate, get_task, task_names
from vlmrl.data.tasks.base import PALETTE, SHAPES
from vlmrl.data.tasks.chart import answer_from_facts as chart_answer
from vlmrl.data.tasks.geometry import answer_from_facts as geometry_answer
from vlmrl.data.tasks.ground import format_box
from vlmrl.data.tasks.pope import POPULARITY
from vlmrl.data.tasks.simple import position_of
from vlmrl.data.tasks.spatial import relation_holds

ALL_TASKS = ["chart", "color", "count", "geometry", "ground", "pope", "position", "spatial"]
#: Tasks that need tools (issue 6); their own tests are in tests/test_envs.py.
TOOL_TASKS = ["chart_calc", "measure", "zoom"]
DEFAULT_SIZE = {"geometry": 224, "chart": 224}


def png(s: Sample) -> bytes:
    buf = io.BytesIO()
    s.images[0].save(buf, format="PNG")
    return buf.getvalue()


def recompute(s: Sample) -> str:
    """The answer implied by the facts alone; must equal ``s.answer`` for every task."""
    f = s.facts
    objs = f.get("objects", [])
    if s.task == "color":
        return objs[0]["color"]
    if s.task == "position":
        return position_of(objs[0]["box"], tuple(f["image_size"]), f["classes"])
    if s.task == "count":
        a = f["asked"]
        return str(sum(o["color"] == a["color"] and o["shape"] == a["shape"] for o in objs))
    if s.task == "geometry":
        return str(geometry_answer(f))
    if s.task == "chart":
        return chart_answer(f)
    if s.task == "spatial":
        holds = relation_holds(f["relation"], objs[f["subject"]]["box"], objs[f["reference"]]["box"])
        return "yes" if holds else "no"
    if s.task == "ground":
        return format_box(objs[f["target"]]["box"])
    if s.task == "pope":
        probe = (f["probe"]["color"], f["probe"]["shape"])
        present = probe in {(o["color"], o["shape"]) for o in objs}
        assert present == f["present"]
        return "yes" if present else "no"
    raise AssertionError(f"no recompute rule for task {s.task}")


GUI_TASKS = ["gui", "gui_ground"]
#: Tasks with a video or several images (tested in test_video.py).
MEDIA_TASKS = ["compare", "motion"]
#: Tasks of the failure-mode experiments (tested with their experiments).
EXPERIMENT_TASKS = ["count_probe", "shortcut"]


def test_all_tasks_registered() -> None:
    import vlmrl.envs  # noqa: F401  (registers the GUI tasks, which live with their environment)

    assert task_names() == sorted(ALL_TASKS + TOOL_TASKS + GUI_TASKS + MEDIA_TASKS + EXPERIMENT_TASKS)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_same_seed_same_bytes(task: str) -> None:
    a, b = generate(task, 6, seed=7), generate(task, 6, seed=7)
    assert [png(s) for s in a] == [png(s) for s in b]
    assert [(s.id, s.problem, s.answer, json.dumps(s.facts)) for s in a] == [
        (s.id, s.problem, s.answer, json.dumps(s.facts)) for s in b
    ]


@pytest.mark.parametrize("task", ALL_TASKS)
def test_seeds_and_splits_differ(task: str) -> None:
    base = [png(s) for s in generate(task, 8, seed=0)]
    assert base != [png(s) for s in generate(task, 8, seed=1)]
    assert base != [png(s) for s in generate(task, 8, seed=0, split="test")]
    assert len(set(base)) > 1  # samples within one call differ too


def test_generate_is_prefix_stable() -> None:
    """Sample i does not depend on n, so a data set can grow without changing its start."""
    assert [png(s) for s in generate("count", 4, seed=3)] == [
        png(s) for s in generate("count", 9, seed=3)[:4]
    ]
    assert [png(s) for s in generate("count", 2, seed=3, start=2)] == [
        png(s) for s in generate("count", 4, seed=3)[2:]
    ]


@pytest.mark.parametrize("task", ALL_TASKS)
def test_sample_shape_and_facts(task: str) -> None:
    size = DEFAULT_SIZE.get(task, 112)
    for s in generate(task, 40, seed=2, split="val"):
        assert s.task == task and s.split == "val" and s.answer_type in ANSWER_TYPES
        assert len(s.images) == 1 and s.images[0].size == (size, size) and s.images[0].mode == "RGB"
        assert s.problem.count(IMAGE_PLACEHOLDER) == 1
        assert json.loads(json.dumps(s.facts)) == s.facts  # JSON-serialisable, no tuples
        assert s.facts["image_size"] == [size, size]
        for o in s.facts["objects"]:
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 < size and 0 <= y1 < y2 < size, o
        assert recompute(s) == s.answer, (s.problem, s.answer, s.facts)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_facts_match_pixels(task: str) -> None:
    """The centre of each coloured object's box has that object's colour in the image."""
    for s in generate(task, 20, seed=4):
        img = s.images[0]
        for o in s.facts["objects"]:
            if o["color"] in PALETTE:
                x1, y1, x2, y2 = o["box"]
                assert img.getpixel(((x1 + x2) // 2, (y1 + y2) // 2)) == PALETTE[o["color"]], o


@pytest.mark.parametrize("task", ALL_TASKS)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), index=st.integers(0, 10_000))
def test_facts_consistent_any_seed(task: str, seed: int, index: int) -> None:
    (s,) = generate(task, 1, seed=seed, start=index)
    assert recompute(s) == s.answer


@pytest.mark.parametrize(
    ("task", "knobs", "expected"),
    [
        ("color", {}, {"red", "green", "blue"}),
        ("position", {}, {"top-left", "top-right", "bottom-left", "bottom-right"}),
        ("position", {"classes": 2}, {"left", "right"}),
        ("count", {}, {"1", "2", "3", "4"}),
        ("count", {"max_count": 6, "min_count": 0, "grid": 3, "distractors": 2}, {str(i) for i in range(7)}),
        ("spatial", {}, {"yes", "no"}),
        ("pope", {}, {"yes", "no"}),
    ],
)
def test_answers_cover_all_classes(task: str, knobs: dict, expected: set[str]) -> None:
    answers = Counter(s.answer for s in generate(task, 150, seed=0, **knobs))
    assert set(answers) == expected
    assert min(answers.values()) >= 150 / len(expected) / 3  # roughly balanced, not just present


def test_chart_and_geometry_cover_kinds() -> None:
    charts = generate("chart", 100, seed=0)
    assert {s.facts["kind"] for s in charts} == {"value", "largest", "smallest", "sum"}
    assert {s.answer_type for s in charts} == {"number", "choice"}
    geo = generate("geometry", 100, seed=0)
    assert {s.facts["kind"] for s in geo} == {"angle", "perimeter", "area"}
    assert len({s.answer for s in geo}) > 20
    assert len({s.answer for s in generate("ground", 100, seed=0)}) == 100


def test_spatial_and_pope_cover_variants() -> None:
    assert {s.facts["relation"] for s in generate("spatial", 100, seed=0)} == {
        "left",
        "right",
        "above",
        "below",
    }
    pope = generate("pope", 200, seed=0, mode="mixed")
    assert {s.facts["mode"] for s in pope} == {None, "random", "popular", "adversarial"}


def test_pope_negative_modes() -> None:
    for s in generate("pope", 60, seed=1, mode="adversarial", yes_ratio=0.0):
        probe = (s.facts["probe"]["color"], s.facts["probe"]["shape"])
        present = [(o["color"], o["shape"]) for o in s.facts["objects"]]
        assert s.answer == "no" and probe not in present
        assert any((probe[0] == p[0]) != (probe[1] == p[1]) for p in present)  # one attribute away
    for s in generate("pope", 60, seed=1, mode="popular", yes_ratio=0.0):
        present = {(o["color"], o["shape"]) for o in s.facts["objects"]}
        top_absent = [c for c in POPULARITY if c not in present][:3]
        assert (s.facts["probe"]["color"], s.facts["probe"]["shape"]) in top_absent
    assert {s.answer for s in generate("pope", 30, seed=1, yes_ratio=1.0)} == {"yes"}


def test_size_and_difficulty_knobs() -> None:
    (s,) = generate("count", 1, seed=0, size=64)
    assert s.images[0].size == (64, 64)
    for s in generate("count", 30, seed=0, shapes=("circle", "square"), distractor_colors=("blue", "green")):
        assert s.facts["asked"]["color"] == "red" and s.facts["asked"]["shape"] in ("circle", "square")
        assert recompute(s) == s.answer
    (s,) = generate("chart", 1, seed=0, value_labels=True, min_bars=5)
    assert len(s.facts["bars"]) == 5
    assert {s.facts["kind"] for s in generate("geometry", 20, seed=0, kinds=("angle",))} == {"angle"}
    assert all(len(s.facts["objects"]) == 5 for s in generate("ground", 10, seed=0, distractors=4))
    assert set(SHAPES) >= {o["shape"] for s in generate("ground", 20, seed=0) for o in s.facts["objects"]}


def test_unknown_task_lists_allowed_names() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'cnt'; allowed tasks: \['chart', 'chart_calc'"):
        get_task("cnt")
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        generate("nope", 1, seed=0)


def test_bad_knobs_are_named() -> None:
    with pytest.raises(ValueError, match=r"task 'count' has no knob\(s\) \['max'\]; allowed knobs: \['size'"):
        get_task("count", max=3)
    with pytest.raises(ValueError, match="must fit the 2x2 grid"):
        get_task("count", grid=2)
    with pytest.raises(ValueError, match=r"knob 'color' has unknown colours \['pink'\]"):
        get_task("count", color="pink")
    with pytest.raises(ValueError, match="'classes' must be 2 or 4"):
        get_task("position", classes=3)
    with pytest.raises(ValueError, match="unknown mode 'rare'"):
        get_task("pope", mode="rare")
