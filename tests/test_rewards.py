"""Hand-picked cases for vlmrl.rewards: each expected value is worked out in the test."""

from __future__ import annotations

import contextlib
import doctest
import importlib
import math
import pkgutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

import vlmrl.rewards as R
from vlmrl.data.sample import Sample
from vlmrl.rewards import RewardBreakdown, extract_answer, get_reward, parse_number


def sample(answer: str, answer_type: str = "math", **kw) -> Sample:
    return Sample(
        id="t", images=kw.pop("images", []), problem="", answer=answer, answer_type=answer_type, **kw
    )


def total(name: str, completion: str | None, s: Sample) -> float:
    return get_reward(name)(completion, s).total


def ans(text: str) -> str:
    return f"<think>...</think><answer>{text}</answer>"


@pytest.mark.parametrize("mod", [m.name for m in pkgutil.iter_modules(R.__path__)])
def test_docstring_examples(mod: str) -> None:
    module = importlib.import_module(f"vlmrl.rewards.{mod}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer> 3 </answer>", "3"),
        ("<answer>1</answer> then <answer>2</answer>", None),  # two different answers: none
        ("<answer>2</answer> so <answer> 2 </answer>", "2"),  # the same answer twice: that answer
        ("<answer><answer>7</answer></answer>", "7"),  # nested: the innermost
        ("so \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces balance
        ("\\boxed{1} \\boxed{2", "1"),  # the last balanced one
        ("<answer>\\boxed{4}</answer>", "4"),  # a boxed answer inside the tags is unwrapped
        ("<answer>4", None),
        ("no answer here", None),
        (None, None),
    ],
)
def test_extract_answer(completion: str | None, expected: str | None) -> None:
    assert extract_answer(completion) == expected


@pytest.mark.parametrize("unit", ["<answer>", "</answer>", "\\boxed{", "{", "<answer>\\boxed{"])
def test_extract_answer_is_linear_on_100kb(unit: str) -> None:
    text = unit * (100_000 // len(unit))
    start = time.perf_counter()
    extract_answer(text)
    assert time.perf_counter() - start < 0.5


# ---------------------------------------------------------------- math


@pytest.mark.parametrize(
    "pred", ["0.5", "1/2", "\\frac{1}{2}", "\\dfrac12", "2/4", ".5", "0.49999", "$\\frac{1}{2}$"]
)
def test_math_equivalent_forms_of_a_half(pred: str) -> None:
    # 0.49999 is within relative 1e-4 of 0.5: |0.5 - 0.49999| / 0.5 = 2e-5.
    assert total("math", ans(pred), sample("0.5")) == 1.0


def test_math_boxed_fraction_without_tags() -> None:
    assert total("math", "The answer is \\boxed{\\frac{1}{2}}.", sample("0.5")) == 1.0


@pytest.mark.parametrize("pred", ["0.6", "1/3", "0.4999", "-0.5", "x", "", "\\frac{1}{"])
def test_math_wrong_answers(pred: str) -> None:
    # 0.4999 is 2e-4 relative away: outside the 1e-4 tolerance.
    assert total("math", ans(pred), sample("0.5")) == 0.0


def test_math_symbolic_and_numeric_fallback() -> None:
    gold = sample("2\\sqrt{3}")
    assert total("math", ans("\\sqrt{12}"), gold) == 1.0
    assert total("math", ans("3.4641"), gold) == 1.0  # 2√3 = 3.46410…, relative error 5e-7
    assert total("math", ans("3.46"), gold) == 0.0  # relative error 1.2e-3


@pytest.mark.parametrize(
    "completion",
    [
        "garbage ∑∂√ 🙂 <answer>½</answer>",
        "<answer>0.5",  # unclosed
        "<answer><think>0.5</answer>",
        "x" * 100_000,
        "<answer>" + "1" * 2000 + "</answer>",  # longer than MAX_ANSWER_CHARS
        None,
    ],
)
def test_math_garbage_scores_zero(completion: str | None) -> None:
    assert total("math", completion, sample("0.5")) == 0.0


EXPLOSIVE = ["9^{9^{9}}", "(99!)!", "9**9**9", "\\prod_{i=1}^{10^{6}} i", "10^{100000}", "(" * 300 + "1"]


@pytest.mark.parametrize("pred", EXPLOSIVE)
def test_math_is_bounded_in_main_thread(pred: str) -> None:
    start = time.perf_counter()
    assert total("math", ans(pred), sample("0.5")) == 0.0
    assert time.perf_counter() - start < 2.0


def test_math_is_bounded_and_correct_in_worker_threads() -> None:
    # math_verify's own signal timeout would raise ValueError here; ours must not.
    cases = [*EXPLOSIVE, "1/2", "\\frac{1}{2}"]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        got = list(pool.map(lambda p: total("math", ans(p), sample("0.5")), cases))
    assert got == [0.0] * len(EXPLOSIVE) + [1.0, 1.0]
    assert time.perf_counter() - start < 2.0 * len(cases)


# ---------------------------------------------------------------- number, choice, yesno, text


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("1,200", "1200", 1.0),
        ("1200.0 cm", "1200", 1.0),
        ("3/4", "0.75", 1.0),
        ("\\frac{3}{4}", "0.75", 1.0),
        ("50%", "50", 1.0),  # the percent sign is dropped, not divided out
        ("$12", "12", 1.0),
        ("45^\\circ", "45", 1.0),
        ("1,2", "12", 0.0),  # not a thousands separator: refused
        ("12 or 13", "12", 0.0),
        ("13", "12", 0.0),
        ("nan", "12", 0.0),
    ],
)
def test_number(pred: str, gold: str, expected: float) -> None:
    assert total("number", ans(pred), sample(gold, "number")) == expected


@pytest.mark.parametrize(
    ("pred", "expected"),
    [("B", 1.0), ("(B)", 1.0), ("b", 1.0), ("B.", 1.0), ("B) 12 cm", 1.0), ("Option B", 1.0), ("C", 0.0)],
)
def test_choice(pred: str, expected: float) -> None:
    assert total("choice", ans(pred), sample("B", "choice")) == expected
    assert total("choice", ans(pred), sample("(B)", "choice")) == expected


def test_choice_gold_without_letter_compares_text() -> None:
    assert total("choice", ans("Red"), sample("red", "choice")) == 1.0


@pytest.mark.parametrize(
    ("pred", "expected"), [("yes", 1.0), ("Yes.", 1.0), ("YES", 1.0), ("Yes, it is.", 1.0)]
)
def test_yesno(pred: str, expected: float) -> None:
    assert total("yesno", ans(pred), sample("Yes", "yesno")) == expected
    assert total("yesno", ans(pred), sample("no", "yesno")) == 0.0


def test_yesno_refuses_words_that_only_start_with_no() -> None:
    assert total("yesno", ans("No doubt"), sample("no", "yesno")) == 0.0


def test_text() -> None:
    assert total("text", ans("  The Red  Cube."), sample("the red cube", "text")) == 1.0
    assert total("text", ans("blue cube"), sample("the red cube", "text")) == 0.0


# ---------------------------------------------------------------- iou


def test_iou_hand_computed_pixels() -> None:
    # [0,0,10,10] ∩ [5,0,15,10] = 5×10 = 50; union = 100 + 100 − 50 = 150 → 1/3.
    r = get_reward("iou")(ans("[5, 0, 15, 10]"), sample("[0, 0, 10, 10]", "box"))
    assert r.total == pytest.approx(1 / 3)
    assert r.parts["iou_at_0.5"] == 0.0
    assert total("iou", ans("[0, 0, 10, 10]"), sample("[0, 0, 10, 10]", "box")) == 1.0
    assert total("iou", ans("[20, 20, 30, 30]"), sample("[0, 0, 10, 10]", "box")) == 0.0


def test_iou_at_half_part() -> None:
    # [0,0,10,10] vs [0,0,10,5]: inter 50, union 100 → 0.5, counts as a hit.
    r = get_reward("iou")(ans("[0, 0, 10, 5]"), sample("[0, 0, 10, 10]", "box"))
    assert (r.total, r.parts["iou_at_0.5"]) == (0.5, 1.0)


def test_iou_normalised_uses_image_size() -> None:
    # On a 20×10 image, [0.25, 0, 0.75, 1] is [5, 0, 15, 10] in pixels → IoU 1/3 as above.
    pred = ans("[0.25, 0, 0.75, 1]")
    with_image = sample("[0, 0, 10, 10]", "box", images=[Image.new("RGB", (20, 10))])
    with_facts = sample("[0, 0, 10, 10]", "box", facts={"image_size": (20, 10)})
    assert total("iou", pred, with_image) == pytest.approx(1 / 3)
    assert total("iou", pred, with_facts) == pytest.approx(1 / 3)
    assert total("iou", pred, sample("[0, 0, 10, 10]", "box")) == 0.0  # no size known


def test_iou_1000_grid() -> None:
    # Qwen2-VL grid: [250, 0, 750, 1000] / 1000 × (20, 10) = [5, 0, 15, 10] → 1/3.
    s = sample("[0, 0, 10, 10]", "box", facts={"image_size": (20, 10)})
    assert total("iou_1000", ans("[250, 0, 750, 1000]"), s) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "pred", ["[10, 0, 0, 10]", "[0, 0, nan, 10]", "[0, 0, 10]", "[0, 0, 10, 10, 1]", "box"]
)
def test_iou_malformed_boxes_score_zero(pred: str) -> None:
    assert total("iou", ans(pred), sample("[0, 0, 10, 10]", "box")) == 0.0


# ---------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>a</think><answer>1</answer>", 1.0),
        ("  <think>a</think>\n<answer>1</answer>\n", 1.0),
        ("<look>two dots</look> <think>a</think> <answer>1</answer>", 1.0),
        ("<think>a</think> so the answer is \\boxed{1}.", 1.0),
        ("<answer>1</answer>", 0.0),  # no think
        ("<think>a<answer>1</answer>", 0.0),  # unclosed think
        ("<think>a</think><answer>1", 0.0),  # unclosed answer
        ("<think><think>a</think></think><answer>1</answer>", 0.0),  # nested
        ("<think>a</think><answer>1</answer><answer>2</answer>", 0.0),  # repeated
        ("<think>a</think><answer> </answer>", 0.0),  # empty answer
        ("<think>a</think> \\boxed{1", 0.0),  # unbalanced box
        ("hi <think>a</think><answer>1</answer>", 0.0),  # text outside the blocks
        ("<answer>1</answer><think>a</think>", 0.0),  # wrong order
    ],
)
def test_format(completion: str, expected: float) -> None:
    assert total("format", completion, sample("1")) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer>3</answer>", 1.0),
        (" <answer> 3 </answer>\n", 1.0),
        ("<answer></answer>", 0.0),
        ("<answer>3</answer><answer>4</answer>", 0.0),
        ("<think>a</think><answer>3</answer>", 0.0),
        ("<answer>3", 0.0),
        ("the answer: <answer>3</answer>", 0.0),
    ],
)
def test_format_answer_only(completion: str, expected: float) -> None:
    assert total("format_answer_only", completion, sample("3")) == expected


# ---------------------------------------------------------------- auto, compose, registry


@pytest.mark.parametrize(
    ("answer", "answer_type", "pred"),
    [
        ("0.5", "math", "\\frac{1}{2}"),
        ("1200", "number", "1,200"),
        ("C", "choice", "(c)"),
        ("no", "yesno", "No."),
        ("[0, 0, 10, 10]", "box", "[0, 0, 10, 10]"),
        ("red", "text", "Red"),
    ],
)
def test_auto_dispatches_on_answer_type(answer: str, answer_type: str, pred: str) -> None:
    r = get_reward("auto")(ans(pred), sample(answer, answer_type))
    assert r.total == 1.0 and r.parts["accuracy"] == 1.0
    assert get_reward("accuracy") is get_reward("auto")


def test_auto_unknown_answer_type_scores_zero() -> None:
    assert total("auto", ans("1"), sample("1", "nonsense")) == 0.0


def test_compose_weights_and_parts() -> None:
    fn = R.build_reward({"accuracy": 0.9, "format": 0.1})
    right_bad_format = fn("<answer>3</answer>", sample("3", "number"))
    # accuracy 1 × 0.9 + format 0 × 0.1 = 0.9
    assert right_bad_format.total == pytest.approx(0.9)
    assert right_bad_format.parts == {"accuracy": 1.0, "accuracy/number": 1.0, "format": 0.0}
    wrong_good_format = fn(ans("4"), sample("3", "number"))
    assert wrong_good_format.total == pytest.approx(0.1)


def test_compose_adds_weighted_spans() -> None:
    @R.register_reward("test_spans")
    def spans_reward(completion: str | None, s: Sample) -> RewardBreakdown:
        return RewardBreakdown(1.0, {"test_spans": 1.0}, {"answer": 1.0, "perception": 0.5})

    try:
        r = R.compose({"test_spans": 0.5, "format": 0.5})(ans("1"), sample("1"))
        # total = 0.5 × 1 + 0.5 × 1; spans = 0.5 × each span of test_spans (format has none)
        assert r.total == pytest.approx(1.0)
        assert r.spans == {"answer": 0.5, "perception": 0.25}
    finally:
        R.registry._REWARDS.pop("test_spans")


@pytest.mark.parametrize("spec", [{"acuracy": 1.0}, {}, {"format": float("nan")}, {"format": "1"}, None])
def test_compose_rejects_bad_specs(spec: object) -> None:
    with pytest.raises(ValueError) as info:
        R.build_reward(spec)  # type: ignore[arg-type]
    if spec == {"acuracy": 1.0}:
        assert "'acuracy'" in str(info.value) and "format" in str(info.value)


def test_get_reward_unknown_name_lists_allowed() -> None:
    with pytest.raises(KeyError) as info:
        get_reward("fromat")
    message = str(info.value)
    assert "'fromat'" in message and all(name in message for name in R.reward_names())
    with pytest.raises(ValueError):
        get_reward("fromat")


def test_register_reward_refuses_a_second_function_under_a_taken_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        R.register_reward("format")(lambda completion, s: RewardBreakdown(0.0))


@pytest.mark.parametrize("name", R.reward_names())
def test_every_reward_takes_none_and_empty(name: str) -> None:
    for completion in (None, "", "<answer></answer>"):
        r = get_reward(name)(completion, sample("1"))
        assert r.total == 0.0 and all(math.isfinite(v) for v in r.parts.values())


# ---------------------------------------------------------------- timeout


def test_timeout_restores_signal_state() -> None:
    def handler(signum, frame):  # pragma: no cover - never fires in this test
        raise AssertionError("outer alarm fired")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        assert R.call_with_timeout(lambda: time.sleep(1.0), 0.05, default="late") == "late"
        assert signal.getsignal(signal.SIGALRM) is handler
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < left <= 30.0  # the outer timer keeps running with what it had left
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_timeout_in_worker_thread() -> None:
    out: list[object] = []

    def work() -> None:
        slow = R.call_with_timeout(lambda: [time.sleep(0.01) for _ in range(300)], 0.1, "late")
        fast = R.call_with_timeout(lambda: 42, 1.0, "late")
        time.sleep(0.2)  # a stray injection after the call would surface here
        out.extend([slow, fast])

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(5)
    assert out == ["late", 42]


def _swallows_first_timeout() -> str:
    """Like mpmath's bare ``except:``: eats one timeout and carries on with slow work."""
    # Short sleeps: an injected (thread) timeout lands only between bytecodes, not inside sleep().
    with contextlib.suppress(BaseException):
        for _ in range(100):
            time.sleep(0.01)
    for _ in range(500):
        time.sleep(0.01)
    return "finished"


@pytest.mark.parametrize("where", ["main", "thread"])
def test_timeout_repeats_when_swallowed(where: str) -> None:
    # Deadline 0.1 s is swallowed; the repeat RETRY_S (0.25 s) later ends the call at ~0.35 s.
    out: list[object] = []

    def work() -> None:
        start = time.perf_counter()
        out.append(R.call_with_timeout(_swallows_first_timeout, 0.1, "late"))
        out.append(time.perf_counter() - start)

    if where == "main":
        work()
    else:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(10)
    assert out[0] == "late" and out[1] < 1.0


def test_parse_number_rejects_infinities() -> None:
    assert parse_number("1e400") is None and parse_number("-inf") is None


# --------------------------------------------------------------------------- several answers


@pytest.mark.parametrize(
    ("name", "right", "wrong", "answer_type"),
    [
        ("accuracy", "7", "8", "number"),
        ("auto", "7", "8", "number"),
        ("number", "7", "8", "number"),
        ("math", "7", "8", "math"),
        ("choice", "B", "C", "choice"),
        ("yesno", "yes", "no", "yesno"),
        ("text", "red", "blue", "text"),
        ("iou", "[0, 0, 10, 10]", "[50, 50, 60, 60]", "box"),
        ("iou_1000", "[0, 0, 10, 10]", "[500, 500, 600, 600]", "box"),
    ],
)
def test_several_distinct_answers_score_zero(name: str, right: str, wrong: str, answer_type: str) -> None:
    """Hedging (`<answer>8</answer><answer>7</answer>`) must not pay when the last one is right:
    it did (1.0), a reward-hacking vector. The same answer twice is still one answer."""
    s = sample(right, answer_type, images=[Image.new("RGB", (1000, 1000))])  # pixels = 1000-scale
    assert total(name, ans(right), s) == pytest.approx(1.0)
    assert total(name, ans(wrong) + ans(right), s) == 0.0
    assert total(name, ans(right) + " " + ans(right), s) == pytest.approx(1.0)
