"""A candidate brought to the data's signal power, shell by shell: what D's fakes and the energy
are made from.

g(y) approximates the posterior mean, and a mean is smoother than any one plausible volume: at
the frequencies where the noise is as strong as the signal it keeps only part of the signal's
power. Re-observed, A R g(y) + n is then a blurred observation, and D tells the data from it by
that alone (on the real crop, blurring the real tiles with their noise power kept made D call
every one of them fake: README, What D tells the crop by). So D's fakes, and the candidates the
energy scores, are first filtered by a gain per shell of |k| that gives their measured part the
power of the data's signal there (the data's power less the noise model's), as a draw from the
posterior would have. The gains are measured, never learned, and depend on the candidate: the
match undoes any change of its overall scale, so the energy's gradient never asks for one (a
candidate's amplitude is the data term's business, its structure the prior's).
"""

from __future__ import annotations

import torch

from .imaging import FFT_DIMS, Wedge, mask_tensor, radius_tensor
from .noise import NoiseModel

#: shells of |k| from 0 to Nyquist (0.5 cycles/voxel) over which the gains are measured
SHELLS = 8
#: the largest gain: where the candidate holds almost nothing, the data's power is not made up
MAX_GAIN = 4.0


def signal_gains(
    x: torch.Tensor, y: torch.Tensor, wedge: Wedge, noise: NoiseModel, shells: int = SHELLS
) -> torch.Tensor:
    """(shells,) gains that bring the measured power of candidates x to that of the signal in
    the data y (both (B, Z, Y, X), pooled over the batch): sqrt((P_y - P_noise) / P_x) per shell,
    in [0, MAX_GAIN]; 1 where the candidates hold no power. Differentiable in x (not in y)."""
    measured = mask_tensor(y.shape, wedge, y.device) > 0
    shell = (radius_tensor(y.shape, y.device) / 0.5 * shells).long().clamp(max=shells - 1)  # corners: the last
    index = shell[measured]

    def power(v: torch.Tensor) -> torch.Tensor:
        p = torch.fft.rfftn(v, dim=FFT_DIMS).abs().pow(2).sum(0)[measured]
        return p.new_zeros(shells).index_add(0, index, p)

    with torch.no_grad():
        noise_psd = noise.psd_tensor(tuple(y.shape), wedge, y.device)[measured] * float(y[0].numel()) * y.shape[0]
        amplitude = (power(y) - noise_psd.new_zeros(shells).index_add(0, index, noise_psd)).clamp(min=0).sqrt()
    p_x = power(x)
    has_power = p_x > 0
    # the square root of the signal's power is taken outside the graph: where the data hold no
    # signal above the noise it is 0, and a square root's gradient there is not finite
    gains = amplitude / torch.where(has_power, p_x, torch.ones_like(p_x)).sqrt()
    return torch.where(has_power, gains, torch.ones_like(gains)).clamp(0.0, MAX_GAIN).float()


def with_gains(x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """x, (B, Z, Y, X), filtered by per-shell gains (`signal_gains`), interpolated linearly in |k|
    between the shells' centres so that no shell edge rings."""
    shells = len(gains)
    radius = radius_tensor(x.shape, x.device).float()
    width = 0.5 / shells
    pos = ((radius - 0.5 * width) / width).clamp(0, shells - 1)  # in shells, 0 at the first one's centre
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=shells - 1)
    frac = pos - lo.float()
    g = gains.to(x.device)
    response = g[lo] * (1 - frac) + g[hi] * frac
    return torch.fft.irfftn(torch.fft.rfftn(x, dim=FFT_DIMS) * response, s=x.shape[-3:], dim=FFT_DIMS)


def matched_to_signal(x: torch.Tensor, y: torch.Tensor, wedge: Wedge, noise: NoiseModel) -> torch.Tensor:
    """Candidates x, (B, Z, Y, X), filtered to the data y's signal power per shell (`signal_gains`)."""
    return with_gains(x, signal_gains(x, y, wedge, noise))
