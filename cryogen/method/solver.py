"""Reconstruction's solver: the warm start g(y), K MAP steps from it, and posterior samples.

MAP's default energy is the network's own (`energy="denoiser"`, regularisation by denoising):
E(x) = x . (x - g(x)) / 2, whose gradient is x - g(x) for a denoiser g that is locally
homogeneous with a symmetric Jacobian. Its steps move only the missing wedge, the measured region
keeping g(y) (the data term as a constraint: g(y) is already the estimate of what the data
measured). g approximates a posterior mean and under-fills the wedge; looking again at its own
estimate, whose wedge now holds its fill, it adds to it (README, Quality: measured); the step is
larger at the wedge's low frequencies, where that fill is most reliable. The other
energy is D's (`energy="discriminator"`): gradient steps on the posterior U of `method.posterior`,
with the data as a penalty or as a discrepancy constraint. Posterior samples: Langevin steps on U
around the estimate; their spread is the per-voxel uncertainty, large where only the prior speaks
(inside the wedge).

Volumes are batches of tiles, (B, Z, Y, X) float32: x, y and every estimate share that shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model.imaging import FFT_DIMS, Wedge, apply_wedge, mask_tensor, radius_tensor, wedge_flips
from ..model.noise import NoiseModel
from ..model.signal_power import with_gains
from .posterior import DIMS, grad_potential, langevin, potential, s2


@dataclass(frozen=True)
class SolveConfig:
    # MAP steps after g(y): one under the denoiser's energy by default (README, Quality: it fills more of
    # the wedge than g(y) on both phantoms and the real crop); under D's energy they lower cc
    map_steps: int = 1
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
    # the energy of the MAP steps: "denoiser" (regularisation by denoising with g itself, steps in the
    # missing wedge only; `denoiser_steps`) or "discriminator" (D's, `method.posterior`, with `data_term`)
    energy: str = "denoiser"
    # the denoiser's steps: x <- x - P_wedge(step * r + low_step * S(r)), r = x - g(x), S a Gaussian
    # blur of low_sigma voxels: the whole step 0.3 at every frequency (measured best of 0.2-0.5 there),
    # and up to 1 (the full step, g(x)'s own low frequencies) below ~0.02 cycles/voxel, where g's
    # fill is most reliable (README, Quality: the step's spectrum)
    denoiser_step: float = 0.3
    denoiser_low_step: float = 0.7
    denoiser_low_sigma: float = 8.0
    # the missing wedge below this |k| (cycles per voxel) is filled from the coarse network at half
    # the resolution (`coarse_fill`), before the MAP steps; 0 turns it off. With a prior trained
    # without the coarse network, g fills it, below COARSE_CUTOFF_G at most (README, Quality: the
    # two-scale fill, the coarse network)
    coarse_cutoff: float = 0.15
    # the denoiser's steps use the two-scale denoiser: g(x) with the missing wedge below this |k|
    # from the coarse network (`TwoScaleDenoiser`), so the step keeps the coarse fill's lowest
    # band instead of pulling it back to g's; 0: g alone. Measured (README, Quality: the two-scale
    # denoiser): cc +0.02-0.04 on the phantoms and the demo, the real crop's tube unchanged at 0.03;
    # up to 0.15 the tube loses (0.847 -> 0.711), g's view of the walls' band is what rounds it
    denoiser_coarse_cutoff: float = 0.03
    # the networks see the tiles' missing wedge through Wiener gains (`wedge_signal_gains`):
    # its leaked signal kept, its noise left out, which g, trained on inputs whose wedge is empty,
    # would pass through as streaks along the beam (README, Quality: the wedge's noise)
    wedge_wiener: bool = True
    # the two-scale fill's band comes from the store's whole coarse level, restored once by the
    # coarse network and blended, not from each tile binned alone (`cryogen.restore.context`):
    # each tile's slowest variation is then estimated with its neighbours in view (README,
    # Quality: the context fill); off: per tile, as `coarse_fill`
    context_fill: bool = True


#: the two-scale fill's band when g itself fills it (priors without a coarse network): on 64^3
#: tiles each tile's depth profile; above it g, trained at full size, fills the binned tile worse
COARSE_CUTOFF_G = 0.03


ENERGIES = ("denoiser", "discriminator")


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


def warm_start_padded(g: torch.nn.Module, y: torch.Tensor, wedge: Wedge, flips: int = 1) -> torch.Tensor:
    """`warm_start` of y of any size: padded by reflection to a multiple of what g needs
    (`g.multiple`), then cropped back (a binned tile, or a tile's part inside the volume)."""
    shape = tuple(y.shape[-3:])
    multiple = int(getattr(g, "multiple", 1))
    pad = [(-n) % multiple for n in shape]
    if any(pad):
        y = F.pad(y.unsqueeze(1), (0, pad[2], 0, pad[1], 0, pad[0]), mode="reflect").squeeze(1)
    return warm_start(g, y, wedge, flips)[..., : shape[0], : shape[1], : shape[2]]


class CoarseInput(torch.nn.Module):
    """The coarse network seen from a full-size store's tiles: `coarse_fill` bins a tile normalised
    by the full-size store's statistics, while the coarse network learned on the coarse level's
    (the binned data have less noise, so a smaller std); `full` and `coarse` are the two stores'
    statistics ("mean", "std"), and the input and output are carried between the two units."""

    def __init__(self, net: torch.nn.Module, full: dict[str, float], coarse: dict[str, float]) -> None:
        super().__init__()
        self.net = net
        self.multiple = int(getattr(net, "multiple", 1))
        self.scale = float(full["std"]) / float(coarse["std"])
        self.shift = (float(full["mean"]) - float(coarse["mean"])) / float(coarse["std"])

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return (self.net(y * self.scale + self.shift) - self.shift) / self.scale


class TwoScaleDenoiser(torch.nn.Module):
    """The denoiser of the MAP steps: g(x) with its missing wedge below `cutoff` taken from
    `coarse` (the coarse network seen through `CoarseInput`) applied to x binned 2x, as the warm
    start's two-scale fill takes it from y (`coarse_fill`)."""

    def __init__(self, g: torch.nn.Module, coarse: torch.nn.Module, wedge: Wedge, cutoff: float) -> None:
        super().__init__()
        self.g, self.coarse, self.wedge, self.cutoff = g, coarse, wedge, cutoff
        self.multiple = int(getattr(g, "multiple", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return coarse_fill(self.coarse, x, self.g(x), self.wedge, self.cutoff)


def map_denoiser(g: torch.nn.Module, coarse: torch.nn.Module, wedge: Wedge, cfg: SolveConfig) -> torch.nn.Module:
    """The denoiser of the MAP steps: `TwoScaleDenoiser` below min(denoiser_coarse_cutoff,
    coarse_cutoff) (`--coarse-cutoff 0` turns the coarse network off in the steps too), else g."""
    band = min(cfg.denoiser_coarse_cutoff, cfg.coarse_cutoff)
    return TwoScaleDenoiser(g, coarse, wedge, band) if band > 0 else g


#: shells of the wedge's Wiener gains (`wedge_signal_gains`): two coefficients wide on a 64^3 tile
WEDGE_SHELLS = 16


def wedge_signal_gains(
    y: torch.Tensor, wedge: Wedge, noise: NoiseModel, shells: int = WEDGE_SHELLS, seed: int = 0
) -> torch.Tensor:
    """(shells,) Wiener gains for what tiles y, (B, Z, Y, X), hold in their missing wedge: per
    shell of |k| (0 to Nyquist, the corners in the last), the share of their wedge power that is
    not noise, 1 - P_noise / P_y, in [0, 1] and non-increasing in |k| (the signal's share falls
    with frequency). A tomogram's wedge is not empty: back-projection and the tile's crop leak
    signal into it, and noise lies there too; g, trained on inputs whose wedge is empty, passes
    what it holds through nearly unchanged, the leaked signal usefully, the noise as streaks along
    the beam (README, Quality: the wedge's noise). The noise's power is the model's drawn on a
    grid twice the tiles' and cropped to them, so that both sides carry the crop's leakage
    (measured against the whole volume's spectrum instead, the demo's leaked signal was taken for
    noise). Shells without wedge coefficients get 1 before the running minimum."""
    missing = mask_tensor(y.shape, wedge, y.device) == 0
    shell = (radius_tensor(y.shape, y.device) / 0.5 * shells).long().clamp(max=shells - 1)[missing]
    counts = torch.zeros(shells, dtype=torch.float64, device=y.device).index_add(
        0, shell, torch.ones_like(shell, dtype=torch.float64)
    )

    def power(v: torch.Tensor) -> torch.Tensor:
        p = torch.fft.rfftn(v, dim=FFT_DIMS).abs().pow(2).mean(0)[missing].double()
        return p.new_zeros(shells).index_add(0, shell, p) / counts.clamp(min=1)

    n = tuple(int(s) for s in y.shape[-3:])
    draw = noise.sample(
        (min(y.shape[0], 4), *(2 * s for s in n)), wedge, torch.Generator().manual_seed(seed), y.device
    )[..., : n[0], : n[1], : n[2]]
    p_y, p_n = power(y), power(draw)
    share = torch.where((counts > 0) & (p_y > 0), 1.0 - p_n / p_y.clamp(min=1e-30), torch.ones_like(p_y))
    return torch.cummin(share.clamp(0.0, 1.0), dim=0).values.float()


def in_wedge_with_gains(y: torch.Tensor, gains: torch.Tensor, wedge: Wedge) -> torch.Tensor:
    """y, (B, Z, Y, X), with its missing wedge filtered by per-shell gains (`wedge_signal_gains`,
    applied as `signal_power.with_gains` applies them) and its measured region as it was."""
    measured = apply_wedge(y, wedge)
    return measured + with_gains(y - measured, gains)


def coarse_fill(
    g: torch.nn.Module, y: torch.Tensor, x0: torch.Tensor, wedge: Wedge, cutoff: float, flips: int = 1
) -> torch.Tensor:
    """x0 (B, Z, Y, X) with its missing wedge below |k| = `cutoff` (cycles per voxel) taken from g
    applied to y binned 2x (averaged over `flips` like g(y)) and upsampled; g is the coarse
    network (`CoarseInput`), trained on the binned data, or, for priors without one, g itself.
    At half the resolution g's receptive field spans the whole tile and the binned data are less
    noisy, so it estimates the wedge's low frequencies better than g(y): on the tilt-series
    benchmark most of the wedge's power lies below 0.06 cycles/voxel (README, Quality: the
    two-scale fill, the coarse network). The measured region and the rest of the wedge keep x0. Tile edges
    must be even; a binned tile that is not a multiple of what g needs is padded by reflection
    and cropped. Where the band holds no coefficient of the tile (cutoff 0, or tiles of 32 or less
    at 0.03) x0 is returned and g not run."""
    if cutoff <= 0:
        return x0
    shape = tuple(y.shape[-3:])
    low_wedge = (1.0 - mask_tensor(y.shape, wedge, y.device)) * (radius_tensor(y.shape, y.device) < cutoff)
    if not bool(low_wedge.any()):
        return x0
    if any(n % 2 for n in shape):
        raise ValueError(f"the coarse fill needs even tile edges, not {shape}")
    fill = warm_start_padded(g, F.avg_pool3d(y.unsqueeze(1), 2).squeeze(1), wedge, flips)
    fill = F.interpolate(fill.unsqueeze(1), scale_factor=2, mode="trilinear", align_corners=False).squeeze(1)
    return with_low_wedge(x0, fill, wedge, cutoff)


def with_low_wedge(x0: torch.Tensor, fill: torch.Tensor, wedge: Wedge, cutoff: float) -> torch.Tensor:
    """x0 (B, Z, Y, X) with its missing wedge below |k| = `cutoff` taken from `fill` (the same
    shape): the two-scale fill's one exchange of bands, whatever made the fill."""
    low_wedge = (1.0 - mask_tensor(x0.shape, wedge, x0.device)) * (radius_tensor(x0.shape, x0.device) < cutoff)
    change = torch.fft.rfftn(fill - x0, dim=FFT_DIMS) * low_wedge
    return x0 + torch.fft.irfftn(change, s=tuple(x0.shape[-3:]), dim=FFT_DIMS)


def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x, (B, Z, Y, X), blurred by a Gaussian of `sigma` voxels along each of the last three axes
    (separable, truncated at 3 sigma, mirrored at the edges: a tile's opposite faces do not bleed
    into each other as they would in a Fourier filter). sigma 0 returns x itself. (Here, not in
    model.imaging, which training imports: the workflow's code digests follow imports.)"""
    if sigma <= 0:
        return x
    reach = math.ceil(3 * sigma)
    taps = torch.arange(-reach, reach + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    out = x
    for dim in (-3, -2, -1):
        n = out.shape[dim]
        r = min(reach, n - 1)  # reflection needs the pad below the axis's length
        k = kernel[reach - r : reach + r + 1]
        moved = out.movedim(dim, -1)
        rows = F.pad(moved.reshape(-1, 1, n), (r, r), mode="reflect")
        out = F.conv1d(rows, (k / k.sum()).view(1, 1, -1)).reshape(moved.shape).movedim(-1, dim)
    return out


def denoiser_steps(
    x0: torch.Tensor, g: torch.nn.Module, wedge: Wedge, cfg: SolveConfig
) -> tuple[torch.Tensor, list[float]]:
    """`cfg.map_steps` steps of MAP under the denoiser's energy E(x) = x . (x - g(x)) / 2 from the
    warm start x0 = g(y), (B, Z, Y, X): x <- x - P_wedge(step r + low_step S(r)) with r = x - g(x),
    E's gradient, g averaged over `cfg.flips` flips as in g(y), and S a Gaussian blur (a
    preconditioner: the step is larger where g's fill is most reliable, at low frequencies, and
    the residual's high frequencies, g's least reliable fill, move less). Only the missing wedge
    moves: the measured region keeps x0's values. Returns the estimate and E's mean per voxel
    before each step (no gradient is taken: E's gradient is the denoiser's residual)."""
    x = x0.detach()
    trace = []
    with torch.no_grad():
        for _ in range(cfg.map_steps):
            residual = x - warm_start(g, x, wedge, cfg.flips)
            trace.append(float((x * residual).mean() / 2))
            step = cfg.denoiser_step * residual
            if cfg.denoiser_low_step:
                step = step + cfg.denoiser_low_step * gaussian_smooth(residual, cfg.denoiser_low_sigma)
            x = x - (step - apply_wedge(step, wedge))
    return x, trace


def map_estimate(
    x0: torch.Tensor,
    y: torch.Tensor,
    d: torch.nn.Module,
    wedge: Wedge,
    noise: NoiseModel,
    cfg: SolveConfig,
    generator: torch.Generator | None = None,
    g: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """K MAP steps from the warm start x0, (B, Z, Y, X) like y: under the denoiser's energy
    (`denoiser_steps`, which needs g) or gradient steps on U with D's; returns the estimate (same
    shape) and the energy's mean after each step."""
    if cfg.energy not in ENERGIES:
        raise ValueError(f"energy must be one of {', '.join(ENERGIES)}, not {cfg.energy!r}")
    if cfg.energy == "denoiser":
        if g is None:
            raise ValueError("the denoiser energy needs the network g")
        return denoiser_steps(x0, g, wedge, cfg)
    if cfg.data_term not in ("penalty", "discrepancy"):
        raise ValueError(f"data_term must be penalty or discrepancy, not {cfg.data_term!r}")
    eta = cfg.step * s2(noise, x0, wedge)
    x = x0.detach()
    trace = []
    for _ in range(cfg.map_steps):
        u, grad = grad_potential(x, y, d, wedge, noise, cfg.prior_weight, generator, cfg.rotations_per_energy)
        trace.append(float(u.mean()))
        if cfg.data_term == "discrepancy":
            grad = grad - apply_wedge(x - y, wedge) / s2(noise, x, wedge)  # the prior's part alone
            x = within_noise_of(x - eta * grad, y, wedge, noise)
        else:
            x = x - eta * grad
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
