"""Training with an environment (``env.name``): a GRPO step on multi-turn episodes, its log replays,
held-out multi-turn evaluation, SFT on tool traces (loss on assistant tokens), config errors."""

from __future__ import annotations

import json

import pytest
import torch

from vlmrl.config import load_config
from vlmrl.config.load import ConfigError
from vlmrl.data import generate
from vlmrl.envs import make_env
from vlmrl.eval.report_rollouts import render_rollouts
from vlmrl.rollout.batch import completion_logprobs, training_inputs
from vlmrl.rollout.multiturn import trace_batch
from vlmrl.rollout.trajectory_log import replay
from vlmrl.train.grpo import GRPOTrainer


def _overrides(tiny_dir, run_dir, *extra) -> list[str]:
    return [
        f"model.path={tiny_dir}",
        f"log.run_dir={run_dir}",
        "data.task=count",
        "train.batch_prompts=2",
        "rollout.n=2",
        "env.name=tools",
        "env.max_turns=2",
        "env.turn_max_new_tokens=5",
        "env.max_total_tokens=200",
        "eval.every=0",
        "data.eval_size=2",
        "log.progress=false",
        "log.tensorboard=false",
        "log.groups_per_step=2",
        *extra,
    ]


def test_grpo_step_with_env_logs_replayable_turns(tiny_dir, tmp_path):
    cfg = load_config(overrides=_overrides(tiny_dir, tmp_path, "train.steps=1"))
    trainer = GRPOTrainer(cfg)
    assert trainer.spec.token_budget == 200  # token-sum normalisers use the episode budget
    metrics = trainer.train_step()
    for key in ("env/tool_calls_per_episode", "env/valid_call_rate", "env/turns", "env/budget_hit_rate",
                "env/latency_s", "reward/accuracy", "reward/format", "reward/tool_bonus", "reward/call_cost",
                "reward/budget_penalty", "actor/pg_loss"):  # fmt: skip
        assert key in metrics, key
    assert 1 <= metrics["env/turns"] <= 2
    rows = [json.loads(x) for x in (tmp_path / "rollouts" / "step_1.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        turns = row["trajectory"]["turns"]
        assert turns[0]["role"] == "user" and turns[0]["images"]
        assert [t["role"] for t in turns[1:]][::2] == ["assistant"] * ((len(turns)) // 2)
        rep = replay(row, make_env("tools", max_turns=2, max_tool_calls=3)(), tmp_path / "rollouts")
        assert rep.matches
        assert rep.reward.total == pytest.approx(row["reward"])
        assert rep.reward.parts == pytest.approx(row["reward_parts"])
    ev = trainer.evaluate()
    assert "eval/accuracy" in ev and "eval/tool_calls_per_episode" in ev
    page = render_rollouts(tmp_path, 8, 10**6).html
    assert page.count('class="turn assistant"') >= 4 and page.count('class="turn user"') >= 4
    assert "<tool_call>" not in page  # model text stays escaped
    assert '<img src="rollouts/images/step1_r0_t0_0.png"' in page  # each turn's images are shown


def test_sft_trace_batch_masks_exactly_the_assistant_turns(tiny_policy):
    s = generate("count", 1, seed=5)[0]
    env = make_env("tools")()
    first = env.reset(s)
    call = '<tool_call>{"name": "zoom_in", "arguments": {"region": "top-left"}}</tool_call>'
    res = env.step(call)
    assert res.info["valid"] and res.observation.images
    answer = f"<answer>{s.answer}</answer>"
    trace = [
        {"role": "user", "text": first.text, "images": first.images},
        {"role": "assistant", "text": call},
        {"role": "user", "text": res.observation.text, "images": res.observation.images},
        {"role": "assistant", "text": answer},
    ]
    batch = trace_batch(tiny_policy, [env.system_prompt()], [trace])
    tok = tiny_policy.tokenizer
    ids, mask = batch.completion_ids[0], batch.completion_mask[0]
    assert tok.decode(ids[mask == 1].tolist()) == call + "<|im_end|>" + answer + "<|im_end|>"
    env_text = tok.decode(ids[mask == 0].tolist())
    assert env_text.startswith("\n<|im_start|>user\n<tool_response>") and "<|image_pad|>" in env_text
    inputs, _ = training_inputs(batch, [0])
    assert inputs["image_grid_thw"].shape[0] == 2  # the question's image and the zoomed one
    logp, _ = completion_logprobs(tiny_policy.model, inputs, batch.completion_ids)
    loss = -(logp * batch.completion_mask).sum() / batch.completion_mask.sum()
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("env.name=nope", "env.name"),
        ("env.kwargs={tool_bonus_typo: 1}", "env.kwargs"),
        ("env.max_turns=0", "env.max_turns"),
        ("algo.sr1_check=true", "env.name"),
    ],
)
def test_env_config_errors_name_the_key(override, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        load_config(overrides=["env.name=tools", override])


def test_a_zoom_trajectory_with_tool_images_replays_from_its_log(tmp_path):
    from vlmrl.envs import sft_trace
    from vlmrl.rollout.trajectory import Trajectory, Turn
    from vlmrl.rollout.trajectory_log import trajectory_log

    s = generate("zoom", 1, seed=2)[0]
    env = make_env("tools")()
    traj = Trajectory(env=env, group=0)
    for turn in sft_trace(s, "tools"):  # the ideal episode: zoom_in on the right region, then the answer
        if turn["role"] == "user":
            traj.turns.append(Turn("user", turn["text"], list(turn["images"])))
        else:
            traj.turns.append(Turn("assistant", turn["text"], info={"kind": "tool", "valid": True}))
    env.reset(s)
    for turn in traj.turns:
        if turn.role == "assistant":
            env.step(turn.text)
    row = json.loads(json.dumps({"trajectory": trajectory_log(traj, s, tmp_path, "z")}))
    assert row["trajectory"]["turns"][1]["tool_call"]["name"] == "zoom_in"
    assert len(row["trajectory"]["turns"][2]["images"]) == 1  # the zoomed crop, saved as a file
    rep = replay(row, make_env("tools")(), tmp_path)
    assert rep.matches and rep.reward.parts["accuracy"] == 1.0 and rep.reward.parts["tool_bonus"] > 0
    assert rep.reward.total == pytest.approx(env.reward().total)
    # a log whose crop is not what the env returns for that call does not pass as a replay
    crop_path = tmp_path / row["trajectory"]["turns"][2]["images"][0]
    from PIL import Image

    Image.open(crop_path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(crop_path)
    assert not replay(row, make_env("tools")(), tmp_path).matches


def test_vlmrl_eval_runs_multiturn_episodes_and_their_blind_gap(tiny_dir, tmp_path, capsys):
    """`vlmrl eval` with ``env.name``: greedy multi-turn episodes (tool metrics in the result), the
    blind conditions through the same episodes, and POPE (single-turn) refused in one line."""
    from vlmrl.cli.main import main

    args = [
        f"model.path={tiny_dir}", "data.task=zoom", "data.eval_size=3", "env.name=tools",
        "env.max_turns=2", "env.turn_max_new_tokens=4", "env.max_total_tokens=1200",
    ]  # fmt: skip
    out = tmp_path / "eval.json"
    assert main(["eval", *args, "--blind", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {"accuracy", "tool_calls_per_episode", "valid_call_rate", "turns"} <= set(res["accuracy"])
    assert set(res["blind"]["conditions"]) == {"real", "blank", "noise", "shuffled"}
    assert res["blind"]["conditions"]["real"]["accuracy"] == res["accuracy"]["accuracy"]
    assert "blind gap" in capsys.readouterr().out
    assert main(["eval", *args, "--pope", "2"]) == 2
    assert "single-turn" in capsys.readouterr().err
