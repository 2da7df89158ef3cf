"""The denoising step as a Gaussian action (``vlmrl.gen.sde``): reductions to the ODE, log-probs
by hand, and that the stochastic samplers keep the flow's marginals."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from vlmrl.gen.sde import (
    ddim_mean_std,
    flow_sde_mean_std,
    gaussian_logprob,
    ode_step,
    sample_step,
    step_mean_kl,
    step_mean_std,
    timesteps,
)


def _xv(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(
        3, 3, 4, 4, generator=g, dtype=torch.float64
    )


@pytest.mark.parametrize(("t", "s"), [(1.0, 0.9), (0.6, 0.4), (0.3, 0.0)])
def test_sde_at_a0_and_ddim_at_eta0_are_the_euler_step(t, s):
    x, v = _xv()
    euler = ode_step(x, v, t, s)
    mean, std = flow_sde_mean_std(x, v, t, s, a=0.0, t_max=0.95)
    assert float(std) == 0.0 and torch.allclose(mean, euler, atol=1e-12)
    mean, std = ddim_mean_std(x, v, t, s, eta=0.0)
    assert float(std) == 0.0 and torch.allclose(mean, euler, atol=1e-12)
    assert torch.equal(sample_step(mean, std), mean)  # std 0: no draw


def test_sde_step_by_hand():
    # x = 1, v = 2, t = 0.5 → s = 0.25, a = 0.5: σ_t = 0.5·sqrt(0.5/0.5) = 0.5, dt = -0.25,
    # mean = 1 - 0.25·[2 + 0.25/(2·0.5)·(1 + 0.5·2)] = 1 - 0.25·(2 + 0.25·2) = 0.375,
    # std = 0.5·sqrt(0.25) = 0.25
    x, v = torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 2.0)
    mean, std = flow_sde_mean_std(x, v, 0.5, 0.25, a=0.5, t_max=0.95)
    assert mean.item() == pytest.approx(0.375) and float(std) == pytest.approx(0.25)
    # at t = 1 the σ factor uses t_max: σ = 0.5·sqrt(0.8/0.2) = 1, std = 1·sqrt(0.2)
    _, std = flow_sde_mean_std(x, v, 1.0, 0.8, a=0.5, t_max=0.8)
    assert float(std) == pytest.approx(math.sqrt(0.2))


def test_ddim_by_hand():
    # x = 1, v = 2, t = 0.5 → s = 0.25, η = 1: x0̂ = 0, ε̂ = 2; α_{t|s} = 0.5/0.75 = 2/3,
    # σ²_{t|s} = 0.25 - (4/9)·0.0625 = 0.2222…, c² = 0.2222…·0.0625/0.25 = 0.0555…,
    # mean = 0.75·0 + sqrt(0.0625 - 0.0555…)·2 = 2·sqrt(1/144) = 1/6
    x, v = torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 2.0)
    mean, std = ddim_mean_std(x, v, 0.5, 0.25, eta=1.0)
    assert mean.item() == pytest.approx(1 / 6) and float(std) ** 2 == pytest.approx(1 / 18)
    _, std = ddim_mean_std(x, v, 0.25, 0.0, eta=1.0)
    assert float(std) == 0.0  # the last step is deterministic


def test_logprob_of_the_sampled_step_is_the_gaussian_density_by_hand():
    # x = [0.5, -1], μ = 0, σ = 0.5: per dimension -(x²)/(2·0.25) - log 0.5 - ½ log 2π
    x = torch.tensor([0.5, -1.0]).reshape(1, 1, 1, 2)
    mean, std = torch.zeros_like(x), torch.tensor(0.5)
    c = -math.log(0.5) - 0.5 * math.log(2 * math.pi)
    per = [-0.25 / 0.5 + c, -1.0 / 0.5 + c]
    assert gaussian_logprob(x, mean, std, "sum").item() == pytest.approx(sum(per), abs=1e-6)
    assert gaussian_logprob(x, mean, std).item() == pytest.approx(sum(per) / 2, abs=1e-6)
    # a real step: the draw's log-prob equals torch.distributions.Normal's, dimension-averaged
    x, v = _xv(1)
    for kind in ("sde", "ddim"):
        mean, std = step_mean_std(kind, x, v, 0.7, 0.6, a=0.7, eta=1.0)
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
        xs = sample_step(mean, std, noise=z)
        ref = torch.distributions.Normal(mean, std).log_prob(xs).flatten(1).mean(1)
        assert torch.allclose(gaussian_logprob(xs, mean, std), ref, atol=1e-10)
    with pytest.raises(ValueError, match="std must be > 0"):
        gaussian_logprob(x, x, torch.tensor(0.0))


def _marginal_after(kind: str, steps: int, t_end: float, x0: float = 0.5, n: int = 20000):
    """Run ``kind`` from t = 1 to ``t_end`` with the exact velocity of a point mass at ``x0``
    (``v(x, t) = (x - x0) / t``); the flow's marginal there is N((1 - t) x0, t²)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    ts = [1.0 - (1.0 - t_end) * k / steps for k in range(steps + 1)]
    for t, s in itertools.pairwise(ts):
        v = (x - x0) / t
        mean, std = step_mean_std(kind, x, v, t, s, a=0.7, eta=1.0, t_max=ts[1])
        x = sample_step(mean, std, generator=g)
    return x.mean().item(), x.std().item()


@pytest.mark.parametrize(("kind", "steps", "tol"), [("ddim", 10, 0.02), ("sde", 400, 0.03)])
def test_stochastic_samplers_keep_the_flow_marginals(kind, steps, tol):
    mean, std = _marginal_after(kind, steps, t_end=0.3)
    assert mean == pytest.approx(0.7 * 0.5, abs=tol) and std == pytest.approx(0.3, abs=tol)


def test_timesteps_and_kl():
    assert timesteps(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    shifted = timesteps(4, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and shifted[2] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="at least 1"):
        timesteps(0)
    m = torch.zeros(2, 1, 1, 2)
    r = torch.tensor([[1.0, 3.0], [0.0, 0.0]]).reshape(2, 1, 1, 2)
    # ||μ - μ_ref||² averaged over 2 dims / (2·0.25): (1 + 9)/2/0.5 = 10
    assert step_mean_kl(m, r, torch.tensor(0.5)).tolist() == pytest.approx([10.0, 0.0])
    with pytest.raises(ValueError, match="sampler"):
        step_mean_std("euler", m, m, 0.5, 0.4)


@pytest.mark.parametrize("kind", ["sde", "ddim", "ode"])
def test_per_sample_times_equal_one_call_per_sample(kind):
    """Training revisits each sample at its own step: ``t``, ``s`` as ``[B]`` tensors."""
    x, v = _xv(3)
    ts, ss = [1.0, 0.5, 0.2], [0.9, 0.3, 0.0]
    mean, std = step_mean_std(kind, x, v, torch.tensor(ts), torch.tensor(ss), t_max=0.9)
    for i, (t, s) in enumerate(zip(ts, ss, strict=True)):
        m1, s1 = step_mean_std(kind, x[i : i + 1], v[i : i + 1], t, s, t_max=0.9)
        assert torch.allclose(mean[i : i + 1], m1, atol=1e-12)
        assert torch.allclose(std.reshape(-1)[i if std.dim() else 0], s1.reshape(()), atol=1e-12)


@pytest.mark.parametrize("kind", ["sde", "ddim"])
def test_stochastic_steps_leave_the_rest_of_the_chain_on_the_ode(kind):
    """``stochastic_steps=2``: the first two transitions are the full sampler's (the same draws from
    the same generator), every later one is the Euler step with log-prob 0 and is not trained on."""
    from vlmrl.gen.chain import SamplerSpec, sample_chain

    class Linear:  # a velocity field with no parameters: v = 0.5·x + t
        def velocity(self, x, t, cond):
            return 0.5 * x + t.reshape(-1, 1, 1, 1)

    times = timesteps(5)
    x1 = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    cond = torch.zeros(3, 3, dtype=torch.long)
    full = sample_chain(Linear(), cond, x1, times, SamplerSpec(kind), torch.Generator().manual_seed(1))
    fast = sample_chain(
        Linear(), cond, x1, times, SamplerSpec(kind, stochastic_steps=2), torch.Generator().manual_seed(1)
    )
    assert fast.stochastic.tolist() == [True, True, False, False, False]
    assert torch.equal(fast.latents[:, :3], full.latents[:, :3])
    assert torch.equal(fast.logp[:, :2], full.logp[:, :2]) and bool((fast.logp[:, 2:] == 0).all())
    for k in range(2, 5):
        x, t, s = fast.latents[:, k], times[k], times[k + 1]
        torch.testing.assert_close(fast.latents[:, k + 1], ode_step(x, 0.5 * x + t, t, s))
