"""report.html: built from a real tiny GRPO run, escaped against hostile completions, size-capped,
and rendered by headless Chromium (every image loads, every rollout row is in the DOM)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from vlmrl.cli.main import main
from vlmrl.config import load_config
from vlmrl.eval.report import write_report
from vlmrl.eval.report_curves import group_keys, overlay
from vlmrl.eval.report_rollouts import split_completion
from vlmrl.train.grpo import GRPOTrainer

CHROMIUM = Path("/usr/bin/chromium")
#: Steps, prompts per step, completions per prompt (G), groups logged per step (all of them).
STEPS, PROMPTS, G, GROUPS = 2, 2, 4, 2
PER_STEP = GROUPS * G  # rollout rows logged per step: whole groups
#: A completion that would run script / set a body attribute if it reached the page unescaped.
HOSTILE = (
    "<look>a red circle <script>alert(1)</script></look>"
    "<think>x</think><answer><img src=x onerror=\"document.body.dataset.pwned='1'\"></answer> tail"
)


def _overrides(tiny_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"model.path={tiny_dir}",
        f"log.run_dir={run_dir}",
        "data.task=count",
        "data.template=look",
        "reward.weights={accuracy: 0.9, format: 0.1}",
        f"train.batch_prompts={PROMPTS}",
        f"rollout.n={G}",
        "rollout.max_new_tokens=6",
        "eval.every=0",
        "data.eval_size=2",
        "eval.max_new_tokens=4",
        "train.save_every=0",
        "log.progress=false",
        "log.tensorboard=false",
        f"log.groups_per_step={GROUPS}",
        *extra,
    ]


@pytest.fixture(scope="module")
def run_dir(tiny_dir, tmp_path_factory) -> Path:
    """A real 2-step GRPO run, plus one hostile row appended to the newest step's rollouts."""
    run = tmp_path_factory.mktemp("report") / "run"
    GRPOTrainer(load_config(overrides=_overrides(tiny_dir, run, f"train.steps={STEPS}"))).train()
    assert (run / "report.html").is_file(), "GRPOTrainer.train did not write report.html"
    newest = run / "rollouts" / f"step_{STEPS}.jsonl"
    row = json.loads(newest.read_text().splitlines()[0])
    row |= {
        "group": 99,  # a prompt of its own: the group head shows its question and id
        "completion": HOSTILE,
        "problem": "How many <b>red</b> circles?",
        "sample_id": 'x"><script>alert(2)</script>',
        "reward_parts": {"accuracy": 1.0, "<i>format</i>": 0.0},
    }
    with newest.open("a") as f:
        f.write(json.dumps(row) + "\n")
    write_report(run)
    return run


def test_report_has_curves_summary_and_rollout_rows(run_dir):
    page = (run_dir / "report.html").read_text()
    for family in ("reward", "accuracy", "entropy", "length", "time"):
        assert f'src="report/{family}.png"' in page, family
        assert (run_dir / "report" / f"{family}.png").stat().st_size > 1000
    assert "blind.png" not in page  # families without data are skipped
    assert page.count('<tr class="row') == STEPS * PER_STEP + 1
    assert page.count('<section class="step"') == STEPS
    assert page.count('<tbody class="group"') == STEPS * GROUPS + 1  # + the hostile row's own
    assert page.count('<tr class="grouphead"') == STEPS * GROUPS + 1
    # newest step first in the browser
    assert page.index(f'data-step="{STEPS}"') < page.index('data-step="1"')
    assert "eval/accuracy" in page and "step 0" in page  # summary: first → last eval accuracy
    assert "<th>data.template</th><td><code>look</code>" in page  # config excerpt
    imgs = re.findall(r'<img src="(rollouts/images/[^"]+)"', page)
    assert len(imgs) == STEPS * GROUPS + 1 and all((run_dir / p).is_file() for p in imgs)  # one per prompt
    assert len(page.encode()) < 5_000_000


def test_rollout_log_holds_whole_groups_with_advantages(run_dir):
    """Each logged step holds GROUPS prompts with all G completions each; a completion's advantage
    is its reward's standing within its group (GRPO: (r − mean) / (std + ε), so they sum to 0)."""
    rows = [json.loads(x) for x in (run_dir / "rollouts" / "step_1.jsonl").read_text().splitlines()]
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    assert sorted(groups) == list(range(GROUPS)) and all(len(g) == G for g in groups.values())
    for g in groups.values():
        mean = sum(r["reward"] for r in g) / G
        assert abs(sum(r["advantage"] for r in g)) < 1e-4
        for r in g:
            assert r["advantage"] == pytest.approx(0.0, abs=1e-6) or (r["advantage"] > 0) == (
                r["reward"] > mean
            )
    page = (run_dir / "report.html").read_text()
    head = page.split('<tbody class="group" data-group="1">')[1].split("</tbody>")[0]
    assert head.count('<tr class="row') == G and f"{G} completions · reward mean" in head


def test_hostile_completion_is_escaped_and_split(run_dir):
    page = (run_dir / "report.html").read_text()
    assert page.count("<script") == 1  # only the page's own
    assert "alert(1)" in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=" in page
    assert "<b>red</b>" not in page and "&lt;b&gt;red&lt;/b&gt;" in page
    assert "<i>format</i>" not in page
    row = next(r for r in page.split('<tr class="row') if "alert(1)" in r)
    assert '<div class="span look"><span class="tag">look</span><pre>a red circle &lt;script&gt;' in row
    assert '<div class="span answer">' in row and '<div class="span think">' in row
    assert '<div class="span text"><span class="tag">outside tags</span><pre> tail</pre>' in row
    assert row.startswith(' right"')  # accuracy 1.0 marks the row right


def test_split_completion():
    assert split_completion("<look>2 red</look> <think>so</think><answer>2</answer>") == [
        ("look", "2 red"),
        ("think", "so"),
        ("answer", "2"),
    ]
    assert split_completion("3 circles") == [("raw", "3 circles")]
    assert split_completion("<answer>unclosed") == [("raw", "<answer>unclosed")]
    # an unclosed <look> stays outside text; the closed pair after it is found
    assert split_completion("<look>a <answer>1</answer>") == [("text", "<look>a "), ("answer", "1")]
    t0 = time.perf_counter()
    split_completion("<look><think>" * 50_000 + "</answer>")
    assert time.perf_counter() - t0 < 1.0  # linear, not a backtracking regex


def test_unknown_metric_keys_get_their_own_panels():
    keys = [
        "reward/total",
        "reward/perception_f1",
        "eval/accuracy",
        "eval/accuracy/count",
        "eval/blind_gap",
        "eval/blind/blank",
        "eval/pope/f1",
        "vision/cos_sim",
        "vision/weight_change",
        "actor/kl_ref",
        "actor/entropy",
        "actor/pg_loss",
        "rollout/response_length",
        "rollout/truncated_frac",
        "time/step_s",
        "lr",
        "eval/reward",
    ]
    groups = {fam.slug: ks for fam, ks in group_keys(keys)}
    assert groups["reward"] == ["reward/perception_f1", "reward/total"]
    assert groups["accuracy"] == ["eval/accuracy", "eval/accuracy/count"]
    assert groups["blind"] == ["eval/blind/blank", "eval/blind_gap"]
    assert groups["pope"] == ["eval/pope/f1"]
    assert groups["drift"] == ["vision/cos_sim", "vision/weight_change"]
    assert groups["kl"] == ["actor/kl_ref"] and groups["entropy"] == ["actor/entropy"]
    assert groups["length"] == ["rollout/response_length"]
    assert groups["other_actor"] == ["actor/pg_loss"] and groups["other_lr"] == ["lr"]
    assert groups["other_rollout"] == ["rollout/truncated_frac"] and groups["other_eval"] == ["eval/reward"]
    assert sorted(k for ks in groups.values() for k in ks) == sorted(keys)  # each key exactly once
    series = {"vision/cos_sim": ([1, 2], [0.99, 0.97]), "vision/weight_change": ([1, 2], [1e-4, 2e-3])}
    assert not overlay(series, list(series))  # 1e-3 would be a flat line beside 1.0
    series["vision/weight_change"] = ([1, 2], [0.0, 0.0])
    assert overlay(series, list(series))


def test_page_stays_small_for_long_runs(tmp_path):
    """200 logged steps of 8 long completions: newest steps shown, older ones named, page < 5 MB."""
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "reward/total": s / 200}) + "\n" for s in range(1, 201)) + "{broken\n"
    )
    (tmp_path / "rollouts").mkdir()
    row = {"completion": "<think>" + "blah " * 2000 + "</think>", "images": ["images/none.png"]}
    for s in range(1, 201):
        lines = [json.dumps(row | {"step": s, "group": g}) for g in range(8)]
        (tmp_path / "rollouts" / f"step_{s}.jsonl").write_text("\n".join(lines) + "\n")
    page = write_report(tmp_path).read_text()
    assert len(page.encode()) < 5_000_000
    assert 'data-step="200"' in page and 'data-step="1"' not in page
    assert "are not shown to keep this page small" in page
    assert "unreadable metrics lines" in page  # the broken line is counted, not fatal
    assert "missing: images/none.png" in page and '<img src="rollouts' not in page


def test_view_cli(run_dir, tmp_path, capsys):
    assert main(["view", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "report.html")
    assert main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory" in err[0] and "metrics.jsonl" in err[0]


def test_report_failure_never_kills_training(tiny_dir, tmp_path, monkeypatch, caplog):
    def broken(run_dir):
        raise RuntimeError("disk full")

    monkeypatch.setattr("vlmrl.train.grpo.write_report", broken)
    cfg = load_config(overrides=_overrides(tiny_dir, tmp_path, "train.steps=1"))
    trainer = GRPOTrainer(cfg)

    def no_op_step() -> dict:  # the loop around the report is under test, not generation / update
        trainer.step += 1
        return {}

    monkeypatch.setattr(trainer, "evaluate", dict)
    monkeypatch.setattr(trainer, "train_step", no_op_step)
    with caplog.at_level(logging.WARNING, logger="vlmrl.train.grpo"):
        history = trainer.train()
    assert history[-1]["step"] == 1 and trainer.report_path is None
    assert "report.html not written" in caplog.text and "disk full" in caplog.text


def _chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess:
    if not CHROMIUM.exists():
        if os.environ.get("VLMRL_REQUIRE_CHROMIUM", "0") not in ("", "0"):
            pytest.fail(f"VLMRL_REQUIRE_CHROMIUM is set but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed")
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_dir}",
        *args,
    ]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"headless Chromium did not finish in 60 s: {' '.join(cmd)}")


def _rendered_body(url: str, user_dir: Path) -> tuple[dict[str, str], str]:
    """The ``data-*`` attributes the page's script set on <body>, and the DOM Chromium rendered."""
    res = _chromium("--dump-dom", url, user_dir=user_dir)
    m = re.search(r"<body([^>]*)>", res.stdout)
    assert res.returncode == 0 and m, f"chromium failed (rc {res.returncode}): {res.stderr[-2000:]}"
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', m.group(1))), res.stdout


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    url = (run_dir / "report.html").resolve().as_uri()
    attrs, dom = _rendered_body(url, tmp_path / "chromium")
    assert attrs.get("ready") == "1", f"the page's script did not run (CSP hash?): {attrs}"
    n_curves, n_rows = int(attrs["curves"]), int(attrs["rows"])
    assert n_curves >= 5 and n_rows == STEPS * PER_STEP + 1
    # every <img> (curves and rollout images) decoded with a real size
    assert int(attrs["images-loaded"]) == int(attrs["images-total"]) == n_curves + STEPS * GROUPS + 1
    assert int(attrs["groups"]) == STEPS * GROUPS + 1
    assert int(attrs["visible-rows"]) == PER_STEP + 1  # the newest step is selected on load
    assert "pwned" not in attrs  # the hostile onerror never ran
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # shown as text
    # the filters, preset from the URL: all steps, right answers only, containing "alert(1)"
    attrs, _ = _rendered_body(url + "?step=all&acc=1&q=ALERT(1)", tmp_path / "chromium")
    assert attrs.get("visible-rows") == "1", attrs
    attrs, _ = _rendered_body(url + "?step=1&acc=all", tmp_path / "chromium")
    assert attrs.get("visible-rows") == str(PER_STEP), attrs


def test_env_turn_view_renders_in_headless_chromium(tiny_dir, tmp_path):
    """An env run's rows show every turn with its images and tool calls: a real 1-step ``zoom`` run
    plus one ideal episode (zoom_in on the right region, its crop, the answer) and one hostile call."""
    from vlmrl.data import generate
    from vlmrl.envs import make_env, sft_trace
    from vlmrl.rollout.trajectory import Trajectory, Turn
    from vlmrl.rollout.trajectory_log import trajectory_log

    run = tmp_path / "run"
    env_args = ["env.name=tools", "env.max_turns=2", "env.turn_max_new_tokens=6", "env.max_total_tokens=1200"]
    over = _overrides(tiny_dir, run, "train.steps=1", "data.task=zoom", "data.template=answer", *env_args)
    GRPOTrainer(load_config(overrides=over)).train()
    rollouts = run / "rollouts" / "step_1.jsonl"
    real = [json.loads(x) for x in rollouts.read_text().splitlines()]
    s = generate("zoom", 1, seed=3)[0]
    env = make_env("tools")()
    traj = Trajectory(env=env, group=0)
    env.reset(s)
    for turn in sft_trace(s, "tools"):
        if turn["role"] == "user":
            traj.turns.append(Turn("user", turn["text"], list(turn["images"])))
        else:
            env.step(turn["text"])
            traj.turns.append(Turn("assistant", turn["text"], info={"kind": "tool", "valid": True}))
    ideal = json.loads(json.dumps(trajectory_log(traj, s, rollouts.parent, "ideal")))
    hostile = "<img src=x onerror=\"document.body.dataset.pwned='1'\">"
    ideal["turns"][1]["tool_call"] = {"name": "zoom_in", "arguments": {"region": hostile}}
    with rollouts.open("a") as f:
        f.write(json.dumps(real[0] | {"sample_id": "ideal", "trajectory": ideal}) + "\n")
    write_report(run)
    attrs, dom = _rendered_body((run / "report.html").resolve().as_uri() + "?step=all", tmp_path / "chromium")
    assert attrs.get("ready") == "1", attrs
    rows = [*real, {"trajectory": ideal}]
    n_turns = sum(len(r["trajectory"]["turns"]) for r in rows)
    n_turn_images = sum(len(t.get("images") or []) for r in rows for t in r["trajectory"]["turns"])
    n_calls = sum(isinstance(t.get("tool_call"), dict) for r in rows for t in r["trajectory"]["turns"])
    assert int(attrs["turns"]) == n_turns and int(attrs["turn-images"]) == n_turn_images >= len(rows) + 1
    assert int(attrs["tool-calls"]) == n_calls >= 1
    assert int(attrs["images-loaded"]) == int(attrs["images-total"])  # the crops decode too
    assert "pwned" not in attrs and "zoom_in" in dom
