"""Property tests: every registered reward, on any text, returns a finite total in range, fast.

The text mixes arbitrary unicode with fragments that reach the parsers' corners: tags (whole,
broken, nested), ``\\boxed{`` with unbalanced braces, fractions, powers and factorials (the
constructs that can make sympy hang), box-like number lists and option letters.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmrl.data.sample import Sample
from vlmrl.rewards import build_reward, get_reward, reward_names

#: Per-call wall-clock bound asserted on every example (math's own budget is 1 s).
CALL_BOUND_S = 2.0

FRAGMENTS = [
    "<answer>", "</answer>", "<think>", "</think>", "<look>", "</look>", "<answer", "answer>",
    "\\boxed{", "{", "}", "\\frac", "\\frac{1}{2}", "\\sqrt{", "^", "^{", "**", "!", "(", ")",
    "[", "]", ",", ".", "/", "%", "-", "e", "x", "=", "0", "1", "2", "9", "99", "0.5", "1e9",
    "nan", "inf", "A", "(B)", "yes", "No.", " ", "\n", "$", "\\text{", "∞", "½", "🙂",
]  # fmt: skip

SAMPLES = [
    Sample(id="m", images=[], problem="", answer="0.5", answer_type="math"),
    Sample(id="n", images=[], problem="", answer="1,200", answer_type="number"),
    Sample(id="c", images=[], problem="", answer="B", answer_type="choice"),
    Sample(id="y", images=[], problem="", answer="yes", answer_type="yesno"),
    Sample(
        id="b",
        images=[],
        problem="",
        answer="[0, 0, 10, 10]",
        answer_type="box",
        facts={"image_size": (20, 10)},
    ),
    Sample(id="t", images=[], problem="", answer="red cube", answer_type="text"),
]

fragment_text = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
wrapped = fragment_text.map(lambda t: f"<think>{t}</think><answer>{t}</answer>")
completions = st.one_of(st.none(), st.text(max_size=200), fragment_text, wrapped)

FUZZ = settings(
    max_examples=100,
    deadline=timedelta(seconds=CALL_BOUND_S),
    database=None,  # leave no .hypothesis/ folder in the tree
    suppress_health_check=[HealthCheck.too_slow],
)


def check(result_total: float, parts: dict[str, float], lo: float = 0.0, hi: float = 1.0) -> None:
    assert isinstance(result_total, float) and math.isfinite(result_total)
    assert lo <= result_total <= hi
    assert all(isinstance(v, float) and math.isfinite(v) for v in parts.values())


@pytest.mark.parametrize("name", reward_names())
@FUZZ
@given(completion=completions, sample=st.sampled_from(SAMPLES))
def test_reward_never_raises_and_stays_in_range(name: str, completion: str | None, sample: Sample) -> None:
    start = time.perf_counter()
    result = get_reward(name)(completion, sample)
    assert time.perf_counter() - start < CALL_BOUND_S
    check(result.total, result.parts)


@FUZZ
@given(completion=completions, sample=st.sampled_from(SAMPLES))
def test_composed_reward_is_the_weighted_sum(completion: str | None, sample: Sample) -> None:
    fn = build_reward({"accuracy": 0.9, "format": 0.1})
    result = fn(completion, sample)
    check(result.total, result.parts)
    assert result.total == pytest.approx(0.9 * result.parts["accuracy"] + 0.1 * result.parts["format"])


KINDS = ["math", "number", "choice", "yesno", "box", "text", "other"]


@FUZZ
@given(
    completion=completions, answer=st.one_of(st.text(max_size=50), fragment_text), kind=st.sampled_from(KINDS)
)
def test_auto_survives_any_ground_truth(completion: str | None, answer: str, kind: str) -> None:
    # Ground truth is validated at load time, but a reward still must not raise on odd data.
    sample = Sample(id="g", images=[], problem="", answer=answer, answer_type=kind)
    start = time.perf_counter()
    result = get_reward("auto")(completion, sample)
    assert time.perf_counter() - start < CALL_BOUND_S
    check(result.total, result.parts)
