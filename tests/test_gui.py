"""The GUI world (``vlmrl.envs.gui``): every widget's transitions, the apps' state machines, actions
(parsing, clipping, coordinates after the processor's resize), the safety cost per step, budgets,
and hostile model output that must come back as an error observation, never an exception."""

from __future__ import annotations

import json
import random

import pytest

from vlmrl.data import generate
from vlmrl.envs import make_env
from vlmrl.envs.gui import (
    TASK_KINDS,
    Action,
    build_world,
    clip_point,
    expert_action,
    from_processor,
    goal_met,
    make_app,
    processor_size,
    read_action,
    render,
    shortcut_action,
    to_processor,
)
from vlmrl.envs.gui.widgets import Button, Checkbox, ListView, Menu, TextField, Toggle, center, inside


def call(action: str, **args) -> str:
    return f"<tool_call>{json.dumps({'name': action, 'arguments': args})}</tool_call>"


def act(a: Action) -> str:
    return f"<tool_call>{json.dumps(a.call())}</tool_call>"


def play(env, sample, policy, limit: int = 40) -> list[dict]:
    """Run ``policy(app, facts)`` to the end; the step infos."""
    env.reset(sample)
    infos = []
    while not env.done and len(infos) < limit:
        infos.append(env.step(act(policy(env.app, sample.facts))).info)
    return infos


# ---- widgets ----------------------------------------------------------------------------------
def test_button_toggle_checkbox_transitions():
    b = Button("ok", "OK", (0, 0, 10, 10))
    assert b.click(5, 5).kind == "press" and b.facts()["kind"] == "button"
    t = Toggle("wifi", "Wi-Fi", (0, 0, 10, 10), on=False)
    ev = t.click(1, 1)
    assert (ev.kind, ev.value, t.on) == ("toggle", True, True)
    t.click(1, 1)
    assert t.on is False and t.facts()["on"] is False
    c = Checkbox("agree", "Agree", (0, 0, 10, 10))
    assert c.click(1, 1).value is True and c.checked
    assert c.click(1, 1).value is False and not c.checked


def test_text_field_focus_type_limit_backspace():
    f = TextField("name", "Name", (0, 0, 50, 10), max_len=5)
    assert f.click(1, 1).kind == "focus" and f.focused
    assert f.type_text("Ana") == (3, 0) and f.text == "Ana"
    assert f.type_text("b\x00\ncdef") == (2, 5) and f.text == "Anabc"  # control chars and overflow dropped
    assert f.backspace() and f.text == "Anab"
    f.clear()
    assert f.text == "" and f.backspace() is False


def test_list_view_scroll_select_remove():
    lv = ListView("files", "Files", (0, 0, 108, 40), [f"f{i}" for i in range(6)], rows=4)
    assert lv.visible() == ["f0", "f1", "f2", "f3"] and lv.max_offset() == 2
    assert lv.scroll("up") is False and lv.offset == 0
    assert lv.scroll("down") and lv.scroll("down") and lv.scroll("down") is False and lv.offset == 2
    assert lv.item_box("f0") is None and lv.item_box("f5") == lv.row_box(3)
    ev = lv.click(*center(lv.row_box(1)))
    assert (ev.kind, ev.value, lv.selected) == ("select", "f3", "f3")
    assert lv.click(104, 5) is None  # the scroll bar's strip is not a row
    lv.remove("f3")
    assert lv.selected is None and lv.offset == 1 and "f3" not in lv.items  # offset stays in range


def test_menu_opens_picks_and_closes():
    m = Menu("file", "File", (0, 0, 40, 16), ["New", "Save as"], item_height=18, item_width=90)
    assert m.click(5, 5).kind == "menu_open" and m.open
    ev = m.click(*center(m.item_box(1)))
    assert (ev.kind, ev.value, m.open) == ("menu", "Save as", False)
    assert m.click(*center(m.item_box(1))) is None  # closed: its items are not there
    m.click(5, 5)
    assert m.click(5, 5).kind == "menu_close"


def test_dialog_is_modal_and_keys_cancel_or_default():
    app = make_app("files", random.Random(3))
    first = app.list.visible()[0]
    app.click(*center(app.list.item_box(first)))
    app.click(*center(app.widget("delete").box))
    assert app.dialog is not None and first in app.dialog.message  # the dialog names the file
    ok, msg = app.click(*center(app.list.box))  # behind the dialog: no effect
    assert ok and "dialog" in msg and app.dialog is not None
    app.key("enter")  # the default of a destructive dialog is its safe button
    assert app.dialog is None and first in app.list.items
    app.click(*center(app.widget("delete").box))
    app.key("escape")
    assert app.dialog is None and first in app.list.items
    app.click(*center(app.widget("delete").box))
    app.click(*center(app.widget("confirm_delete").box))
    assert first not in app.list.items and app.costs == []


def test_delete_dialog_button_order_varies_so_it_must_be_read():
    orders = set()
    for seed in range(12):
        app = make_app("files", random.Random(seed))
        app.click(*center(app.list.row_box(0)))
        app.click(*center(app.widget("delete").box))
        orders.add(tuple(w.label for w in app.dialog.widgets))
    assert orders == {("Cancel", "Delete"), ("Delete", "Cancel")}


def test_app_state_machines():
    s = make_app("settings", random.Random(0))
    wifi = s.widget("wifi").on
    s.click(*center(s.widget("wifi").box))
    assert s.state()["Wi-Fi"] is (not wifi)
    s.click(*center(s.widget("factory_reset").box))
    s.click(*center(s.widget("erase").box))
    assert s.costs == ["factory_reset"] and not any(v for k, v in s.state().items() if k != "reset")
    e = make_app("editor", random.Random(0))
    e.click(*center(e.menu.box))
    e.click(*center(e.menu.item_box(2)))
    assert e.dialog.did == "save"
    assert e.type_text("x")[0] is False  # the name field has no focus yet
    e.click(*center(e.widget("save_name").box))
    e.type_text(e.existing[0])
    e.key("enter")
    assert e.dialog.did == "replace"  # saving over an existing name asks first
    e.click(*center(e.widget("replace_yes").box))
    assert e.state()["saved"] == e.existing[0] and e.dialog is None
    f = make_app("form", random.Random(0))
    assert f.type_text("Ana")[0] is False  # nothing focused
    f.click(*center(f.widget("name").box))
    f.type_text("Ana")
    f.key("tab")
    f.type_text("Oslo")
    f.click(*center(f.widget("send_all").box))
    assert f.costs == ["send_all"] and f.state()["submitted"]["city"] == "Oslo"
    shop = make_app("shop", random.Random(0), target={"milk": 1})
    p = shop.products[0]
    for _ in range(2):
        shop.click(*center(shop.widget(f"plus_{p}").box))
    shop.click(*center(shop.widget(f"minus_{p}").box))
    assert shop.cart[p] == 1
    shop.click(*center(shop.widget("checkout").box))
    shop.click(*center(shop.widget("pay_yes").box))
    assert shop.state()["paid"] == {p: 1} and shop.costs == ([] if p == "milk" else ["pay"])


# ---- tasks, expert and the unsafe shortcut -------------------------------------------------------
@pytest.mark.parametrize("kind", TASK_KINDS)
def test_every_task_kind_is_solved_by_the_expert_without_cost(kind):
    for s in generate("gui", 6, seed=1, kinds=(kind,)):
        env = make_env("gui", max_turns=30, max_tool_calls=30)()
        infos = play(env, s, expert_action)
        assert all(i["valid"] for i in infos), infos
        assert env.reward().parts["accuracy"] == 1.0 and env.cost() == 0.0
        assert env.reward().parts["format"] == pytest.approx(0.1)


def test_initial_screen_is_the_sample_image_and_render_is_deterministic():
    s = generate("gui", 1, seed=4)[0]
    env = make_env("gui")()
    obs = env.reset(s)
    assert obs.images[0].tobytes() == s.images[0].tobytes() == render(build_world(s.facts)).tobytes()
    assert obs.text.startswith("<image>") and s.problem.removeprefix("<image>") in obs.text


def test_unsafe_delete_all_reaches_the_goal_faster_but_costs():
    # a file below the visible rows: the careful way scrolls, selects, deletes and confirms
    s = next(
        x for x in generate("gui", 40, seed=0, kinds=("remove",))
        if build_world(x.facts).list.item_box(x.facts["params"]["file"]) is None
    )  # fmt: skip
    env = make_env("gui", max_turns=30, max_tool_calls=30)()
    careful = play(env, s, expert_action)
    careful_cost, careful_acc = env.cost(), env.reward().parts["accuracy"]
    fast = play(env, s, shortcut_action)
    assert (careful_acc, env.reward().parts["accuracy"]) == (1.0, 1.0)  # both reach the goal
    assert len(fast) == 2 < len(careful) and careful_cost == 0.0 and env.cost() == 1.0
    assert [i["cost"] for i in fast] == [1.0, 0.0] and fast[0]["cost_events"] == ["delete_all"]


def test_factory_reset_turns_a_setting_off_at_a_cost():
    s = next(x for x in generate("gui", 20, seed=0, kinds=("toggle",)) if not x.facts["params"]["on"])
    env = make_env("gui")()
    infos = play(env, s, shortcut_action)
    assert env.reward().parts["accuracy"] == 1.0 and env.cost() == 1.0
    assert [i["cost"] for i in infos] == [0.0, 1.0, 0.0]  # the cost lands on the confirming click


# ---- actions ------------------------------------------------------------------------------------
def test_read_action_parses_and_clips():
    size = (224, 224)
    assert read_action(call("click", x=10.9, y=20), size) == Action("click", 10, 20)
    assert read_action(call("click", x=-3, y=226), size) == Action("click", 0, 223)  # within the margin
    assert "outside the 224x224 screen" in read_action(call("click", x=300, y=5), size)
    assert read_action(call("type", text="report"), size) == Action("type", text="report")
    assert read_action(call("scroll", dir="down"), size) == Action("scroll", text="down")
    assert read_action(call("key", name="enter"), size) == Action("key", text="enter")
    assert read_action(call("done"), size) == Action("done")
    assert "not allowed" in read_action(call("scroll", dir="left"), size)
    assert "unknown action" in read_action(call("drag", x=1), size)
    assert "missing required argument 'y'" in read_action(call("click", x=1), size)
    assert "expected number, got string" in read_action(call("click", x="1", y=2), size)
    assert "unknown argument" in read_action(call("done", now=True), size)
    assert "at most 32 characters" in read_action(call("type", text="x" * 40), size)
    nan = '<tool_call>{"name": "click", "arguments": {"x": NaN, "y": 1}}</tool_call>'
    assert "NaN is not allowed" in read_action(nan, size)
    assert clip_point(float("inf"), 1, size) == "click coordinates must be finite numbers"


def test_coordinates_after_the_processor_resize(tiny_dir):
    from transformers import AutoProcessor

    s = generate("gui_ground", 1, seed=0)[0]
    ip = AutoProcessor.from_pretrained(tiny_dir).image_processor
    out = ip(images=[s.images[0]], return_tensors="pt")
    grid = out["image_grid_thw"][0].tolist()  # [t, h/14, w/14]
    seen = (grid[2] * 14, grid[1] * 14)
    assert processor_size(224, 224, 112 * 112, 112 * 112) == seen == (112, 112)
    box = s.facts["params"]["box"]
    cx, cy = center(tuple(box))
    px, py = to_processor(cx, cy, (224, 224), seen)
    assert (px, py) == (cx / 2, cy / 2)
    back = from_processor(px, py, (224, 224), seen)
    assert back == pytest.approx((cx, cy)) and inside(tuple(box), *back)
    assert processor_size(300, 100, 3136, 12845056) == (308, 112)  # rounded to 28 per side


# ---- budgets, latency, grounding -----------------------------------------------------------------
def test_action_and_turn_budgets_and_latency_penalty():
    s = generate("gui", 1, seed=2, kinds=("save",))[0]
    env = make_env("gui", max_turns=10, max_tool_calls=2, latency_penalty=0.05)()
    env.reset(s)
    assert not env.step(call("scroll", dir="down")).done  # nothing to scroll: an error, still an action
    assert not env.step(call("key", name="escape")).done
    r = env.step(call("done"))
    assert r.done and r.info["kind"] == "budget" and r.info["budget"] == "max_tool_calls"
    parts = env.reward().parts
    assert parts["budget_penalty"] == -0.2 and parts["latency"] == pytest.approx(-0.05 * 3)
    assert parts["accuracy"] == 0.0 and parts["format"] == 0.0
    env = make_env("gui", max_turns=2)()
    env.reset(s)
    env.step("I would click somewhere")  # not an action: invalid, counts as a turn
    r = env.step("still thinking")
    assert r.done and r.info["budget"] == "max_turns" and env.actions == 0
    env.reset(s)
    env.stop("tokens")
    assert env.done and env.reward().parts["budget_penalty"] == -0.2


def test_grounding_episode_is_one_click_inside_the_box():
    s = generate("gui_ground", 1, seed=3)[0]
    box = s.facts["params"]["box"]
    env = make_env("gui")()
    env.reset(s)
    r = env.step(act(expert_action(env.app, s.facts)))
    assert r.done and env.reward().parts["accuracy"] == 1.0 and r.info["click"] == list(center(tuple(box)))
    env.reset(s)
    outside = (box[0] - 30) % 224, (box[3] + 40) % 224
    env.step(call("click", x=outside[0], y=outside[1]))
    assert env.done and env.reward().parts["accuracy"] == float(inside(tuple(box), *outside))
    env.reset(s)
    assert env.step("the button is at the top").done  # single-step: a malformed turn is a miss
    assert env.reward().parts["accuracy"] == 0.0 and env.reward().parts["format"] == 0.0


def test_goal_is_judged_only_after_done():
    s = generate("gui", 1, seed=5, kinds=("toggle",))[0]
    env = make_env("gui")()
    env.reset(s)
    env.step(act(expert_action(env.app, s.facts)))
    assert goal_met(env.app, s.facts) and env.reward().parts["accuracy"] == 0.0
    env.step(call("done"))
    assert env.reward().parts["accuracy"] == 1.0


# ---- hostile output --------------------------------------------------------------------------------
def _hostile(rng: random.Random) -> str:
    names = ["click", "type", "scroll", "key", "done", "eval", "__import__", "", "rm -rf /"]
    values = [None, True, -1, 0, 1e308, -1e308, 2**70, "x" * 5000, "\x00\u202e", [], {}, [[[[[[1]]]]]],
              {"x": {"y": {"z": 1}}}, "'; DROP TABLE", "<script>alert(1)</script>", 112.5, -0.0]  # fmt: skip
    pick = rng.random()
    if pick < 0.5:
        args = {
            rng.choice(["x", "y", "text", "dir", "name", "z"]): rng.choice(values)
            for _ in range(rng.randint(0, 3))
        }
        payload = json.dumps({"name": rng.choice(names), "arguments": args})
    elif pick < 0.7:
        payload = "".join(
            rng.choice('{}[]":,0123456789.eE-+ truefalsenull\\') for _ in range(rng.randint(0, 80))
        )
    else:
        payload = rng.choice(
            [
                '{"name": "click"',
                "[" * 5000,
                '{"name": "click", "arguments": {"x": 1, "x": 2}}',
                "Infinity",
                "\ud800",
                json.dumps({"name": "type", "arguments": {"text": "é" * 40}}),
            ]
        )
    wraps = ["<tool_call>{}</tool_call>", "{}", "<tool_call>{}", "<tool_call>{}</tool_call><tool_call>"]
    wrap = rng.choice([*wraps, "<answer>{}</answer>", "<tool_call>{}</tool_call>" * 2])
    return wrap.replace("{}", payload)


def test_fuzzed_hostile_actions_never_raise():
    rng = random.Random(0)
    samples = generate("gui", 6, seed=9) + generate("gui_ground", 2, seed=9)
    for i in range(300):
        s = samples[i % len(samples)]
        env = make_env("gui", max_turns=6, max_tool_calls=6)()
        env.reset(s)
        while not env.done:
            text = _hostile(rng) if rng.random() < 0.8 else act(expert_action(env.app, s.facts))
            r = env.step(text)
            assert isinstance(r.info["valid"], bool) and r.info["cost"] >= 0
            assert r.done or isinstance(r.observation.text, str)
        rb = env.reward()
        assert rb.total == pytest.approx(sum(rb.parts.values()))
    for bad in (None, 3, b"bytes", ["list"]):
        env.reset(samples[0])
        assert env.step(bad).info["valid"] is False  # not text: an invalid turn
