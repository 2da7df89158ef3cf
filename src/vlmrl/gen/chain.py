"""Sampling a denoising chain with per-step log-probs, and re-scoring its steps under the policy.

A chain of ``T`` steps on the grid ``t_0 = 1 > t_1 > … > t_T = 0`` stores every state
``x_{t_0} … x_{t_T}`` and the log-probability of each transition under the sampler's Gaussian
(``gen/sde.py``). Training revisits transition ``k`` of sample ``i`` — ``x_{t_k} → x_{t_{k+1}}`` —
under the current weights (:func:`step_logprob`), which is what turns a generator into a policy:
the same clipped-ratio loss as for text, with the chain's steps in place of tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vlmrl.gen.sde import gaussian_logprob, sample_step, step_mean_kl, step_mean_std


@dataclass
class Chain:
    """One batch of sampled chains (``N`` images, ``T`` steps)."""

    cond: Tensor  # [N, 3] prompt ids
    latents: Tensor  # [N, T + 1, C, H, W]: x at t_0 = 1 (noise) … t_T = 0 (image = policy.decode(x))
    logp: Tensor  # [N, T] sampler log-prob of each transition (0 where deterministic)
    stochastic: Tensor  # [T] bool: transitions with std > 0 (the ones trained on)
    times: list[float]  # [T + 1]


@dataclass(frozen=True)
class SamplerSpec:
    """Which step and its noise: ``kind`` ``sde`` (``a``), ``ddim`` (``eta``) or ``ode``.

    ``stochastic_steps`` N > 0 makes only the chain's first N steps stochastic and the rest
    Euler ODE steps (Flow-GRPO-Fast / MixGRPO's idea). The reward's spread within a group then
    comes from those N steps alone (and from the initial noise, unless a group shares it), so the
    log-prob gradient of a trained step is not drowned by the other steps' noise; the first
    steps (high noise) are where layout, count and position are decided. 0: every step."""

    kind: str
    a: float = 0.7
    eta: float = 1.0
    stochastic_steps: int = 0

    def mean_std(self, x: Tensor, v: Tensor, t, s, t_max: float) -> tuple[Tensor, Tensor]:
        return step_mean_std(self.kind, x, v, t, s, a=self.a, eta=self.eta, t_max=t_max)

    def at(self, k: int) -> SamplerSpec:
        """The spec of step ``k``: this one, or the ODE past ``stochastic_steps``."""
        if self.stochastic_steps and k >= self.stochastic_steps:
            return SamplerSpec("ode")
        return self


def initial_noise(
    n: int, shape: tuple[int, ...], group: int, same: bool, generator: torch.Generator
) -> Tensor:
    """``x_1`` for ``n`` images ``[n, *shape]``; with ``same``, one draw per group of ``group``."""
    if not same:
        return torch.randn((n, *shape), generator=generator)
    per = torch.randn((n // group, *shape), generator=generator)
    return per.repeat_interleave(group, dim=0)


@torch.no_grad()
def sample_chain(
    policy, cond: Tensor, x1: Tensor, times: list[float], spec: SamplerSpec, generator: torch.Generator
) -> Chain:
    """Run the chain from ``x1`` along ``times``; every draw comes from ``generator``."""
    n, steps = x1.shape[0], len(times) - 1
    latents = [x1]
    logp = torch.zeros(n, steps, device=x1.device)
    stochastic = torch.zeros(steps, dtype=torch.bool)
    x = x1
    for k in range(steps):
        t, s = times[k], times[k + 1]
        v = policy.velocity(x, torch.full((n,), t, device=x.device), cond)  # [N, C, H, W]
        mean, std = spec.at(k).mean_std(x, v, t, s, t_max=times[1])
        x = sample_step(mean, std, generator=generator)
        if bool((std > 0).all()):
            stochastic[k] = True
            logp[:, k] = gaussian_logprob(x, mean, std)
        latents.append(x)
    return Chain(cond, torch.stack(latents, 1), logp, stochastic, list(times))


def step_logprob(
    policy, chain: Chain, rows: Tensor, k: Tensor, spec: SamplerSpec, ref=None
) -> tuple[Tensor, Tensor | None]:
    """Log-prob ``[R]`` of transition ``k[r]`` of chain row ``rows[r]`` under ``policy`` (with
    gradients), and the KL ``[R]`` of its step Gaussian to ``ref``'s (no gradients), or None."""
    x = chain.latents[rows, k]  # [R, C, H, W]
    times = torch.tensor(chain.times, device=x.device)
    k = k.to(x.device)
    t, s = times[k], times[k + 1]  # [R]
    x_next = chain.latents[rows, k + 1]
    cond = chain.cond[rows]
    mean, std = spec.mean_std(x, policy.velocity(x, t, cond), t, s, t_max=chain.times[1])
    logp = gaussian_logprob(x_next, mean, std)
    kl = None
    if ref is not None:
        with torch.no_grad():
            ref_mean, _ = spec.mean_std(x, ref.velocity(x, t, cond), t, s, t_max=chain.times[1])
        kl = step_mean_kl(mean, ref_mean, std)
    return logp, kl
