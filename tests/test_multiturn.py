"""Multi-turn rollouts: the training forward sees what the sampler saw; the mask is the model's tokens;
a logged trajectory replays exactly. A stand-in env (its tool returns a fixed crop) keeps this
independent of ``vlmrl.envs``; the untrained tiny model's text never ends an episode by itself."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from vlmrl.data import generate
from vlmrl.rewards import RewardBreakdown
from vlmrl.rollout.batch import (
    completion_logprobs,
    concat_batches,
    select_prompts,
    training_inputs,
)
from vlmrl.rollout.hf_engine import HFEngine
from vlmrl.rollout.multiturn import MultiTurnSpec, multiturn_rollout
from vlmrl.rollout.shared_prompt import rollout_logprobs, shared_prompt_supported
from vlmrl.rollout.trajectory import episode_metrics
from vlmrl.rollout.trajectory_log import replay, trajectory_log


@dataclass
class Obs:
    text: str
    images: list[Image.Image] = field(default_factory=list)


@dataclass
class Step:
    observation: Obs | None
    done: bool
    info: dict[str, Any]


class CropEnv:
    """Every turn but the last is a "tool call" answered with the image's top-left quarter, upscaled."""

    def __init__(self, turns: int = 3):
        self.max_turns = turns
        self.sample = None
        self.n = 0

    def system_prompt(self) -> str:
        return "Tool: crop. Answer in <answer></answer>."

    def reset(self, sample) -> Obs:
        self.sample, self.n = sample, 0
        return Obs("<image>" + sample.problem.replace("<image>", ""), list(sample.images))

    def step(self, text: str) -> Step:
        self.n += 1
        if self.n >= self.max_turns:
            return Step(None, True, {"kind": "answer", "tool": None, "valid": True, "error": None})
        im = self.sample.images[0]
        crop = im.crop((0, 0, im.width // 2, im.height // 2)).resize((112, 112))
        obs = Obs(f'<tool_response>{{"turn": {self.n}}}</tool_response><image>', [crop])
        return Step(
            obs, False, {"kind": "tool", "tool": "crop", "valid": True, "error": None, "latency_s": 0.0}
        )

    def reward(self) -> RewardBreakdown:
        return RewardBreakdown(total=0.1 * self.n, parts={"accuracy": 0.0, "turns": float(self.n)})


def _rollout(policy, turns=3, g=2, temperature=0.9, max_total=400, turn_tokens=6):
    samples = [generate("count", 1, seed=0)[0], generate("color", 1, seed=3)[0]]
    engine = HFEngine(policy, max_new_tokens=16, temperature=temperature)
    torch.manual_seed(0)
    spec = MultiTurnSpec(
        group_size=g, max_turns=5, turn_max_new_tokens=turn_tokens, max_total_tokens=max_total
    )
    batch, trajs = multiturn_rollout(engine, policy.processor, lambda: CropEnv(turns), samples, spec)
    return samples, batch, trajs


def test_sampler_logprobs_equal_the_training_forward_over_turns_with_crops(tiny_policy):
    _, batch, trajs = _rollout(tiny_policy)
    assert all(t.model_turns == 3 for t in trajs) and batch.size == 4
    # env turns hold image tokens; the vision-token check looks at model turns only
    assert "invalid_vision_token" not in batch.finish_reasons and batch.completion_mask.sum(1).min() > 0
    assert all(g is not None and g.shape[0] == 2 for g in batch.extra_image_grid_thw)  # two crops each
    inputs, _ = training_inputs(batch, list(range(batch.size)))
    # every image reaches the forward: prompt image + 2 crops per rollout
    assert inputs["image_grid_thw"].shape[0] == 3 * batch.size
    with torch.no_grad():
        logp, _ = completion_logprobs(tiny_policy.model.eval(), inputs, batch.completion_ids, 0.9)
    m = batch.completion_mask
    assert ((logp - batch.sampler_logprobs).abs() * m).max().item() < 1e-3
    # a micro-batch of mixed rows gives the same; the shared-prompt path falls back (extras)
    assert not shared_prompt_supported(tiny_policy.model, batch)
    with torch.no_grad():
        lp2, _ = rollout_logprobs(tiny_policy.model, batch, [3, 0], 0.9)
    assert ((lp2 - batch.sampler_logprobs[[3, 0]]).abs() * m[[3, 0]]).max().item() < 1e-3


def test_crop_tokens_matter_in_the_training_forward(tiny_policy):
    """The check above is not vacuous: dropping the completion's token types breaks the match."""
    _, batch, _ = _rollout(tiny_policy)
    batch.completion_token_types = None
    inputs, _ = training_inputs(batch, list(range(batch.size)))
    with torch.no_grad():
        logp, _ = completion_logprobs(tiny_policy.model.eval(), inputs, batch.completion_ids, 0.9)
    assert ((logp - batch.sampler_logprobs).abs() * batch.completion_mask).max().item() > 1e-3


def test_loss_mask_is_exactly_the_model_tokens(tiny_policy):
    _, batch, trajs = _rollout(tiny_policy)
    tok = tiny_policy.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    pad_img = tok.convert_tokens_to_ids("<|image_pad|>")
    for i, t in enumerate(trajs):
        n = int(batch.completion_lengths[i])
        ids, mask = batch.completion_ids[i, :n], batch.completion_mask[i, :n]
        assert not mask[n:].any() if n < mask.numel() else True
        # mask 1 runs = the model turns, each closed by its own <|im_end|> (or cut at the turn cap)
        runs, cur = [], []
        for tok_id, m in zip(ids.tolist(), mask.tolist(), strict=True):
            if m:
                cur.append(tok_id)
            elif cur:
                runs.append(cur)
                cur = []
        if cur:
            runs.append(cur)
        assert len(runs) == t.model_turns
        assert (ids[mask == 0] == pad_img).sum() == 2 * 16  # two crops' image tokens, all masked
        assert not torch.isin(ids[mask == 1], torch.tensor(tiny_policy.banned_token_ids)).any()
        for r in runs:
            assert r[-1] == im_end or len(r) == 6
        mm = batch.completion_token_types["mm_token_type_ids"][i, :n]
        assert torch.equal(mm.bool(), ids == pad_img)
        # env tokens decode to the chat template's user turns
        env_text = tok.decode(ids[mask == 0].tolist())
        assert env_text.count("<|im_start|>user") == 2 and '"turn": 2' in env_text


def test_select_and_concat_carry_the_extras(tiny_policy):
    _, batch, _ = _rollout(tiny_policy)
    part = select_prompts(batch, [1])
    assert part.size == 2 and len(part.extra_pixel_values) == 2
    both = concat_batches(
        [select_prompts(batch, [1]), select_prompts(batch, [0])], tiny_policy.tokenizer.pad_token_id
    )
    with torch.no_grad():
        lp, _ = rollout_logprobs(tiny_policy.model.eval(), both, list(range(both.size)), 0.9)
    m = both.completion_mask
    assert ((lp - both.sampler_logprobs).abs() * m).max().item() < 1e-3


def test_token_budget_ends_episodes(tiny_policy):
    _, batch, trajs = _rollout(tiny_policy, turns=5, max_total=60)
    assert all(t.budget_hit and t.finish == "length" for t in trajs)
    assert int(batch.completion_lengths.max()) <= 60
    metrics = episode_metrics(trajs)
    assert metrics["env/budget_hit_rate"] == 1.0 and metrics["env/valid_call_rate"] == 1.0


def test_a_logged_trajectory_replays_deterministically(tiny_policy, tmp_path):
    samples, _, trajs = _rollout(tiny_policy, g=1)
    t = trajs[1]
    row = {"trajectory": trajectory_log(t, samples[1], tmp_path, "x")}
    row = json.loads(json.dumps(row))  # through JSON, as in rollouts/step_N.jsonl
    rep = replay(row, CropEnv(3), tmp_path)
    assert rep.matches and len(rep.observations) == 2
    assert rep.reward.total == t.env.reward().total
    again = replay(row, CropEnv(3), tmp_path)
    assert again.reward.parts == rep.reward.parts

    # a different env (different crops) is detected
    class OtherEnv(CropEnv):
        def step(self, text):
            res = super().step(text)
            if res.observation is not None:
                res.observation.images = [im.rotate(90) for im in res.observation.images]
            return res

    assert not replay(row, OtherEnv(3), tmp_path).matches
