"""Denoising steps as Gaussian actions: the rectified-flow ODE, Flow-GRPO's SDE, DDIM-η (DDPO).

Convention (rectified flow, as SD3 / FLUX): ``x_t = (1 - t)·x0 + t·ε`` for ``t ∈ [0, 1]``, the
model predicts the velocity ``v = ε - x0``, and sampling runs from ``t = 1`` (noise) to ``t = 0``
(image). From ``x`` and ``v`` at ``t``: ``x0̂ = x - t·v`` and ``ε̂ = x + (1 - t)·v``.

A step from ``t`` to ``s < t`` (``dt = s - t < 0``) returns ``(x_s, mean, std)``; ``x_s`` is a
draw from ``N(mean, std²·I)``, so an RL policy over the chain has one Gaussian action per step
and :func:`gaussian_logprob` gives its log-probability. Three samplers:

- **ODE (Euler):** ``mean = x + dt·v``, ``std = 0`` — evaluation.
- **Flow-GRPO SDE** (Liu et al. 2025, arXiv:2505.05470, Eq. 9–12): the reverse-time SDE with the
  ODE's marginals, ``dx = [v - (σ_t²/2)·∇log p_t(x)]·dt + σ_t·dw`` with score
  ``∇log p_t = -ε̂/t`` and ``σ_t = a·sqrt(t / (1 - t))``, discretised by Euler–Maruyama::

      mean = x + dt·[v + σ_t²/(2t)·(x + (1 - t)·v)],     std = σ_t·sqrt(-dt).

  ``a`` is the noise level (paper: 0.7). At ``t = 1`` the factor ``t/(1-t)`` is infinite; as in
  the paper's code the first step uses ``t_max`` (the grid's second point) in it instead.
- **DDIM-η** (Song et al. 2021; DDPO, Black et al. 2023, arXiv:2305.13301, samples with DDIM
  η = 1) on the flow schedule ``α_t = 1 - t``, noise scale ``σ_t = t``. With
  ``α_{t|s} = α_t / α_s`` and ``σ²_{t|s} = σ_t² - α²_{t|s}·σ_s²`` (the forward transition's
  variance), the posterior ``q(x_s | x_t, x0)`` has variance ``σ²_{t|s}·σ_s² / σ_t²``, and::

      c² = η²·σ²_{t|s}·σ_s² / σ_t²,   mean = α_s·x0̂ + sqrt(σ_s² - c²)·ε̂,   std = c.

  η = 1 is ancestral (DDPM) sampling, η = 0 deterministic DDIM. The last step (``s = 0``) has
  ``c = 0``: it is deterministic, carries no log-prob, and the trainer leaves it out.

At ``a = 0`` and at ``η = 0`` both stochastic steps equal the Euler step exactly:
``(1 - s)(x - t v) + s(x + (1 - t) v) = x + (s - t) v``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def timesteps(n: int, shift: float = 1.0) -> list[float]:
    """``n + 1`` times from 1 to 0 for ``n`` steps: uniform ``u_k = 1 - k/n``, then SD3's shift
    ``t = shift·u / (1 + (shift - 1)·u)`` (``shift > 1`` spends more steps at high noise).

    >>> timesteps(4)
    [1.0, 0.75, 0.5, 0.25, 0.0]
    """
    if n < 1:
        raise ValueError(f"timesteps: need at least 1 step, got {n}")
    if shift <= 0:
        raise ValueError(f"timesteps: shift must be > 0, got {shift}")
    us = [1.0 - k / n for k in range(n + 1)]
    return [shift * u / (1.0 + (shift - 1.0) * u) for u in us]


Time = Tensor | float


def _bcast(t: Time, x: Tensor) -> Tensor:
    """A time (scalar or ``[B]``) as ``[]`` or ``[B, 1, 1, 1]``, to broadcast against ``x [B, C, H, W]``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.reshape(-1, *([1] * (x.dim() - 1))) if t.dim() else t


def ode_step(x: Tensor, v: Tensor, t: Time, s: Time) -> Tensor:
    """Euler step of ``dx/dt = v`` from ``t`` to ``s``: ``x + (s - t)·v``."""
    return x + (_bcast(s, x) - _bcast(t, x)) * v


def flow_sde_mean_std(
    x: Tensor, v: Tensor, t: Time, s: Time, a: float, t_max: float
) -> tuple[Tensor, Tensor]:
    """Flow-GRPO's step ``t → s``: ``(mean [B,C,H,W], std [] or [B,1,1,1])`` (module docstring).

    ``t`` and ``s`` are floats or per-sample ``[B]`` (training revisits each sample at its own
    step). ``t_max`` replaces ``t`` inside ``sqrt(t / (1 - t))`` where ``t = 1``.
    """
    t, s = _bcast(t, x), _bcast(s, x)
    dt = s - t  # < 0
    tt = torch.where(t >= 1.0, torch.full_like(t, t_max), t)
    sigma = a * torch.sqrt(tt / (1.0 - tt))
    mean = x + dt * (v + sigma**2 / (2.0 * t) * (x + (1.0 - t) * v))  # [B, C, H, W]
    return mean, sigma * torch.sqrt(-dt)


def ddim_mean_std(x: Tensor, v: Tensor, t: Time, s: Time, eta: float) -> tuple[Tensor, Tensor]:
    """DDIM-η step ``t → s`` on the flow schedule: ``(mean [B,C,H,W], std [] or [B,1,1,1])``."""
    t, s = _bcast(t, x), _bcast(s, x)
    x0 = x - t * v  # [B, C, H, W]
    eps = x + (1.0 - t) * v
    a_t, a_s = 1.0 - t, 1.0 - s  # a_s > 0 as s < 1
    var_ts = (t**2 - (a_t / a_s) ** 2 * s**2).clamp_min(0.0)  # σ²_{t|s}, ≥ 0 for s < t
    c2 = eta**2 * var_ts * s**2 / t**2
    mean = a_s * x0 + torch.sqrt((s**2 - c2).clamp_min(0.0)) * eps
    return mean, torch.sqrt(c2)


def step_mean_std(
    kind: str,
    x: Tensor,
    v: Tensor,
    t: Time,
    s: Time,
    *,
    a: float = 0.7,
    eta: float = 1.0,
    t_max: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """The step's Gaussian for sampler ``kind`` (``sde`` | ``ddim`` | ``ode``)."""
    if kind == "sde":
        return flow_sde_mean_std(x, v, t, s, a, t_max)
    if kind == "ddim":
        return ddim_mean_std(x, v, t, s, eta)
    if kind == "ode":
        return ode_step(x, v, t, s), torch.zeros((), dtype=x.dtype, device=x.device)
    raise ValueError(f"sampler {kind!r} is not one of ['sde', 'ddim', 'ode']")


def sample_step(
    mean: Tensor, std: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """``x_s = mean + std·z``, ``z ~ N(0, I)`` (``noise`` given, or drawn from ``generator``);
    ``mean`` itself where every ``std`` is 0 (nothing is drawn, so the generator does not move)."""
    if not bool((std > 0).any()):
        return mean
    if noise is None:
        gdev = generator.device if generator is not None else mean.device  # draw where the generator lives
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=gdev).to(mean.device)
    return mean + std * noise


def gaussian_logprob(x: Tensor, mean: Tensor, std: Tensor, reduce: str = "mean") -> Tensor:
    """``log N(x; mean, std²·I)`` per sample ``[B]``: the per-dimension terms
    ``-(x - μ)²/(2σ²) - log σ - ½·log 2π``, averaged (``mean``, Flow-GRPO's and DDPO's choice: it
    keeps a step's log-ratio at the scale of one dimension, so a clip range of ~1e-4…1e-3 is
    meaningful for a 3×32×32 action) or summed (``sum``: the true joint density)."""
    if bool((std <= 0).any()):
        raise ValueError("gaussian_logprob: std must be > 0 (a deterministic step has no log-prob)")
    std = _bcast(std, x)
    per = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)  # [B, C, H, W]
    dims = tuple(range(1, x.dim()))
    if reduce == "mean":
        return per.mean(dim=dims)
    if reduce == "sum":
        return per.sum(dim=dims)
    raise ValueError(f"gaussian_logprob: reduce must be 'mean' or 'sum', got {reduce!r}")


def step_mean_kl(mean: Tensor, ref_mean: Tensor, std: Tensor) -> Tensor:
    """KL between the policy's and the reference's step Gaussians, which share ``std``:
    ``KL = ||μ - μ_ref||² / (2σ²)``, averaged over dimensions like :func:`gaussian_logprob` ``[B]``."""
    return ((mean - ref_mean) ** 2).mean(dim=tuple(range(1, mean.dim()))) / (2 * (std**2).flatten())
