"""The agentic environment layer: tool-call parsing, tools, calculator, ToolEnv, tasks, SFT traces.

Everything here is pure Python/PIL/numpy (no model): seconds in total.
"""

from __future__ import annotations

import builtins
import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vlmrl.data.sample import Sample
from vlmrl.data.tasks import generate, get_task, task_names
from vlmrl.data.tasks.measure import seg_length, vertex_angle
from vlmrl.data.tasks.zoom import PATTERNS, ZoomTask
from vlmrl.envs import (
    REGIONS,
    CalcError,
    Observation,
    StepResult,
    ToolCall,
    ToolCallError,
    ToolContext,
    ToolEnv,
    VisualEnv,
    build_tools,
    calculate,
    env_names,
    make_env,
    parse_tool_call,
    region_box,
    run_tool,
    sft_trace,
)
from vlmrl.envs.toolcall import MAX_DEPTH, MAX_PAYLOAD_CHARS
from vlmrl.envs.tools import fit_to_budget
from vlmrl.envs.traces import tool_call_text


def call(name: str, arguments: object) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


# ---- parse_tool_call: a table of valid / invalid / hostile turns --------------------------------
VALID = [
    (call("zoom_in", {"region": "top-left"}), ToolCall("zoom_in", {"region": "top-left"})),
    (
        '<think>look</think>\n<tool_call>\n{"name": "calculate", "arguments": {"expression": "2+2"}}\n'
        "</tool_call>",
        ToolCall("calculate", {"expression": "2+2"}),
    ),
    (call("measure", {"points": [[0, 0], [3, 4]]}), ToolCall("measure", {"points": [[0, 0], [3, 4]]})),
    (call("crop", {}), ToolCall("crop", {})),
    (
        call("calculate", {"expression": "2×3 — ünïcödé ✓"}),
        ToolCall("calculate", {"expression": "2×3 — ünïcödé ✓"}),
    ),
]
INVALID = [
    ("no call here", "no <tool_call> tag"),
    ("<tool_call>{not json}</tool_call>", "not valid JSON"),
    ("<tool_call></tool_call>", "empty tool call"),
    ("<tool_call>" + '{"name": "crop", "arguments": {}}', "must be closed"),
    (call("crop", {}) + call("crop", {}), "one tool call per turn"),
    ('<tool_call>["crop", {}]</tool_call>', "must be a JSON object"),
    ('<tool_call>{"name": 3, "arguments": {}}</tool_call>', 'needs a string "name"'),
    ('<tool_call>{"name": "crop"}</tool_call>', 'no "arguments"'),
    ('<tool_call>{"name": "crop", "arguments": [1, 2]}</tool_call>', '"arguments" must be a JSON object'),
    ('<tool_call>{"name": "crop", "arguments": "box"}</tool_call>', '"arguments" must be a JSON object'),
    ('<tool_call>{"name": "crop", "arguments": {}, "extra": 1}</tool_call>', "unknown key"),
    ('<tool_call>{"name": "crop", "name": "zoom_in", "arguments": {}}</tool_call>', "appears twice"),
    ('<tool_call>{"name": "crop", "arguments": {"box": [NaN, 0, 1, 1]}}</tool_call>', "NaN is not allowed"),
    (
        '<tool_call>{"name": "crop", "arguments": {"box": [Infinity, 0, 1, 1]}}</tool_call>',
        "Infinity is not allowed",
    ),
    (
        '<tool_call>{"name": "crop", "arguments": {"box": [-Infinity, 0, 1, 1]}}</tool_call>',
        "Infinity is not allowed",
    ),
    ('<tool_call>{"name": "../../etc/passwd", "arguments": {}}</tool_call>', "not a plain identifier"),
    ('<tool_call>{"name": "/etc/passwd", "arguments": {}}</tool_call>', "not a plain identifier"),
    ('<tool_call>{"name": "__import__(\'os\')", "arguments": {}}</tool_call>', "not a plain identifier"),
    (call("crop", {"box": "x" * 1_000_000}), f"at most {MAX_PAYLOAD_CHARS} allowed"),
    (
        '<tool_call>{"name": "crop", "arguments": ' + "[" * 10_000 + "]" * 10_000 + "}</tool_call>",
        "characters long",
    ),
    (
        '<tool_call>{"name": "crop", "arguments": {"a": ' + "[" * 20 + "]" * 20 + "}}</tool_call>",
        "levels deep",
    ),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_parse_valid_calls(text: str, expected: ToolCall) -> None:
    assert parse_tool_call(text) == expected


@pytest.mark.parametrize(("text", "needle"), INVALID)
def test_parse_invalid_calls_give_clear_errors(text: str, needle: str) -> None:
    out = parse_tool_call(text)
    assert isinstance(out, ToolCallError), out
    assert needle in out.message
    assert len(out.message) < 300  # a 1 MB argument is never echoed back


def test_parse_depth_bomb_is_stopped_before_json() -> None:
    """Nesting deeper than MAX_DEPTH is refused by the scan, not by a RecursionError."""
    payload = '{"name": "crop", "arguments": {"a": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}}"
    assert "levels deep" in parse_tool_call(f"<tool_call>{payload}</tool_call>").message
    ok = '{"name": "crop", "arguments": {"a": ' + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "}}"
    assert isinstance(parse_tool_call(f"<tool_call>{ok}</tool_call>"), ToolCall)


def test_parse_non_text_never_raises() -> None:
    for bad in (None, 3, b"<tool_call>", ["x"]):
        assert isinstance(parse_tool_call(bad), ToolCallError)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(max_size=300), st.sampled_from(["", "<tool_call>", "</tool_call>", '{"name": "crop"', "<answer>"])
)
def test_parse_fuzz_never_raises(text: str, tag: str) -> None:
    out = parse_tool_call(tag + text + tag[::-1])
    assert isinstance(out, (ToolCall, ToolCallError))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["zoom_in", "crop", "rotate", "measure", "calculate", "nope", "../x"]), JSON)
def test_parse_fuzz_json_payloads(name: str, arguments: object) -> None:
    out = parse_tool_call(call(name, arguments))
    assert isinstance(out, (ToolCall, ToolCallError))
    if isinstance(out, ToolCall):
        assert out.name == name and isinstance(out.arguments, dict)


# ---- calculator ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("2 ^ 3 ^ 2", 512),
        ("-2 ^ 2", -4),
        ("2 ** -1", 0.5),
        ("10 / 4", 2.5),
        ("7 % 3", 1),
        ("--3", 3),
        ("sqrt(2) ^ 2", 2),
        ("max(3, 9, 4) - min(3, 9)", 6),
        ("round(2.567, 2)", 2.57),
        ("abs(-7)", 7),
        ("sin(30)", 0.5),
        ("2 × 3 ÷ 4 − 1", 0.5),
        ("1.5e3", 1500),
        ("pi", math.pi),
        (".5 + 1.", 1.5),
    ],
)
def test_calculator_values(expr: str, value: float) -> None:
    assert calculate(expr) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize(
    ("expr", "needle"),
    [
        ("__import__('os').system('ls')", "not allowed"),
        ("open('/etc/passwd')", "unknown name 'open'"),
        ("(1).__class__", "not allowed"),
        ("x + 1", "unknown name"),
        ("eval(1)", "unknown name"),
        ("2 ^ 1000", "exponent"),
        ("9 ^ 9 ^ 9", "exponent"),
        ("10 ^ 60 * 10 ^ 60", "magnitude"),
        ("1e400", "magnitude"),
        ("exp(100)", "too large"),
        ("1 / 0", "division by zero"),
        ("0 ^ -1", "division by zero"),
        ("5 % 0", "division by zero"),
        ("(-8) ^ 0.5", "not a real number"),
        ("sqrt(-1)", "undefined"),
        ("(" * 30 + "1" + ")" * 30, "deeper"),
        ("-" * 150 + "1", "deeper"),
        ("1" * 201, "characters long"),
        ("", "empty"),
        ("2 +", "ends too early"),
        ("(2", "expected ')'"),
        ("2 3", "unexpected"),
        ("max(1)", "takes 2 to 8"),
    ],
)
def test_calculator_rejects(expr: str, needle: str) -> None:
    with pytest.raises(CalcError) as e:
        calculate(expr)
    assert needle in str(e.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.+-*/^%()e, sqrtmaxpi", max_size=60))
def test_calculator_fuzz_only_calcerror(expr: str) -> None:
    try:
        value = calculate(expr)
    except CalcError:
        return
    assert math.isfinite(value) and abs(value) <= 1e15


# ---- tools: crops, zoom, rotate, measure --------------------------------------------------------
def noise_image(w: int = 200, h: int = 120, seed: int = 0) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr)


def ctx_for(*images: Image.Image, **kw: object) -> ToolContext:
    return ToolContext(list(images), **kw)  # type: ignore[arg-type]


TOOLS = build_tools(3)


def test_crop_is_the_exact_pixels_of_the_box() -> None:
    img = noise_image()
    out = run_tool(TOOLS["crop"], {"box": [30, 20, 90, 70]}, ctx_for(img))
    assert not isinstance(out, str)
    assert out.data["box"] == [30, 20, 90, 70] and out.image.size == (60, 50)
    assert np.array_equal(np.asarray(out.image), np.asarray(img.crop((30, 20, 90, 70))))


def test_crop_normalised_box_region_and_clipping() -> None:
    img = noise_image()
    norm = run_tool(TOOLS["crop"], {"box": [0.25, 0.5, 0.75, 1.0]}, ctx_for(img))
    assert norm.data["box"] == [50, 60, 150, 120]
    assert np.array_equal(np.asarray(norm.image), np.asarray(img.crop((50, 60, 150, 120))))
    region = run_tool(TOOLS["crop"], {"region": "bottom-right"}, ctx_for(img))
    assert region.data["box"] == region_box("bottom-right", (200, 120), 3) == [133, 80, 200, 120]
    clipped = run_tool(TOOLS["crop"], {"box": [-500, -5, 180.5, 999999]}, ctx_for(img))
    assert clipped.data["box"] == [0, 0, 181, 120]
    assert np.array_equal(np.asarray(clipped.image), np.asarray(img.crop((0, 0, 181, 120))))


def test_crop_minimum_size_grows_around_centre_and_stays_inside() -> None:
    img = noise_image()
    small = run_tool(TOOLS["crop"], {"box": [100, 60, 102, 61]}, ctx_for(img, min_crop=16))
    assert small.data["box"] == [93, 52, 109, 68] and small.image.size == (16, 16)
    corner = run_tool(TOOLS["crop"], {"box": [198, 118, 200, 120]}, ctx_for(img, min_crop=16))
    assert corner.data["box"] == [184, 104, 200, 120]


def test_zoom_in_upscales_the_crop_to_the_budget() -> None:
    img = noise_image(448, 448)
    out = run_tool(TOOLS["zoom_in"], {"region": "center"}, ctx_for(img))
    box = region_box("center", (448, 448), 3)
    assert out.data["box"] == box == [149, 149, 299, 299]
    want = img.crop(tuple(box)).resize((112, 112), Image.Resampling.BICUBIC)
    assert out.image.size == (112, 112)
    assert np.array_equal(np.asarray(out.image), np.asarray(want))
    tiny = run_tool(TOOLS["zoom_in"], {"box": [10, 10, 30, 30]}, ctx_for(img))
    assert tiny.image.size == (112, 112)  # a 20 px crop is enlarged 5.6x
    wide = fit_to_budget(Image.new("RGB", (400, 100)), 112 * 112)
    assert wide.size == (224, 56) and wide.width % 28 == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"box": [10, 10, 5, 50]}, "x2 > x1"),
        ({"box": [10, 10, 10, 50]}, "x2 > x1"),
        ({"box": [300, 300, 400, 400]}, "outside"),
        ({"box": [-50, -50, -10, -10]}, "outside"),
        ({"box": [0, 0, 1e300, 1e300]}, "within"),
        ({"box": [0, 0, 10]}, "expected 4 items"),
        ({"box": [0, 0, "10", 10]}, "expected number, got string"),
        ({"box": [0, 0, True, 10]}, "got boolean"),
        ({"box": [0, 0, float("nan"), 10]}, "finite"),
        ({"box": [0, 0, float("inf"), 10]}, "finite"),
        ({"region": "../../etc/passwd"}, "not allowed; allowed: top-left"),
        ({"region": "/etc/passwd"}, "not allowed"),
        ({"region": "top-left", "box": [0, 0, 5, 5]}, "exactly one"),
        ({}, "exactly one"),
        ({"region": "top-left", "path": "/etc/passwd"}, "unknown argument 'path'"),
        ({"region": "top-left", "image": 7}, "image 7 does not exist"),
        ({"region": "top-left", "image": -1}, ">= 0"),
        ({"region": "top-left", "image": "../0"}, "expected integer"),
    ],
)
def test_crop_bad_arguments_are_error_strings(args: dict, needle: str) -> None:
    out = run_tool(TOOLS["zoom_in"], args, ctx_for(noise_image()))
    assert isinstance(out, str) and needle in out, out


def test_tools_never_open_files(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_open(*a: object, **k: object) -> None:
        raise AssertionError(f"a tool tried to open {a}")

    monkeypatch.setattr(builtins, "open", no_open)
    ctx = ctx_for(noise_image())
    for name, args in [
        ("zoom_in", {"region": "../../etc/passwd"}),
        ("crop", {"box": "/etc/passwd"}),
        ("rotate", {"angle": "/etc/passwd"}),
        ("measure", {"points": "/etc/passwd"}),
        ("calculate", {"expression": "open('/etc/passwd').read()"}),
        ("calculate", {"expression": "../../etc/passwd"}),
    ]:
        assert isinstance(run_tool(TOOLS[name], args, ctx), str)


def test_measure_distance_and_angle_by_hand() -> None:
    ctx = ctx_for(noise_image())
    assert run_tool(TOOLS["measure"], {"points": [[0, 0], [30, 40]]}, ctx).data == {"distance_px": 50.0}
    assert run_tool(TOOLS["measure"], {"points": [[10, 10], [10, 50]]}, ctx).data == {"distance_px": 40.0}
    right = run_tool(TOOLS["measure"], {"points": [[50, 10], [10, 10], [10, 60]]}, ctx)
    assert right.data == {"angle_deg": 90.0}
    sixty = run_tool(
        TOOLS["measure"],
        {"points": [[110, 150], [10, 150], [60, 150 - 50 * math.sqrt(3)]]},
        ctx_for(noise_image(200, 200)),
    )
    assert sixty.data == {"angle_deg": 60.0}
    assert "coincides" in run_tool(TOOLS["measure"], {"points": [[5, 5], [5, 5], [9, 9]]}, ctx)
    assert "outside" in run_tool(TOOLS["measure"], {"points": [[0, 0], [500, 5]]}, ctx)
    assert "expected 2 to 3 items" in run_tool(TOOLS["measure"], {"points": [[0, 0]]}, ctx)


def test_rotate_quarter_turn_is_exact_and_any_angle_expands() -> None:
    img = noise_image(112, 56)
    out = run_tool(TOOLS["rotate"], {"angle": 90}, ctx_for(img, zoom_pixels=112 * 56))
    want = img.transpose(Image.Transpose.ROTATE_90)
    assert out.image.size == want.size == (56, 112)
    assert np.array_equal(np.asarray(out.image), np.asarray(want))
    tilted = run_tool(TOOLS["rotate"], {"angle": 45}, ctx_for(img))
    assert tilted.data["angle"] == 45.0 and tilted.image.width % 28 == 0
    assert "<= 360" in run_tool(TOOLS["rotate"], {"angle": 1e9}, ctx_for(img))


# ---- ToolEnv: protocol, budgets, reward ---------------------------------------------------------
def zoom_sample(seed: int = 0) -> Sample:
    return generate("zoom", 1, seed=seed)[0]


def test_env_satisfies_protocol_and_tool_turn() -> None:
    s = zoom_sample()
    env = make_env("tools")()
    assert isinstance(env, VisualEnv)
    obs = env.reset(s)
    assert isinstance(obs, Observation) and obs.text.count("<image>") == len(obs.images) == 1
    r = env.step(call("zoom_in", {"region": s.facts["region"]}))
    assert isinstance(r, StepResult) and not r.done
    assert (
        r.info["kind"] == "tool"
        and r.info["tool"] == "zoom_in"
        and r.info["valid"]
        and r.info["error"] is None
    )
    assert r.info["latency_s"] >= 0
    assert r.observation.text.startswith("<tool_response>") and r.observation.text.count("<image>") == 1
    assert len(r.observation.images) == 1 and r.observation.images[0].size == (112, 112)
    done = env.step(f"<think>stripes</think><answer>{s.answer}</answer>")
    assert done.done and done.observation is None and done.info["kind"] == "answer"
    parts = env.reward().parts
    assert parts == {
        "accuracy": 1.0,
        "format": 0.1,
        "tool_bonus": 0.2,
        "call_cost": -0.02,
        "budget_penalty": 0.0,
    }
    assert env.reward().total == pytest.approx(1.28)


def test_reward_parts_by_hand() -> None:
    s = zoom_sample()
    wrong = next(p for p in PATTERNS if p != s.answer)
    env = ToolEnv(tool_bonus=0.5, call_cost=0.1, format_weight=0.2, budget_penalty=0.3)
    # right without a tool: accuracy + format, no bonus, no cost
    env.reset(s)
    env.step(f"<answer>{s.answer}</answer>")
    assert env.reward().parts == {
        "accuracy": 1.0,
        "format": 0.2,
        "tool_bonus": 0.0,
        "call_cost": 0.0,
        "budget_penalty": 0.0,
    }
    # wrong with a tool: no bonus, the call still costs
    env.reset(s)
    env.step(call("zoom_in", {"region": "center"}))
    env.step(f"<answer>{wrong}</answer>")
    assert env.reward().parts == {
        "accuracy": 0.0,
        "format": 0.2,
        "tool_bonus": 0.0,
        "call_cost": -0.1,
        "budget_penalty": 0.0,
    }
    # right after one failed and one valid call: bonus, two costs, format lost
    env.reset(s)
    env.step(call("zoom_in", {"region": "middle-earth"}))
    env.step(call("zoom_in", {"region": s.facts["region"]}))
    env.step(f"<answer>{s.answer}</answer>")
    r = env.reward()
    assert r.parts == {
        "accuracy": 1.0,
        "format": 0.0,
        "tool_bonus": 0.5,
        "call_cost": -0.2,
        "budget_penalty": 0.0,
    }
    assert r.total == pytest.approx(1.3)
    # right but only a failed call: no bonus (DeepEyes: the tool must have run)
    env.reset(s)
    env.step(call("zoom_in", {"box": [0, 0, -1, 5]}))
    env.step(f"<answer>{s.answer}</answer>")
    assert env.reward().parts["tool_bonus"] == 0.0


def test_budget_max_turns_ends_with_penalty() -> None:
    s = zoom_sample()
    env = ToolEnv(max_turns=2, max_tool_calls=5)
    env.reset(s)
    first = env.step("I am thinking")
    assert not first.done and first.info["kind"] == "invalid" and not first.info["valid"]
    assert "Invalid turn" in first.observation.text and first.observation.images == []
    last = env.step(call("zoom_in", {"region": "top"}))
    assert last.done and last.observation is None
    assert last.info["kind"] == "budget" and last.info["budget"] == "max_turns" and last.info["turn"] == 2
    parts = env.reward().parts
    assert parts["budget_penalty"] == -0.2 and parts["accuracy"] == 0.0 and parts["format"] == 0.0
    after = env.step(f"<answer>{s.answer}</answer>")  # a step after done changes nothing
    assert after.done and env.reward().parts["accuracy"] == 0.0


def test_budget_max_tool_calls_ends_with_penalty() -> None:
    s = zoom_sample()
    env = ToolEnv(max_turns=10, max_tool_calls=2)
    env.reset(s)
    for _ in range(2):
        assert env.step(call("zoom_in", {"region": s.facts["region"]})).info["valid"]
    r = env.step(call("zoom_in", {"region": s.facts["region"]}))
    assert r.done and r.info["kind"] == "budget" and r.info["budget"] == "max_tool_calls"
    assert r.info["tool"] == "zoom_in" and r.info["tool_calls"] == 3 and len(env.images) == 3  # third not run
    assert env.reward().parts == {
        "accuracy": 0.0,
        "format": 0.0,
        "tool_bonus": 0.0,
        "call_cost": -0.06,
        "budget_penalty": -0.2,
    }


def test_stop_from_outside_is_a_budget_stop() -> None:
    env = ToolEnv()
    env.reset(zoom_sample())
    env.stop("tokens")
    assert env.budget_hit == "tokens" and env.reward().parts["budget_penalty"] == -0.2


@pytest.mark.parametrize(
    ("turn", "kind", "needle"),
    [
        ("", "invalid", "reply with one"),
        (call("zoom_in", {"region": "top"}) + "<answer>red</answer>", "invalid", "not both"),
        (call("zoom_in", {"region": "top"}) * 2, "tool", "one tool call per turn"),
        (call("shell", {"cmd": "cat /etc/passwd"}), "tool", "unknown tool 'shell'"),
        (call("zoom_in", {"box": [0, 0, 1e9, "x"]}), "tool", "expected number"),
        ('<tool_call>{"name": "zoom_in", "arguments": {"box": [NaN, 0, 1, 1]}}</tool_call>', "tool", "NaN"),
        (call("zoom_in", {"region": "x" * 1_000_000}), "tool", "characters long"),
    ],
)
def test_env_bad_turns_become_error_observations(turn: str, kind: str, needle: str) -> None:
    env = ToolEnv()
    env.reset(zoom_sample())
    r = env.step(turn)
    assert not r.done and r.info["kind"] == kind and not r.info["valid"]
    assert (needle in r.info["error"] and needle in r.observation.text) or needle.replace(
        "'", "\\'"
    ) in r.observation.text
    assert len(r.observation.text) < 600


def test_no_tools_env_offers_nothing() -> None:
    s = zoom_sample()
    env = make_env("no_tools", max_turns=1)()
    obs = env.reset(s)
    assert "tool" not in obs.text and "<tools>" not in env.system_prompt()
    r = env.step(call("zoom_in", {"region": s.facts["region"]}))
    assert r.done and r.info["kind"] == "budget"  # the single turn is spent on a call that does not exist
    assert "unknown tool" in r.info["error"]


def test_system_prompt_lists_schemas() -> None:
    text = ToolEnv(tools=("zoom_in", "calculate")).system_prompt()
    schemas = [json.loads(line) for line in text.split("<tools>\n")[1].split("\n</tools>")[0].splitlines()]
    assert [s["function"]["name"] for s in schemas] == ["zoom_in", "calculate"]
    assert schemas[0]["function"]["parameters"]["properties"]["region"]["enum"] == list(REGIONS[3])


FUZZ_SAMPLE = Sample(
    id="fuzz",
    images=[Image.new("RGB", (64, 48), "white")],
    problem="<image>What?",
    answer="3",
    answer_type="number",
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.text(max_size=120),
            st.builds(
                lambda n, a: call(n, a),
                st.sampled_from(["zoom_in", "crop", "rotate", "measure", "calculate", "x"]),
                JSON,
            ),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_env_step_fuzz_never_raises(turns: list[str]) -> None:
    env = ToolEnv(max_turns=4, max_tool_calls=3)
    env.reset(FUZZ_SAMPLE)
    for turn in turns:
        r = env.step(turn)
        assert set(r.info) >= {"kind", "tool", "valid", "error", "latency_s"}
        assert r.done or (
            r.observation is not None and r.observation.text.count("<image>") == len(r.observation.images)
        )
        if r.done:
            break
    assert math.isfinite(env.reward().total)


# ---- registry -----------------------------------------------------------------------------------
def test_registry_errors_name_what_is_allowed() -> None:
    assert {"tools", "no_tools"} <= set(env_names())
    with pytest.raises(ValueError, match=r"unknown environment 'gym'; known environments: \[.*'tools'"):
        make_env("gym")
    with pytest.raises(ValueError, match=r"no option\(s\) \['max_turn'\]; allowed: \[.*'max_turns'"):
        make_env("tools", max_turn=3)
    with pytest.raises(ValueError, match=r"unknown tool\(s\) \['grep'\]"):
        make_env("tools", tools=["zoom_in", "grep"])
    a, b = make_env("tools")(), make_env("tools")()
    assert a is not b


def test_envs_import_no_model_code() -> None:
    code = (
        "import sys, vlmrl.envs; print([m for m in sys.modules"
        " if m.split('.')[0] in ('torch', 'transformers')"
        " or m.startswith(('vlmrl.models', 'vlmrl.train', 'vlmrl.rollout'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- tasks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["zoom", "measure", "chart_calc"])
def test_tool_tasks_registered_deterministic_and_json_facts(task: str) -> None:
    assert task in task_names()
    a, b = generate(task, 4, seed=3), generate(task, 4, seed=3)
    for x, y in zip(a, b, strict=True):
        assert x.answer == y.answer and x.facts == y.facts and x.images[0].tobytes() == y.images[0].tobytes()
        json.dumps(x.facts)
        assert x.answer_type in ("text", "number") and x.problem.count("<image>") == 1
    assert [s.facts for s in generate(task, 4, seed=4)] != [s.facts for s in a]


def test_zoom_facts_agree_with_pixels() -> None:
    for s in generate("zoom", 12, seed=1, distractors=2):
        box, region = s.facts["target_box"], s.facts["region"]
        cell = region_box(region, s.images[0].size, s.facts["grid"])
        assert cell[0] <= box[0] and cell[1] <= box[1] and box[2] <= cell[2] and box[3] <= cell[3]
        arr = np.asarray(s.images[0])
        assert tuple(arr[box[1], box[0]]) == (220, 40, 40)  # the red frame's corner is where facts say
        assert s.answer == s.facts["pattern"] == s.facts["objects"][0]["pattern"]
        assert len({o["region"] for o in s.facts["objects"]}) == 3


def test_measure_facts_agree_with_answer() -> None:
    for s in generate("measure", 20, seed=2):
        values = [
            seg_length(it["points"]) if s.facts["kind"] == "length" else vertex_angle(it["points"])
            for it in s.facts["items"]
        ]
        assert values == pytest.approx([it["value"] for it in s.facts["items"]], abs=1e-3)
        assert s.answer == ("A" if values[0] > values[1] else "B")
        gap = abs(values[0] - values[1]) / min(values)
        assert 0.015 <= gap <= 0.1  # a few percent, as the task promises


def test_chart_calc_answer_is_its_expression() -> None:
    for s in generate("chart_calc", 12, seed=2):
        assert calculate(s.facts["expression"]) == float(s.answer)
        values = {b["label"]: b["value"] for b in s.facts["bars"]}
        assert all(a in values for a in s.facts["asked"])


def test_zoom_2x2_variant_needs_the_tool_numerically() -> None:
    """The 2x2 variant (224 px, 1-px bands, crops shown at their own pixels): the same claim for
    the processors' bicubic resizers."""
    task = ZoomTask(**ZOOM_2X2)
    tool = build_tools(2)["zoom_in"]
    for seed in range(4):
        layout = task.layout(random.Random(seed))
        images = [task.render(layout, [p])[0] for p in PATTERNS]
        views = [np.asarray(im.resize((112, 112), Image.Resampling.BICUBIC), dtype=np.int16) for im in images]
        region = {"region": layout[0]["region"]}
        outs = [run_tool(tool, region, ToolContext([im], grid=2)) for im in images]
        crops = [np.asarray(out.image, dtype=np.int16) for out in outs]
        for i in range(3):
            for j in range(i + 1, 3):
                assert np.abs(views[i] - views[j]).max() <= 3
                assert np.abs(crops[i] - crops[j]).max() >= 200


def test_zoom_needs_the_tool_numerically() -> None:
    """At the tiny model's 112-px view the three patterns of one scene are the same image up to
    3 grey levels (PIL's resamplers and torch's antialiased bicubic, what Qwen's slow and fast
    processors use), so no reader of that view beats chance; the zoomed crop of the right region
    tells them apart by hundreds of levels over many pixels."""
    import torch
    import torch.nn.functional as F

    task = ZoomTask()
    tool = build_tools(3)["zoom_in"]
    resamplers = (
        Image.Resampling.BICUBIC,
        Image.Resampling.BILINEAR,
        Image.Resampling.BOX,
        Image.Resampling.LANCZOS,
    )
    for seed in range(6):
        layout = task.layout(random.Random(seed))
        views, crops = [], []
        for pattern in PATTERNS:
            image, _ = task.render(layout, [pattern])
            view = {m.name: np.asarray(image.resize((112, 112), m), dtype=np.float64) for m in resamplers}
            pixels = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1)[
                None
            ]  # [1, 3, H, W]
            small = F.interpolate(pixels, size=(112, 112), mode="bicubic", antialias=True)  # [1, 3, 112, 112]
            view["torch_bicubic"] = small[0].permute(1, 2, 0).numpy().astype(np.float64)
            views.append(view)
            out = run_tool(tool, {"region": layout[0]["region"]}, ToolContext([image]))
            crops.append(np.asarray(out.image, dtype=np.int16))
        for i in range(3):
            for j in range(i + 1, 3):
                for m in views[i]:
                    assert np.abs(views[i][m] - views[j][m]).max() <= 3.0, (seed, PATTERNS[i], PATTERNS[j], m)
                diff = np.abs(crops[i] - crops[j]).max(axis=2)
                assert diff.max() >= 200 and (diff >= 64).sum() >= 100, (seed, PATTERNS[i], PATTERNS[j])
        # a statistic a reader could use on the tile: row variance minus column variance (stripes'
        # orientation) is the same for all three patterns in the view, and far apart in the crop
        x, y = layout[0]["xy"]
        tile = (slice(y // 4, (y + task.tile) // 4), slice(x // 4, (x + task.tile) // 4))
        stats = [v["BICUBIC"][tile].mean(axis=2) for v in views]
        orient = [s.var(axis=0).mean() - s.var(axis=1).mean() for s in stats]
        cell = region_box(layout[0]["region"], (task.size, task.size), 3)
        k = 112 / (cell[2] - cell[0])  # crop pixels per image pixel
        inner = (
            slice(round((y - cell[1]) * k), round((y + task.tile - cell[1]) * k)),
            slice(round((x - cell[0]) * k), round((x + task.tile - cell[0]) * k)),
        )
        zoomed = [c[inner].astype(float).mean(axis=2) for c in crops]
        orient_zoomed = [z.var(axis=0).mean() - z.var(axis=1).mean() for z in zoomed]
        spread, spread_zoomed = max(orient) - min(orient), max(orient_zoomed) - min(orient_zoomed)
        assert spread < 5.0 and spread_zoomed > 100 * spread


# ---- SFT traces ---------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["zoom", "measure", "chart_calc", "count"])
def test_sft_trace_replays_through_the_env(task: str) -> None:
    for s in generate(task, 3, seed=5):
        trace = sft_trace(s, "tools")
        assert trace[0]["role"] == "user" and trace[-1] == {
            "role": "assistant",
            "text": f"<answer>{s.answer}</answer>",
        }
        assert [t["role"] for t in trace] == ["user", "assistant"] * (len(trace) // 2)
        env = make_env("tools")()
        first = env.reset(s)
        assert first.text == trace[0]["text"]
        for k in range(1, len(trace), 2):
            r = env.step(trace[k]["text"])
            if k + 1 < len(trace):
                obs = trace[k + 1]
                assert r.observation.text == obs["text"]
                assert len(r.observation.images) == len(obs["images"])
                for a, b in zip(r.observation.images, obs["images"], strict=True):
                    assert a.tobytes() == b.tobytes()
            else:
                assert r.done and r.info["kind"] == "answer"
        reward = env.reward()
        assert reward.parts["accuracy"] == 1.0 and reward.parts["format"] > 0
        n_calls = (len(trace) - 2) // 2
        assert n_calls == {"zoom": 1, "measure": 2, "chart_calc": 1, "count": 0}[task]
        if n_calls:
            assert reward.parts["tool_bonus"] > 0


def test_sft_trace_zoom_shows_the_pattern() -> None:
    s = generate("zoom", 1, seed=9)[0]
    trace = sft_trace(s, "tools")
    assert trace[1]["text"] == tool_call_text(ToolCall("zoom_in", {"region": s.facts["region"]}))
    crop = np.asarray(trace[2]["images"][0].convert("L"), dtype=float)
    assert crop.max() - crop.min() > 200  # black and white bands, not the grey of the full view


def test_sft_trace_without_tools_just_answers() -> None:
    s = zoom_sample()
    trace = sft_trace(s, "no_tools")
    assert [t["role"] for t in trace] == ["user", "assistant"] and trace[1][
        "text"
    ] == f"<answer>{s.answer}</answer>"


def test_get_task_knob_errors() -> None:
    with pytest.raises(ValueError, match="knob 'grid'"):
        get_task("zoom", grid=5)
    with pytest.raises(ValueError, match="too thin to read"):
        get_task("zoom", grid=2)  # 448 px: the 2x2 crop is only 2x enlarged, 2-px bands blur away
    with pytest.raises(ValueError, match="whole multiple of 2\\*stripe"):
        get_task("zoom", stripe=3, tile=42)
    with pytest.raises(ValueError, match="knob 'kinds'"):
        get_task("measure", kinds=("area",))
    with pytest.raises(ValueError, match="knob 'kinds'"):
        get_task("chart_calc", kinds=("divide",))


ZOOM_2X2 = {"size": 224, "grid": 2, "stripe": 1, "tile": 24, "frame": 3, "ramp": 8}


def test_grid_follows_the_sample_unless_set() -> None:
    """A 2x2 zoom sample makes the env offer the 2x2 regions (and the trace uses one of them)."""
    s = generate("zoom", 1, seed=2, **ZOOM_2X2)[0]
    env = ToolEnv()
    env.reset(s)
    assert f'"enum": {json.dumps(list(REGIONS[2]))}' in env.system_prompt()
    r = env.step(call("zoom_in", {"region": s.facts["region"]}))
    assert r.info["valid"] and r.observation.images[0].size == (112, 112)
    assert "not allowed" in env.step(call("zoom_in", {"region": "center"})).info["error"]
    ideal = tool_call_text(ToolCall("zoom_in", {"region": s.facts["region"]}))
    assert sft_trace(s, "tools")[1]["text"] == ideal
    forced = ToolEnv(grid=3)
    forced.reset(s)
    assert forced.step(call("zoom_in", {"region": "center"})).info["valid"]
