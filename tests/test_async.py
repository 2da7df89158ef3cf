"""Asynchronous rollouts: the off-policy correction by hand, the staleness schedule, a two-process
gloo weight push, and an async run with staleness 0 that is the synchronous run exactly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp

from conftest import QUICK_RUN
from vlmrl.algos import LossSpec, policy_loss
from vlmrl.algos.offpolicy import truncated_is_weights
from vlmrl.config import ConfigError, load_config
from vlmrl.rollout.async_worker import behaviour_version, push_needed, rollout_engine
from vlmrl.rollout.weight_sync import TRAINER, WORKER, WeightChannel, free_port
from vlmrl.train.grpo import GRPOTrainer


def test_truncated_is_weights_by_hand():
    # log π_prox − log μ per token: 0, +1, −1, +0.5 (the last one masked out)
    prox = torch.tensor([[0.0, 0.0, -1.0, 0.0]])
    behav = torch.tensor([[0.0, -1.0, 0.0, -0.5]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w, m = truncated_is_weights(prox, behav, mask, cap=2.0)
    # exp(0) = 1; exp(1) = 2.718 → capped at 2; exp(−1) = 0.3679; masked token → 1 (no effect)
    assert torch.allclose(w, torch.tensor([[1.0, 2.0, math.exp(-1), 1.0]]))
    assert m["is_clip_frac"] == pytest.approx(1 / 3)  # one of the three valid tokens hit the cap
    assert m["is_weight_mean"] == pytest.approx((1 + 2 + math.exp(-1)) / 3)
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(prox, behav, mask, cap=0.5)


def test_correction_scales_the_on_policy_gradient_by_the_weights():
    # One update per batch: π_prox = π_θ, r = 1, so the PPO-clip loss on w·A is −(1/T) Σ w_t A_t
    # in value and its gradient w.r.t. log π_θ(y_t) is −w_t A_t / T (token mean over T = 3 tokens).
    logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    behav = torch.tensor([[-1.0, -3.0, 0.0]])  # prox/μ = 1, e (→ cap 2), e^−0.5
    mask = torch.ones(1, 3)
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    w, _ = truncated_is_weights(logp.detach(), behav, mask, cap=2.0)
    loss, _ = policy_loss(
        LossSpec("ppo_clip", 0.2, 0.2, None, "token_mean"), logp, logp.detach(), adv * w, mask
    )
    loss.backward()
    expected_w = torch.tensor([1.0, 2.0, math.exp(-0.5)])
    assert loss.item() == pytest.approx(-(1.0 + 2.0 - 2 * math.exp(-0.5)) / 3, abs=1e-6)
    assert torch.allclose(logp.grad[0], -(expected_w * adv[0]) / 3, atol=1e-6)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_staleness_schedule_is_bounded_and_every_needed_version_is_pushed(k):
    steps, start = 9, 2
    versions = [behaviour_version(t, k, start) for t in range(start, steps)]
    assert all(0 <= t - v <= k for t, v in zip(range(start, steps), versions, strict=True))
    assert versions == sorted(versions)  # the worker only moves forward
    # versions after `start` reach the worker only by pushes: each one a batch needs is pushed
    pushed = {v for v in range(start + 1, steps + 1) if push_needed(v, k, steps)}
    assert set(versions) - {start} <= pushed
    assert pushed <= set(versions)  # and nothing is pushed that no batch reads (the worker would hang)
    if k == 0:
        assert versions == list(range(start, steps))  # sync: each batch from the newest weights


def _pull_and_echo(port: int, out) -> None:
    chan = WeightChannel(WORKER, port, timeout_s=300)
    recv = [torch.zeros(3, 2), torch.zeros(5, dtype=torch.bfloat16), torch.zeros(4)]
    chan.pull(recv)
    chan.pull(recv[:1])  # a second push of only the first tensor, as after an update
    out.put([t.clone() for t in recv])


def test_two_process_gloo_weight_push_is_bit_exact():
    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    proc = ctx.Process(target=_pull_and_echo, args=(port, out), daemon=True)
    proc.start()
    chan = WeightChannel(TRAINER, port, timeout_s=300, peer_alive=proc.is_alive)
    sent = [torch.randn(3, 2), torch.randn(5).to(torch.bfloat16), torch.randn(4)]
    chan.push(sent)
    first = sent[0].clone()
    sent[0].add_(1.0)  # changing the weights after push() returns does not change what was sent
    chan.push(sent[:1])
    got = out.get(timeout=300)
    proc.join(timeout=30)
    chan.wait()
    assert torch.equal(got[0], first + 1.0) and got[1].dtype == torch.bfloat16
    assert torch.equal(got[1], sent[1]) and torch.equal(got[2], sent[2])


def test_a_worker_that_never_joins_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="exited before it joined"):
        WeightChannel(TRAINER, free_port(), timeout_s=300, peer_alive=lambda: False)


def _cfg(tiny_dir, run_dir, letters_reward, *extra):
    return load_config(
        overrides=[f"model.path={tiny_dir}", f"log.run_dir={run_dir}", *letters_reward, *QUICK_RUN,
                   "train.steps=3", "train.save_every=0", *extra]
    )  # fmt: skip


def test_async_with_staleness_0_is_the_sync_run_exactly(tiny_dir, tmp_path, letters_reward):
    """Same weights bit for bit after 3 steps: at k = 0 the worker samples batch t from the weights
    of update t − 1 (pushed exactly, fp32), with the sync run's generator stream, and a batch of
    staleness 0 takes the synchronous loss (no importance weight), so no operation differs."""
    sync = GRPOTrainer(_cfg(tiny_dir, tmp_path / "sync", letters_reward))
    runs = GRPOTrainer(
        _cfg(tiny_dir, tmp_path / "async", letters_reward, "rollout.mode=async", "rollout.staleness=0")
    )
    m_sync = [sync.train_step() for _ in range(3)]
    m_async = [runs.train_step() for _ in range(3)]
    assert m_sync[0]["reward/std_in_group"] > 0  # updates are not vacuous
    assert [m["rollout/staleness"] for m in m_async] == [0.0, 0.0, 0.0]
    assert [m["reward/total"] for m in m_async] == [m["reward/total"] for m in m_sync]
    a, b = dict(sync.policy.model.named_parameters()), dict(runs.policy.model.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert torch.equal(sync.sample_rng.get_state(), runs.sample_rng.get_state())  # checkpoints agree
    runs.engine.close()


def test_async_staleness_1_overlaps_logs_staleness_and_clip_rate(tiny_dir, tmp_path, letters_reward):
    t = GRPOTrainer(_cfg(tiny_dir, tmp_path / "a1", letters_reward, "rollout.mode=async", "algo.tis_cap=1.0"))
    metrics = [t.train_step() for _ in range(3)]
    assert [m["rollout/staleness"] for m in metrics] == [0.0, 1.0, 1.0]  # batch 1 from v0, batch 2 from v1
    assert "offpolicy/is_clip_frac" not in metrics[0]  # a fresh batch is not reweighted
    # cap 1: every token whose behaviour prob was below the current policy's is clipped; some are
    assert all(0.0 < m["offpolicy/is_clip_frac"] < 1.0 for m in metrics[1:])
    t.engine.close()


def test_async_resume_with_staleness_is_refused_in_one_line(tiny_dir, tmp_path, letters_reward):
    cfg = _cfg(tiny_dir, tmp_path, letters_reward, "rollout.mode=async")
    with pytest.raises(ConfigError, match=r"rollout.staleness=1 cannot resume exactly"):
        rollout_engine(None, cfg, torch.Generator(), step=4, position=8)
    with pytest.raises(ConfigError, match=r"algo\.dynamic_sampling"):
        _cfg(tiny_dir, tmp_path, letters_reward, "rollout.mode=async", "algo.dynamic_sampling=true")
