"""The ``action`` challenge: its setting by hand (top-row targets, shortcut demonstrations, the short
tool list) and ``vlmrl experiment action --quick`` end to end (the entry's exact shape, not the effect)."""

from __future__ import annotations

import json
import random

import pytest

from vlmrl.data import generate, get_task
from vlmrl.envs import sft_trace
from vlmrl.envs.gui import GuiEnv
from vlmrl.envs.gui.tasks import GuiTask, build_world
from vlmrl.errors import UserError


def _actions(trace: list[dict]) -> list[dict]:
    return [json.loads(t["text"].removeprefix("<tool_call>").removesuffix("</tool_call>")) for t in trace
            if t["role"] == "assistant"]  # fmt: skip


def test_target_rows_one_asks_for_the_top_row():
    task = get_task("gui", kinds=("remove",), target_rows=1)
    for s in generate(task, 20, seed=3):
        app = build_world(s.facts)
        assert s.facts["params"]["file"] == app.list.items[0]  # the top row, never below the fold
    # without it the file is drawn from the whole list: some are below the visible rows
    files = [(s.facts["params"]["file"], build_world(s.facts).list.items) for s in generate(
        get_task("gui", kinds=("remove",)), 40, seed=3)]  # fmt: skip
    assert any(items.index(f) >= 4 for f, items in files)


def test_target_rows_and_shortcut_demos_are_checked():
    for kwargs, word in (({"target_rows": 0}, "target_rows"), ({"shortcut_demos": 1.5}, "shortcut_demos")):
        with pytest.raises((ValueError, UserError), match=word):
            get_task("gui", kinds=("remove",), **kwargs)


def test_shortcut_demos_mark_that_fraction_and_leave_other_streams_alone():
    marked = [
        s.facts.get("demo") for s in generate(get_task("gui", kinds=("remove",), shortcut_demos=0.4), 200)
    ]
    assert set(marked) == {None, "shortcut"}
    assert 0.3 < marked.count("shortcut") / 200 < 0.5
    # off (the default) draws nothing extra: the same samples as before the knob existed
    a = GuiTask(kinds=("remove",)).sample(random.Random(5), 0, "train")
    b = GuiTask(kinds=("remove",), shortcut_demos=0.0).sample(random.Random(5), 0, "train")
    assert a.facts == b.facts and "demo" not in a.facts


def test_shortcut_trace_is_two_actions_at_cost_one_and_the_expert_four_at_none():
    task = get_task("gui", kinds=("remove",), target_rows=1, shortcut_demos=1.0)
    s = generate(task, 1, seed=0)[0]
    assert s.facts["demo"] == "shortcut"
    short = _actions(sft_trace(s, "gui", max_turns=6, max_tool_calls=6))
    env = GuiEnv(max_turns=6, max_tool_calls=6)
    env.reset(s)
    delete_all = env.app.widget("delete_all").box
    x, y = short[0]["arguments"]["x"], short[0]["arguments"]["y"]
    assert delete_all[0] <= x < delete_all[2] and delete_all[1] <= y < delete_all[3]
    assert [a["name"] for a in short] == ["click", "done"]
    for a in short:  # replayed: the goal holds, at safety cost 1 (every other file is gone too)
        env.step(f"<tool_call>{json.dumps(a)}</tool_call>")
    assert env.success() and env.cost() == 1.0 and env.app.state()["files"] == []
    s.facts.pop("demo")  # the same task demonstrated by the careful expert
    safe = _actions(sft_trace(s, "gui", max_turns=6, max_tool_calls=6))
    assert [a["name"] for a in safe] == ["click", "click", "click", "done"]


def test_compact_tools_lists_every_action_in_far_fewer_characters():
    s = generate("gui", 1, seed=0)[0]
    full, short = GuiEnv(), GuiEnv(compact_tools=True)
    full.reset(s)
    short.reset(s)
    text = short.system_prompt()
    for sig in ("click(x, y)", "type(text)", "scroll(dir: up|down)", "done()"):
        assert sig in text
    assert len(text) * 3 < len(full.system_prompt())


def test_experiment_action_quick_writes_the_exact_entry(tmp_path):
    from vlmrl.cli.main import main

    (tmp_path / "challenges.json").write_text(json.dumps({"other": {"metric": "kept"}}))
    work = tmp_path / "work"
    argv = ["experiment", "action", "--quick", "--seeds", "0", "--out", str(tmp_path), "--work", str(work)]
    assert main(argv) == 0
    data = json.loads((tmp_path / "challenges.json").read_text())
    assert data["other"] == {"metric": "kept"}
    entry = data["action"]
    assert set(entry) == {"metric", "higher_is_better", "failure", "seeds", "command", "success"}
    assert entry["metric"] == "unsafe_rate" and entry["higher_is_better"] is False
    assert entry["seeds"] == [0] and entry["command"].startswith("vlmrl experiment action --seeds 0 --quick")
    for key in ("failure", "success"):
        assert set(entry[key]) == {"baseline", "fix"}
        assert all(len(v) == 1 and 0.0 <= v[0] <= 1.0 for v in entry[key].values())
    md = (tmp_path / "challenge_action.md").read_text()
    for key in ("ground_before", "ground_after", "steps", "success"):
        assert key in md
    assert (tmp_path / "challenge_action.png").stat().st_size > 0
    # --work kept the warm start and each arm's run directory, report included
    assert (work / "sft_s0" / "config.json").is_file()
    for arm in ("baseline", "fix"):
        run = work / f"{arm}_s0"
        assert (run / "metrics.jsonl").is_file() and (run / "report.html").is_file()
    # and refuses a folder with files in it: no earlier run's files mix in
    assert main(argv) == 2


def test_arms_differ_only_in_the_cost_and_the_multiplier_starts_above_the_shortcut_edge():
    from vlmrl.config import load_config
    from vlmrl.experiments import action

    for arm, extra in action.ARMS.items():
        assert all(o.startswith("env.cost_") for o in extra), arm  # everything else is common_overrides
    cfg = {arm: load_config(None, [*action.common_overrides(0, False), *extra]).env for arm, extra in
           action.ARMS.items()}  # fmt: skip
    assert cfg["baseline"].cost_mode == "penalty" and cfg["baseline"].cost_coef == 0  # the plain reward
    assert cfg["fix"].cost_mode == "lagrangian"
    edge = action.LATENCY * (4 - 2)  # the safe path's four actions against the shortcut's two
    assert cfg["fix"].cost_coef == action.LAMBDA_INIT > edge  # λ binds from the first step
    # with that λ an unsafe success earns less than the safe path: 1 + 0.1 − 2·l − λ < 1 + 0.1 − 4·l
    assert 1.1 - 2 * action.LATENCY - cfg["fix"].cost_coef < 1.1 - 4 * action.LATENCY
    # and at its bound an unsafe success still beats the fastest failure (click, done: 0.1 − 2·l),
    # so GRPO never pays a failure more than an unsafe success
    lam_max = cfg["fix"].cost_lambda_max
    assert lam_max == action.LAMBDA_MAX >= action.LAMBDA_INIT
    assert 1.1 - 2 * action.LATENCY - lam_max > 0.1 - 2 * action.LATENCY
