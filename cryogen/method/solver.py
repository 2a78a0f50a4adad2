"""The posterior and the MAP solver.

    U(x) = ||A (x - y)||^2 / (2 s^2)  +  lambda * N * E(x),     E(x) = E_R softplus(-D(A R M(x) + n))

The first term is the Gaussian log-likelihood (A is a projection, so it only constrains the
measured frequencies); s^2 is the noise variance within the measured subspace (the noise of a
real tomogram is confined to it, so s^2 = sigma^2 / fraction measured). The second is the
learned energy, the non-saturating GAN loss of the discriminator on the candidate pushed
through the proxy A R x + n, after M brings it to y's signal power per shell as D's fakes are in
training (`model.signal_power`: D judges structure, the data term amplitude). `lambda` is per voxel (N voxels per volume), so one value fits
every tile size. MAP: K gradient steps on U from g(y). Posterior samples: Langevin steps around
the MAP; their spread is the per-voxel uncertainty, large where only the prior speaks (inside
the wedge).

Volumes are batches of tiles, (B, Z, Y, X) float32: x, y and every estimate share that shape,
and U and E come per volume, (B,).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model.imaging import Wedge, apply_wedge, observe, wedge_flips
from ..model.noise import NoiseModel
from ..model.rotations import random_tilt_axis_cube_indices
from ..model.signal_power import matched_to_signal

DIMS = (-3, -2, -1)


@dataclass(frozen=True)
class SolveConfig:
    # MAP steps after g(y): 0 by default because, measured (README, Quality), they pull the estimate
    # back towards the noisy data: the learned energy is not yet strong enough to hold it
    map_steps: int = 0
    step: float = 0.05  # gradient step as a fraction of s^2 (the inverse of the data term's curvature)
    # lambda, per voxel: at 0.01 the prior's gradient is about as large as the data term's at the
    # warm start (measured with the default D; at 1 it is ~100x larger and wrecks the tile)
    prior_weight: float = 0.01
    # how MAP treats the data: "penalty" descends ||A(x - y)||^2 / 2s^2 + lambda E(x), which pulls the
    # measured region back towards the noisy y; "discrepancy" descends lambda E(x) alone and keeps
    # ||A x - y||^2 within the noise's expected energy (Morozov's discrepancy principle: the truth
    # satisfies it, and a denoised warm start is not re-noised)
    data_term: str = "penalty"
    samples: int = 0  # posterior samples for the uncertainty map (0: none)
    sample_steps: int = 4  # Langevin steps between samples
    rotations_per_energy: int = 1
    # g(y) averaged over this many axis flips that keep the wedge in place (1: g(y) alone; at most
    # 8, or 4 for an asymmetric tilt range): g is not exactly equivariant, and its errors differ
    # between flips (README, Quality: measured gain and cost)
    flips: int = 4


@functools.lru_cache(maxsize=64)
def data_variance(noise: NoiseModel, shape: tuple[int, int, int], wedge: Wedge) -> float:
    """s^2: the per-voxel noise variance within the measured subspace, for this tile shape."""
    return noise.measured_variance(shape, wedge)


def _s2(noise: NoiseModel, x: torch.Tensor, wedge: Wedge) -> float:
    return data_variance(noise, tuple(int(v) for v in x.shape[-3:]), wedge)


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Gaussian noise from `generator` (on its own device, so CPU seeds reproduce on any device)."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


def energy(
    d: torch.nn.Module,
    x: torch.Tensor,
    wedge: Wedge,
    noise: NoiseModel | None,
    generator: torch.Generator | None,
    n_rot: int = 1,
    data: torch.Tensor | None = None,
) -> torch.Tensor:
    """E(x) per volume, (B,) for x of (B, Z, Y, X): how unlike a real observation x looks once
    rotated, wedged and noised. With the observations `data` (like x), x is first brought to
    their signal power per shell, as D's fakes were in training (`signal_power`)."""
    if data is not None and noise is not None:
        x = matched_to_signal(x, data, wedge, noise)
    total = x.new_zeros(x.shape[0])
    for _ in range(n_rot):
        rot = random_tilt_axis_cube_indices(x.shape[0], wedge.tilt_axis, generator)
        total = total + F.softplus(-d(observe(x, wedge, noise, rot, generator)))
    return total / n_rot


def potential(
    x: torch.Tensor,
    y: torch.Tensor,
    d: torch.nn.Module,
    wedge: Wedge,
    noise: NoiseModel,
    prior_weight: float,
    generator: torch.Generator | None,
    n_rot: int = 1,
) -> torch.Tensor:
    """U(x) per volume, (B,), for x and y of (B, Z, Y, X) (negative log-posterior up to a constant)."""
    data = 0.5 * apply_wedge(x - y, wedge).pow(2).sum(DIMS) / _s2(noise, x, wedge)
    n = x[0].numel()
    if prior_weight == 0:
        return data
    return data + prior_weight * n * energy(d, x, wedge, noise, generator, n_rot, y)


def grad_potential(
    x: torch.Tensor,
    y: torch.Tensor,
    d: torch.nn.Module,
    wedge: Wedge,
    noise: NoiseModel,
    prior_weight: float,
    generator: torch.Generator | None,
    n_rot: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """U(x), (B,), and its gradient with respect to x, (B, Z, Y, X) like x and y."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        u = potential(x, y, d, wedge, noise, prior_weight, generator, n_rot)
        (g,) = torch.autograd.grad(u.sum(), x)
    return u.detach(), g


def langevin(
    x: torch.Tensor,
    y: torch.Tensor,
    d: torch.nn.Module,
    wedge: Wedge,
    noise: NoiseModel,
    prior_weight: float,
    steps: int,
    step: float,
    generator: torch.Generator | None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Unadjusted Langevin steps on U from x, (B, Z, Y, X) like y: x <- x - eta grad U + sqrt(2 eta T) xi,
    eta = step * s^2."""
    eta = step * _s2(noise, x, wedge)
    for _ in range(steps):
        _, g = grad_potential(x, y, d, wedge, noise, prior_weight, generator)
        xi = randn(x.shape, generator, x.device)
        x = x - eta * g + math.sqrt(2 * eta * temperature) * xi
    return x.detach()


def warm_start(g: torch.nn.Module, y: torch.Tensor, wedge: Wedge, flips: int = 1) -> torch.Tensor:
    """g(y), (B, Z, Y, X) like y, averaged over the first `flips` wedge-preserving axis flips
    (`imaging.wedge_flips`; fewer when the wedge has fewer): each flip shows g an input it could
    equally have been trained on, so the average keeps what they agree on."""
    if flips < 1:
        raise ValueError(f"flips must be at least 1, not {flips}")
    chosen = wedge_flips(wedge)[:flips]
    total = g(y)
    for dims in chosen[1:]:
        total = total + g(y.flip(dims)).flip(dims)
    return total / len(chosen)


def map_estimate(
    x0: torch.Tensor,
    y: torch.Tensor,
    d: torch.nn.Module,
    wedge: Wedge,
    noise: NoiseModel,
    cfg: SolveConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """K gradient steps on U from the warm start x0, (B, Z, Y, X) like y; returns the estimate (same
    shape) and the mean U after each step."""
    if cfg.data_term not in ("penalty", "discrepancy"):
        raise ValueError(f"data_term must be penalty or discrepancy, not {cfg.data_term!r}")
    eta = cfg.step * _s2(noise, x0, wedge)
    x = x0.detach()
    trace = []
    for _ in range(cfg.map_steps):
        u, g = grad_potential(x, y, d, wedge, noise, cfg.prior_weight, generator, cfg.rotations_per_energy)
        trace.append(float(u.mean()))
        if cfg.data_term == "discrepancy":
            g = g - apply_wedge(x - y, wedge) / _s2(noise, x, wedge)  # the prior's part alone
            x = within_noise_of(x - eta * g, y, wedge, noise)
        else:
            x = x - eta * g
    if cfg.map_steps:
        trace.append(
            float(potential(x, y, d, wedge, noise, cfg.prior_weight, generator, cfg.rotations_per_energy).mean())
        )
    return x.detach(), trace


def within_noise_of(x: torch.Tensor, y: torch.Tensor, wedge: Wedge, noise: NoiseModel) -> torch.Tensor:
    """x, (B, Z, Y, X), moved in the measured subspace just enough that ||A x - y||^2 is at most the
    noise's expected energy (N times its per-voxel variance); the missing wedge is left as it is."""
    n = x[0].numel()
    budget = noise.variance(tuple(int(v) for v in x.shape[-3:]), wedge) * n
    r = apply_wedge(x - y, wedge)
    norm2 = r.pow(2).sum(DIMS, keepdim=True)
    shrink = torch.clamp(torch.sqrt(budget / norm2.clamp(min=1e-30)), max=1.0)
    return x - r * (1 - shrink)


def posterior_std(
    x_map: torch.Tensor,
    y: torch.Tensor,
    d: torch.nn.Module,
    wedge: Wedge,
    noise: NoiseModel,
    cfg: SolveConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-voxel standard deviation, (B, Z, Y, X), of `cfg.samples` Langevin samples started at
    the MAP estimate x_map (B, Z, Y, X)."""
    x = x_map.detach()
    mean = torch.zeros_like(x)
    sq = torch.zeros_like(x)
    for _ in range(cfg.samples):
        x = langevin(x, y, d, wedge, noise, cfg.prior_weight, cfg.sample_steps, cfg.step, generator)
        mean += x
        sq += x * x
    mean /= cfg.samples
    return (sq / cfg.samples - mean * mean).clamp(min=0).sqrt()
