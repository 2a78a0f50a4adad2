"""The posterior under D's energy: what training's E-step and reconstruct's MAP (D's form) and
Langevin samples share.

    U(x) = ||A (x - y)||^2 / (2 s^2)  +  lambda * N * E(x),     E(x) = E_R softplus(-D(A R M(x) + n))

The first term is the Gaussian log-likelihood (A is a projection, so it only constrains the
measured frequencies); s^2 is the noise variance within the measured subspace (the noise of a
real tomogram is confined to it, so s^2 = sigma^2 / fraction measured). The second is the
learned energy, the non-saturating GAN loss of the discriminator on the candidate pushed
through the proxy A R x + n, after M brings it to y's signal power per shell as D's fakes are in
training (`model.signal_power`: D judges structure, the data term amplitude). `lambda` is per
voxel (N voxels per volume), so one value fits every tile size.

A module of its own so that training (`method.step`) does not import the MAP solver: the
workflow's code digests follow imports, and a change to reconstruction alone should not retrain.

Volumes are batches of tiles, (B, Z, Y, X) float32: x, y and every estimate share that shape,
and U and E come per volume, (B,).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..model.imaging import Wedge, apply_wedge, observe
from ..model.noise import NoiseModel
from ..model.rotations import random_tilt_axis_cube_indices
from ..model.signal_power import matched_to_signal

DIMS = (-3, -2, -1)


@functools.lru_cache(maxsize=64)
def data_variance(noise: NoiseModel, shape: tuple[int, int, int], wedge: Wedge) -> float:
    """s^2: the per-voxel noise variance within the measured subspace, for this tile shape."""
    return noise.measured_variance(shape, wedge)


def s2(noise: NoiseModel, x: torch.Tensor, wedge: Wedge) -> float:
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
    data = 0.5 * apply_wedge(x - y, wedge).pow(2).sum(DIMS) / s2(noise, x, wedge)
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
    eta = step * s2(noise, x, wedge)
    for _ in range(steps):
        _, g = grad_potential(x, y, d, wedge, noise, prior_weight, generator)
        xi = randn(x.shape, generator, x.device)
        x = x - eta * g + math.sqrt(2 * eta * temperature) * xi
    return x.detach()
