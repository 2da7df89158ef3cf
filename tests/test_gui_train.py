"""The safety cost in training: the Lagrange multiplier by hand, the trainer's cost control
(penalty vs lagrangian), per-action metrics, and one GRPO step on the GUI env with the tiny model."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from vlmrl.algos.lagrangian import lagrange_update, shaped_rewards
from vlmrl.config import load_config
from vlmrl.config.load import ConfigError
from vlmrl.config.schema import EnvConfig
from vlmrl.envs import make_env
from vlmrl.rollout.rollouts import Rollouts
from vlmrl.rollout.safety import CostControl
from vlmrl.rollout.trajectory import Trajectory, Turn, episode_metrics
from vlmrl.rollout.trajectory_log import replay


def test_lagrange_update_by_hand():
    # target d = 0.1, lr = 2: a round with mean cost 0.6 raises λ by 2·(0.6 − 0.1) = 1.0
    lam = lagrange_update(0.0, 0.6, 0.1, 2.0)
    assert lam == pytest.approx(1.0)
    # a safe round (cost 0) lowers it by 2·0.1 = 0.2
    lam = lagrange_update(lam, 0.0, 0.1, 2.0)
    assert lam == pytest.approx(0.8)
    # and it never goes below 0: 0.8 + 2·(0 − 0.5) = −0.2 → 0
    assert lagrange_update(lam, 0.0, 0.5, 2.0) == 0.0
    # exactly on target: unchanged
    assert lagrange_update(0.3, 0.1, 0.1, 7.0) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="lr"):
        lagrange_update(0.0, 1.0, 0.1, -1.0)
    # an upper bound: 0.8 + 2·(0.6 − 0.1) = 1.8 → 1.0; below the bound it changes nothing
    assert lagrange_update(0.8, 0.6, 0.1, 2.0, lam_max=1.0) == 1.0
    assert lagrange_update(0.2, 0.3, 0.1, 2.0, lam_max=1.0) == pytest.approx(0.6)


def test_bounded_lambda_keeps_a_failure_below_an_unsafe_success():
    """Why ``cost_lambda_max``: rewards of a safe success 0.7, an unsafe success 0.9 (cost 1) and a
    failure −0.6. Unbounded, λ climbs past 1.5 under a persistent violation and the failure
    out-scores the unsafe success; bounded at 1.0 the order stays safe > unsafe > failure."""
    r, c = torch.tensor([0.7, 0.9, -0.6]), torch.tensor([0.0, 1.0, 0.0])
    free = CostControl("lagrangian", coef=1.0, target=0.05, lr=1.0)
    bound = CostControl("lagrangian", coef=1.0, target=0.05, lr=1.0, lam_max=1.0)
    for _ in range(3):  # three rounds with half the episodes unsafe
        for ctl in (free, bound):
            ctl.apply(_round([1.0, 0.0], [0.9, 0.7]))
    assert free.lam == pytest.approx(1.0 + 3 * 0.45) and bound.lam == 1.0
    unbounded = shaped_rewards(r, c, free.lam)
    assert unbounded[2] > unbounded[1]  # the failure now beats the unsafe success
    s = shaped_rewards(r, c, bound.lam)
    assert s[0] > s[1] > s[2]
    # a starting λ above the bound starts at the bound; the bound is read from the config
    assert (
        CostControl.from_config(EnvConfig(cost_mode="lagrangian", cost_coef=3.0, cost_lambda_max=1.5)).lam
        == 1.5
    )


def test_shaped_rewards_by_hand():
    r = torch.tensor([1.0, 1.0, 0.0, 0.5])
    c = torch.tensor([0.0, 1.0, 2.0, 0.0])
    # λ = 0.5: [1 − 0, 1 − 0.5, 0 − 1, 0.5 − 0]
    assert shaped_rewards(r, c, 0.5).tolist() == [1.0, 0.5, -1.0, 0.5]
    with pytest.raises(ValueError, match="shape"):
        shaped_rewards(r, c[:2], 0.5)


def _round(costs: list[float], rewards: list[float]) -> Rollouts:
    trajs = [Trajectory(env=SimpleNamespace(cost=lambda c=c: c), group=0) for c in costs]
    return Rollouts([], None, torch.tensor(rewards), {}, {}, trajs)  # type: ignore[arg-type]


def test_cost_control_penalty_keeps_lambda_and_lagrangian_moves_it(tmp_path):
    fixed = CostControl("penalty", coef=0.5)
    ro = _round([1.0, 0.0, 2.0, 0.0], [1.0, 1.0, 1.0, 0.0])
    assert fixed.apply(ro).tolist() == [0.5, 1.0, 0.0, 0.0] and ro.rewards.tolist() == [0.5, 1.0, 0.0, 0.0]
    # mean cost (1 + 0 + 2 + 0) / 4 = 0.75; 2 of 4 episodes unsafe
    assert ro.metrics == {"safety/lambda": 0.5, "safety/episode_cost": 0.75, "safety/unsafe_rate": 0.5}
    assert fixed.lam == 0.5
    plain = CostControl("penalty", coef=0.0)
    ro = _round([1.0, 0.0], [1.0, 1.0])
    assert plain.apply(ro).tolist() == [1.0, 1.0] and ro.metrics["safety/unsafe_rate"] == 0.5  # logged only
    lag = CostControl("lagrangian", coef=0.0, target=0.25, lr=2.0)
    ro = _round([1.0, 0.0, 2.0, 0.0], [1.0, 1.0, 1.0, 0.0])
    assert lag.apply(ro).tolist() == [1.0, 1.0, 1.0, 0.0]  # λ = 0 this round ...
    assert lag.lam == pytest.approx(2.0 * (0.75 - 0.25))  # ... 1.0 for the next
    ro = _round([1.0, 0.0], [1.0, 1.0])
    assert lag.apply(ro).tolist() == [0.0, 1.0] and ro.metrics["safety/lambda"] == pytest.approx(1.0)
    assert lag.lam == pytest.approx(1.0 + 2.0 * (0.5 - 0.25))
    # λ survives a checkpoint: state.json's cost_lambda
    (tmp_path / "state.json").write_text(json.dumps({"step": 3, **lag.state()}))
    back = CostControl.from_config(EnvConfig(cost_mode="lagrangian", cost_target=0.25, cost_lr=2.0), tmp_path)
    assert back.lam == pytest.approx(1.5) and back.mode == "lagrangian"
    # environments without a cost (the tool env) pass through, with no safety/* metrics
    ro = Rollouts([], None, torch.tensor([1.0]), {}, {}, [Trajectory(env=object(), group=0)])  # type: ignore[arg-type]
    assert lag.apply(ro).tolist() == [1.0] and ro.metrics == {}


def test_per_action_metrics_by_hand():
    class E:
        def __init__(self, c):
            self.c = c

        def cost(self):
            return self.c

    a = Trajectory(env=E(0.0), group=0, mask=[1.0] * 6 + [0.0] * 20, gen_s=0.3, latency_s=0.1)
    a.turns = [Turn("assistant", "x"), Turn("user", "o"), Turn("assistant", "y")]
    b = Trajectory(env=E(2.0), group=0, mask=[1.0] * 4, gen_s=0.2, latency_s=0.0)
    b.turns = [Turn("assistant", "z")]
    m = episode_metrics([a, b])
    assert m["env/tokens_per_action"] == pytest.approx((6 + 4) / 3)  # model tokens / model turns
    assert m["env/wall_s_per_action"] == pytest.approx((0.3 + 0.1 + 0.2) / 3)
    assert m["env/turns"] == 1.5 and m["env/cost"] == 1.0 and m["env/unsafe_rate"] == 0.5


@pytest.mark.parametrize(
    ("override", "key"),
    [("env.cost_mode=constrained", "env.cost_mode"), ("env.cost_lr=-1", "env.cost_lr"),
     ("env.cost_lambda_max=-0.5", "env.cost_lambda_max"),
     ("env.kwargs={latency_penalty: -1}", "env.kwargs")],
)  # fmt: skip
def test_cost_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(overrides=["env.name=gui", "data.task=gui", override])


def test_grpo_step_on_the_gui_env_lagrangian_and_its_turn_view(tiny_dir, tmp_path):
    from vlmrl.train.grpo import GRPOTrainer

    cfg = load_config(
        overrides=[
            f"model.path={tiny_dir}", f"log.run_dir={tmp_path}", "data.task=gui", "train.batch_prompts=2",
            "rollout.n=2", "env.name=gui", "env.max_turns=2", "env.turn_max_new_tokens=6",
            "env.max_total_tokens=200", "env.cost_mode=lagrangian", "env.cost_coef=0.5",
            "env.cost_target=0.1", "env.cost_lr=1.0", "eval.every=0", "data.eval_size=1",
            "log.progress=false", "log.tensorboard=false", "log.groups_per_step=2", "train.steps=1",
        ]
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    metrics = trainer.train_step()
    for key in ("safety/lambda", "safety/episode_cost", "safety/unsafe_rate", "env/tokens_per_action",
                "env/wall_s_per_action", "env/turns", "env/cost", "reward/accuracy", "reward/latency",
                "actor/pg_loss"):  # fmt: skip
        assert key in metrics, key
    assert metrics["safety/lambda"] == 0.5  # the λ this step used
    assert trainer.safety.lam == pytest.approx(max(0.0, 0.5 + (metrics["safety/episode_cost"] - 0.1)))
    assert 0 < metrics["env/tokens_per_action"] <= 6 and metrics["env/wall_s_per_action"] > 0
    assert math.isfinite(metrics["actor/pg_loss"])
    rows = [json.loads(x) for x in (tmp_path / "rollouts" / "step_1.jsonl").read_text().splitlines()]
    for row in rows:  # each logged GUI episode replays: same screens, same reward
        rep = replay(row, make_env("gui", max_turns=2, max_tool_calls=3)(), tmp_path / "rollouts")
        assert rep.matches and rep.reward.parts == pytest.approx(row["reward_parts"])
    path = trainer.save()
    saved = json.loads((path / "state.json").read_text())
    assert saved["cost_lambda"] == pytest.approx(trainer.safety.lam)
    ev = trainer.evaluate()
    assert "eval/accuracy" in ev and "eval/unsafe_rate" in ev and "eval/tokens_per_action" in ev
    # ScreenSpot-style grounding on held-out screens: one click per episode, accuracy = inside the box
    from vlmrl.data import generate
    from vlmrl.eval.multiturn import evaluate_multiturn

    held_out = generate("gui_ground", 2, seed=1, split="test")
    res = evaluate_multiturn(trainer.policy, held_out, cfg, return_outputs=True)
    assert 0.0 <= res["accuracy"] <= 1.0 and res["turns"] == 1.0 and len(res["outputs"]) == 2
    trainer.logger.log(trainer.step, metrics | ev)  # metrics.jsonl: what report.html reads
    trainer.logger.close()
    _check_turn_view(tmp_path, tmp_path / "rollouts" / "step_1.jsonl")


def _check_turn_view(run, rollouts) -> None:
    """An ideal GUI episode (from the ground-truth expert, as SFT traces are) logged beside a real
    step's rollouts: each click turn shows the screen it clicked on with the click marked; a hostile
    model text and a hostile logged click stay escaped; headless Chromium loads every image."""
    from test_report import _rendered_body
    from vlmrl.data import generate
    from vlmrl.envs import sft_trace
    from vlmrl.eval.report import write_report
    from vlmrl.rollout.trajectory_log import trajectory_log

    real = [json.loads(x) for x in rollouts.read_text().splitlines()]
    s = generate("gui", 1, seed=2, kinds=("remove",))[0]
    env = make_env("gui", max_turns=12, max_tool_calls=12)()
    traj = Trajectory(env=env, group=0)
    env.reset(s)
    for turn in sft_trace(s, "gui", max_turns=12, max_tool_calls=12):
        if turn["role"] == "user":
            traj.turns.append(Turn("user", turn["text"], list(turn["images"])))
        else:
            traj.turns.append(Turn("assistant", turn["text"], info=env.step(turn["text"]).info))
    assert env.reward().parts["accuracy"] == 1.0 and env.cost() == 0.0
    log = json.loads(json.dumps(trajectory_log(traj, s, rollouts.parent, "ideal")))
    clicks = [t for t in log["turns"] if t.get("click_image")]
    calls = [t["tool_call"] for t in log["turns"] if t["role"] == "assistant"]
    n_clicks = sum(c["name"] == "click" for c in calls)
    assert len(clicks) == n_clicks >= 2
    x, y = (int(v) for v in clicks[0]["click"])
    marked = Image.open(rollouts.parent / clicks[0]["click_image"]).convert("RGB")
    r = max(3, marked.width // 40)
    assert marked.getpixel((x + r, y)) == (255, 0, 0) != s.images[0].getpixel((x + r, y))  # the ring
    hostile = "<img src=x onerror=\"document.body.dataset.pwned='1'\">"
    log["turns"][1]["text"] += hostile
    log["turns"][1]["click"] = hostile
    with rollouts.open("a") as f:
        f.write(json.dumps(real[0] | {"sample_id": "ideal", "trajectory": log}) + "\n")
    page = write_report(run).read_text()
    assert hostile not in page and page.count("_click.png") >= n_clicks
    attrs, _ = _rendered_body((run / "report.html").resolve().as_uri() + "?step=all", run / "chromium")
    assert attrs.get("ready") == "1" and "pwned" not in attrs
    assert int(attrs["images-loaded"]) == int(attrs["images-total"]) > n_clicks  # screens + marked clicks
