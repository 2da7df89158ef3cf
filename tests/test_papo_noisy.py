"""PAPO (implicit perception loss) and NoisyRollout on the tiny model: the math by hand, the patch
mask, the extra forward only when on, noisy rollouts from noised pixels but trained on clean ones,
the noise schedule, old log-probs recomputed on the clean image, and config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import QUICK_RUN
from vlmrl.algos import broadcast_advantages, compute_advantages, papo_loss, perception_kl
from vlmrl.config import load_config
from vlmrl.config.load import ConfigError
from vlmrl.data import build_messages
from vlmrl.rollout.batch import completion_logprobs, encode_prompts, select_prompts, training_inputs
from vlmrl.rollout.noisy import add_pixel_noise, noise_scale, noise_std_at, noisy_images
from vlmrl.train.grpo import GRPOTrainer
from vlmrl.train.update import policy_update
from vlmrl.vision.papo import image_generators, masked_batch, patch_mask, step_generator


@pytest.fixture(scope="module")
def plugin(letters_reward) -> list[str]:
    """conftest's ``test_letters`` reward: varies on an untrained model's text."""
    return letters_reward


def _cfg(tiny_dir, run_dir, plugin, *extra):
    return load_config(
        overrides=[
            f"model.path={tiny_dir}",
            f"log.run_dir={run_dir}",
            *plugin,
            *QUICK_RUN,
            "data.eval_size=2",
            "eval.drift=false",
            "train.steps=4",
            *extra,
        ]
    )


def _rollouts(trainer: GRPOTrainer, k: int = 2):
    """k prompts × G plain rollouts and their token advantages (not vacuous: rewards differ)."""
    samples = trainer.stream.next(k)
    enc = encode_prompts(
        trainer.policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )
    batch = trainer.engine.generate(enc, trainer.cfg.rollout.n)
    rewards = trainer._score(samples, batch).rewards
    adv = broadcast_advantages(compute_advantages("grpo", rewards, batch.prompt_index), batch.completion_mask)
    return batch, adv


# ---------------------------------------------------------------- PAPO: the math, by hand
def test_papo_loss_by_hand():
    # logp = log π(o_t | I), masked = log π(o_t | I_mask), two tokens of one response.
    logp = torch.tensor([[-0.2, -1.0]], requires_grad=True)
    masked = torch.tensor([[-0.5, -0.7]], requires_grad=True)
    h_real = torch.tensor([[1.0, 2.0]], requires_grad=True)
    h_masked = torch.tensor([[3.0, 5.0]], requires_grad=True)
    mask = torch.ones(1, 2)
    # k3 with d = masked − logp: d = (−0.3, 0.3); k3 = e^d − d − 1 = (0.040818, 0.049859); mean 0.045338
    d = torch.tensor([-0.3, 0.3])
    kl = float((d.exp() - d - 1).mean())
    assert kl == pytest.approx(0.0453385, abs=1e-6)
    loss, metrics = papo_loss(logp, masked, h_real, h_masked, mask, 0.5, 0.1, estimator="k3")
    # L = −0.5·0.045338 + 0.1·(mean(1, 2) + mean(3, 5)) = −0.022669 + 0.1·5.5 = 0.527331
    assert float(loss.detach()) == pytest.approx(-0.5 * kl + 0.55, abs=1e-6)
    assert metrics["papo_kl"] == pytest.approx(kl, abs=1e-6)
    assert metrics["papo_entropy_masked"] == pytest.approx(4.0)
    loss.backward()
    # ∂k3/∂logp = 1 − e^d (d = masked − logp); the KL is maximised: ∂L/∂logp = −0.5·(1 − e^d)/2
    torch.testing.assert_close(logp.grad, -0.5 * (1 - d.exp()).unsqueeze(0) / 2)
    assert masked.grad is None  # a constant target inside the KL
    torch.testing.assert_close(h_masked.grad, torch.full((1, 2), 0.05))  # η / T: the guard has a gradient


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_perception_kl_is_zero_for_equal_policies(est):
    lp = torch.tensor([[-0.3, -2.0, -0.01]])
    assert torch.equal(perception_kl(lp, lp.clone(), est), torch.zeros_like(lp))


# ---------------------------------------------------------------- PAPO: the mask
def test_patch_mask_hits_whole_merge_groups_at_the_ratio():
    grid = torch.tensor([[1, 8, 8], [1, 4, 6], [1, 3, 5]])  # 64, 24, 15 patches
    gens = lambda step: [step_generator(0, step, key) for key in range(3)]  # noqa: E731
    rows = patch_mask(grid, 0.6, 2, gens(3))
    assert rows.shape == (64 + 24 + 15,)
    first, second, third = rows[:64], rows[64:88], rows[88:]
    # 16 groups of 4 → round(9.6) = 10 groups = 40 rows; 6 groups → round(3.6) = 4 = 16 rows
    assert int(first.sum()) == 40 and int(second.sum()) == 16
    for part in (first, second):  # whole 2×2 merge groups (4 consecutive rows), all or none
        per_group = part.view(-1, 4).sum(1)
        assert set(per_group.tolist()) <= {0, 4}
    assert int(third.sum()) == 9  # 3×5 does not divide by 2: patch by patch, round(0.6·15) = 9
    # a pure function of (seed, step): the same again, another step differs
    assert torch.equal(rows, patch_mask(grid, 0.6, 2, gens(3)))
    assert not torch.equal(rows, patch_mask(grid, 0.6, 2, gens(4)))
    assert int(patch_mask(grid, 0.0, 2, gens(3)).sum()) == 0


def test_consecutive_merge_squared_rows_are_one_merge_group(tiny_policy):
    """The mask's premise: the processor emits a 2×2 merge group as 4 consecutive pixel_values rows."""
    block = 28  # one merge group = 2×2 patches of 14 px
    arr = np.zeros((112, 112, 3), np.uint8)
    for i in range(4):
        for j in range(4):  # a distinct flat colour per 28 px block
            arr[i * block : (i + 1) * block, j * block : (j + 1) * block] = (40 + 50 * i, 40 + 50 * j, 90)
    out = tiny_policy.processor.image_processor(images=[Image.fromarray(arr)], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 8, 8]]
    groups = out["pixel_values"].view(16, 4, -1)  # [groups, merge², C·T·p·p]
    assert torch.allclose(groups, groups[:, :1].expand_as(groups))  # the 4 rows of a group: one block
    flat = groups[:, 0]
    assert torch.cdist(flat, flat).add(torch.eye(16) * 1e9).min() > 1e-3  # 16 groups, 16 blocks


def test_masked_batch_zeroes_exactly_the_masked_rows(tiny_dir, tmp_path, plugin):
    trainer = GRPOTrainer(_cfg(tiny_dir, tmp_path, plugin))
    batch, _ = _rollouts(trainer)
    pix = batch.prompt_inputs["pixel_values"]
    grid = batch.prompt_inputs["image_grid_thw"]
    masked = masked_batch(batch, 0.6, 2, 0, 0)
    rows = patch_mask(grid, 0.6, 2, image_generators(pix, grid, 0, 0))
    out = masked.prompt_inputs["pixel_values"]
    assert 0.5 < float(rows.float().mean()) < 0.7
    assert torch.equal(out[rows], torch.zeros_like(out[rows]))
    assert torch.equal(out[~rows], pix[~rows])
    assert torch.equal(batch.prompt_inputs["pixel_values"], pix)  # the real batch is untouched
    same = masked_batch(batch, 0.0, 2, 0, 0)
    assert torch.equal(same.prompt_inputs["pixel_values"], pix)
    # a prompt's mask depends on its image, not on its place in the batch (or on which rank holds it)
    half = pix.shape[0] // 2
    alone = masked_batch(select_prompts(batch, [1]), 0.6, 2, 0, 0).prompt_inputs["pixel_values"]
    assert torch.equal(alone, out[half:])
    assert not torch.equal(rows[:half], rows[half:])  # two images, two different masks


# ---------------------------------------------------------------- PAPO: in the update
def _update(trainer, batch, adv, papo_coef: float, ratio: float, micro: int = 8):
    """One policy_update from the trainer's current weights with SGD; returns (metrics, deltas, forwards)."""
    model = trainer.policy.model
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    spec = trainer.spec
    spec.algo.papo_coef, spec.algo.papo_mask_ratio, spec.loop.micro_batch = papo_coef, ratio, micro
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        metrics = policy_update(model, torch.optim.SGD(model.parameters(), lr=1.0), batch, adv, spec, step=5)
    finally:
        hook.remove()
    deltas = {n: p.detach() - start[n] for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(start[n])
    return metrics, deltas, len(calls)


def test_papo_kl_zero_unmasked_positive_masked_extra_forward_only_when_on(tiny_dir, tmp_path, plugin):
    trainer = GRPOTrainer(_cfg(tiny_dir, tmp_path, plugin, "train.grad_clip=0"))
    batch, adv = _rollouts(trainer)
    plain, d_plain, n_plain = _update(trainer, batch, adv, 0.0, 0.6, micro=4)
    assert n_plain >= 2  # 8 rollouts in micro-batches of 4 (a shared-prompt forward is 2 model calls)
    assert "actor/papo_kl" not in plain
    unmasked, _, n_unmasked = _update(trainer, batch, adv, 1.0, 0.0, micro=4)
    assert n_unmasked == 2 * n_plain  # one masked forward per micro-batch, and only with PAPO on
    assert unmasked["actor/papo_kl"] == 0.0  # mask ratio 0: the masked forward is the real one
    masked, d_masked, _ = _update(trainer, batch, adv, 1.0, 0.6, micro=4)
    assert masked["actor/papo_kl"] > 1e-6
    assert masked["actor/papo_entropy_masked"] > 0
    # the perception term changes the update
    diff = sum(float((d_masked[n] - d_plain[n]).abs().sum()) for n in d_plain)
    assert diff > 0
    # micro-batching does not change it: 1×8 equals 8×1 (the mask is per prompt, per step)
    one, d_one, _ = _update(trainer, batch, adv, 1.0, 0.6, micro=8)
    eight, d_eight, _ = _update(trainer, batch, adv, 1.0, 0.6, micro=1)
    assert one["actor/papo_kl"] == pytest.approx(eight["actor/papo_kl"], rel=1e-4)
    for n in d_one:
        torch.testing.assert_close(d_one[n], d_eight[n], atol=1e-6, rtol=1e-4)


def test_grpo_step_with_papo_logs_and_moves_parameters(tiny_dir, tmp_path, plugin):
    cfg = _cfg(tiny_dir, tmp_path, plugin, "algo.papo_coef=0.5", "algo.papo_entropy_coef=0.01")
    trainer = GRPOTrainer(cfg)
    model = trainer.policy.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = trainer.train_step()
    assert metrics["actor/papo_kl"] > 0 and math.isfinite(metrics["actor/papo_kl"])
    assert metrics["actor/papo_entropy_masked"] > 0 and math.isfinite(metrics["actor/papo_entropy_masked"])
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert unchanged == []


# ---------------------------------------------------------------- NoisyRollout: the noise
def test_noise_schedules_by_hand():
    assert noise_scale(0, 10, "linear") == 1.0
    assert noise_scale(5, 10, "linear") == pytest.approx(0.5)
    assert noise_scale(10, 10, "linear") == 0.0 and noise_scale(30, 10, "linear") == 0.0
    assert noise_scale(5, 10, "cosine") == pytest.approx(0.5)
    assert noise_scale(2.5, 10, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)  # 0.853553
    assert noise_scale(10, 10, "cosine") == 0.0
    assert noise_scale(0, 10, "sigmoid") == pytest.approx(1.0)
    assert noise_scale(5, 10, "sigmoid") == pytest.approx(0.5)  # symmetric about the midpoint
    assert noise_scale(10, 10, "sigmoid") == pytest.approx(0.0, abs=1e-12)
    # x = 0.2: s(3) = 0.952574, s(±5) = 0.006693 / 0.993307 → (0.952574 − 0.006693) / 0.986614 = 0.958715
    assert noise_scale(2, 10, "sigmoid") == pytest.approx(0.958715, abs=1e-6)
    assert noise_scale(7, 10, "constant") == 1.0
    cfg = load_config(overrides=["rollout.noise_std=0.4", "train.steps=8", "rollout.noise_schedule=linear"])
    assert noise_std_at(cfg, 2) == pytest.approx(0.3)  # anneal_steps null → train.steps: 0.4·(1 − 2/8)
    cfg = load_config(
        overrides=["rollout.noise_std=0.4", "rollout.noise_anneal_steps=4", "rollout.noise_schedule=linear"]
    )
    assert noise_std_at(cfg, 2) == pytest.approx(0.2) and noise_std_at(cfg, 4) == 0.0


def test_pixel_noise_is_seeded_by_step_and_sample():
    from vlmrl.data import Sample

    img = Image.fromarray(np.full((28, 28, 3), 128, np.uint8))
    s = [Sample(id="a", images=[img], problem="<image>?", answer="1")]
    a, b = noisy_images(s, 0.2, 0, 3)[0][0], noisy_images(s, 0.2, 0, 3)[0][0]
    assert np.array_equal(np.asarray(a), np.asarray(b))  # no global RNG: the same every time
    c = noisy_images(s, 0.2, 0, 4)[0][0]
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    x = np.asarray(a, dtype=np.float32) / 255 - 128 / 255
    assert 0.15 < float(x.std()) < 0.25  # the std asked for (no clipping around mid-grey)
    same = add_pixel_noise(img, 0.0, np.random.default_rng(0))
    assert np.array_equal(np.asarray(same), np.asarray(img))


# ---------------------------------------------------------------- NoisyRollout: the rollouts
def _spy_generate(trainer):
    calls = []
    real = trainer.engine.generate

    def spy(prompt_inputs, n, greedy=False):
        out = real(prompt_inputs, n, greedy)
        calls.append((prompt_inputs, n, out))
        return out

    trainer.engine.generate = spy
    return calls


def test_noisy_rollouts_sample_from_noise_but_train_on_clean_pixels(tiny_dir, tmp_path, plugin):
    cfg = _cfg(tiny_dir, tmp_path, plugin, "rollout.noisy_frac=0.5", "rollout.noise_std=0.5")
    trainer = GRPOTrainer(cfg)
    calls = _spy_generate(trainer)
    ro = trainer._rollout_round(2)
    samples, batch, rewards, metrics = ro.samples, ro.batch, ro.rewards, ro.metrics
    assert [c[1] for c in calls] == [2, 2]  # ⌊0.5·4⌋ noisy, the rest clean
    (clean_in, _, clean_out), (noisy_in, _, noisy_out) = calls
    assert not torch.equal(clean_in["pixel_values"], noisy_in["pixel_values"])
    assert torch.equal(clean_in["input_ids"], noisy_in["input_ids"])
    enc = encode_prompts(
        trainer.policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )
    assert torch.equal(batch.prompt_inputs["pixel_values"], enc["pixel_values"])  # the clean images
    assert batch.prompt_index.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    for p in (0, 1):
        rows = (batch.prompt_index == p).nonzero().flatten().tolist()
        noisy_rows = rows[2:]  # each group: its clean rollouts, then its noisy ones
        inputs, _ = training_inputs(batch, noisy_rows)
        one = enc["pixel_values"].shape[0] // 2
        assert torch.equal(inputs["pixel_values"], enc["pixel_values"][p * one : (p + 1) * one].repeat(2, 1))
        assert [batch.texts[r] for r in noisy_rows] == noisy_out.texts[2 * p : 2 * p + 2]
        assert [batch.texts[r] for r in rows[:2]] == clean_out.texts[2 * p : 2 * p + 2]
    assert metrics["rollout/noise_std"] == pytest.approx(0.5)  # step 0 of the sigmoid schedule
    is_noisy = torch.tensor([False, False, True, True] * 2)
    assert metrics["reward/noisy"] == pytest.approx(float(rewards[is_noisy].mean()))
    assert metrics["reward/clean"] == pytest.approx(float(rewards[~is_noisy].mean()))
    # on-policy: nothing reads the old log-probs, so the sampler's are kept (no extra forward)
    width = noisy_out.sampler_logprobs.shape[1]
    torch.testing.assert_close(batch.sampler_logprobs[2:4, :width], noisy_out.sampler_logprobs[:2])


def test_noisy_pixels_depend_on_step_and_data_not_on_global_rng(tiny_dir, tmp_path, plugin):
    """What a resumed run restores (step, data position) fixes the noise; global RNG state does not."""
    cfg = _cfg(tiny_dir, tmp_path, plugin, "rollout.noisy_frac=0.5")
    pixels = []
    for rng_seed in (1, 2):
        trainer = GRPOTrainer(cfg)
        trainer.step, trainer.stream.position = 1, 2  # as after one step of 2 prompts (or a resume there)
        torch.manual_seed(rng_seed)
        np.random.seed(rng_seed)
        calls = _spy_generate(trainer)
        trainer._rollout_round(2)
        pixels.append(calls[1][0]["pixel_values"])
    assert torch.equal(pixels[0], pixels[1])


def test_noisy_frac_zero_is_the_plain_path(tiny_dir, tmp_path, plugin):
    trainer = GRPOTrainer(_cfg(tiny_dir, tmp_path, plugin))
    before = trainer.sample_rng.get_state()
    ro = trainer._rollout_round(2)
    samples, batch, metrics = ro.samples, ro.batch, ro.metrics
    assert "rollout/noise_std" not in metrics and "reward/noisy" not in metrics
    trainer.stream.position = 0
    trainer.sample_rng.set_state(before)  # the same draws again
    enc = encode_prompts(
        trainer.policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )
    plain = trainer.engine.generate(enc, 4)
    assert torch.equal(batch.completion_ids, plain.completion_ids)
    assert torch.equal(batch.sampler_logprobs, plain.sampler_logprobs)
    assert torch.equal(batch.prompt_index, plain.prompt_index)
    assert torch.equal(batch.prompt_inputs["pixel_values"], plain.prompt_inputs["pixel_values"])
    assert batch.texts == plain.texts


def test_off_policy_old_logprobs_of_noisy_rollouts_are_clean_image_logprobs(tiny_dir, tmp_path, plugin):
    cfg = _cfg(
        tiny_dir, tmp_path, plugin, "rollout.noisy_frac=0.5", "rollout.noise_std=0.8", "train.epochs=2",
        "rollout.noise_schedule=constant",
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    calls = _spy_generate(trainer)
    batch = trainer._rollout_round(2).batch
    (_, _, clean_out), (_, _, noisy_out) = calls
    noisy_rows = [2, 3, 6, 7]
    inputs, _ = training_inputs(batch, noisy_rows)
    with torch.no_grad():
        lp, _ = completion_logprobs(trainer.policy.model, inputs, batch.completion_ids[noisy_rows], 1.0)
    valid = batch.completion_mask[noisy_rows] > 0
    torch.testing.assert_close(batch.sampler_logprobs[noisy_rows][valid], lp[valid], atol=1e-5, rtol=1e-5)
    width = noisy_out.sampler_logprobs.shape[1]
    sampled_under_noise = noisy_out.sampler_logprobs  # rows: prompt 0, 0, 1, 1 = noisy_rows
    gap = (batch.sampler_logprobs[noisy_rows, :width] - sampled_under_noise).abs().max()
    assert gap > 1e-4  # they really were recomputed (the noise changed the policy's log-probs)
    cw = clean_out.sampler_logprobs.shape[1]
    torch.testing.assert_close(batch.sampler_logprobs[[0, 1, 4, 5], :cw], clean_out.sampler_logprobs)
    # and a whole off-policy step runs
    metrics = trainer.train_step()
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert {"rollout/noise_std", "reward/noisy", "reward/clean"} <= set(metrics)


# ---------------------------------------------------------------- config errors name the key
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("algo.papo_mask_ratio=1.0", "algo.papo_mask_ratio"),
        ("algo.papo_mask_ratio=-0.1", "algo.papo_mask_ratio"),
        ("algo.papo_coef=-1", "algo.papo_coef"),
        ("algo.papo_entropy_coef=-0.03", "algo.papo_entropy_coef"),
        ("algo.papo_kl_estimator=k4", "algo.papo_kl_estimator"),
        ("rollout.noisy_frac=1", "rollout.noisy_frac"),
        ("rollout.noisy_frac=0.1", "rollout.noisy_frac"),  # ⌊0.1·8⌋ = 0 noisy rollouts
        ("rollout.noise_std=-0.2", "rollout.noise_std"),
        ("rollout.noise_anneal_steps=0", "rollout.noise_anneal_steps"),
        ("rollout.noise_schedule=exp", "rollout.noise_schedule"),
    ],
)
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=[override])


def test_papo_metrics_are_summed_across_ranks_like_the_other_loss_shares():
    """PAPO's metrics are shares of a globally normalised loss; they were averaged over ranks."""
    from vlmrl.run.dist import SUM_KEYS

    n, c = 2, 3
    logp, mask = torch.zeros(n, c), torch.ones(n, c)
    _, metrics = papo_loss(logp, logp - 0.1, torch.ones(n, c), torch.ones(n, c), mask, 0.1, 0.03)
    assert {f"actor/{k}" for k in metrics} <= set(SUM_KEYS)
