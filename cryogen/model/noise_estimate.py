"""Estimating the noise model (`cryogen.model.noise.NoiseModel`) from data: from even/odd half
reconstructions, from one volume alone, or from a tomogram's central crop on disk.

From even/odd halves (`estimate_from_halves`, method "halves"). The observation is
(even + odd) / 2; its noise has the statistics of d = (even - odd) / 2, in which the signal
cancels exactly. sigma = std(d). The mean of |F(d)_k|^2 / N over the measured coefficients of
each of `n_shells` equal-width radial shells over 0 <= |k| <= sqrt(3)/2 gives measured_psd
(DC excluded; shells without coefficients are interpolated linearly from their neighbours);
missing_psd is the mean over all missing coefficients. No assumption on the spectrum.

From one volume (`estimate_from_data`, method "data"). Where the tomogram (or volume) holds at
least 27 blocks of 32^3, the spectrum's shape per shell and its directions per |k| come from its
quietest blocks at the level measured below (`noise_quiet`); otherwise, as follows, flat.
After subtracting the mean, the signal
is assumed negligible in the band 0.4 <= |k| <= 0.5 cycles/voxel (widened, first up to
sqrt(3)/2, then down to 0.25, if it holds too few coefficients). There the PSD is the trimmed
mean of |Y_k|^2 / N (the top 1 % left out, so a few strong signal coefficients do not move it,
and rescaled to be exact for Gaussian noise; `TRIM_FRACTION` says why not the median), separately
over the measured and the missing coefficients of the band. The ASSUMPTION that makes it work without halves: the
noise PSD is flat (white) across frequencies within each region, so its level at high frequency
is its level everywhere. Beyond the band (|k| > 0.5, the corners of Fourier space, half the
coefficients of a cube) the signal is weaker still, so there the measured PSD is the data's own,
shell by shell (trimmed means over at least 2048 coefficients, borrowing neighbouring shells
where one holds fewer): real tomograms' noise falls there (interpolation in back-projection),
and a flat model would put twice their corner power into simulated observations (measured on a
real crop). sigma^2 is the mean of the resulting PSD over the grid. It under-estimates sigma for
data whose noise was low-pass filtered near Nyquist (binned or interpolated tomograms,
reconstructions with a low-pass filter): use even/odd halves there. `cryogen.qc.warnings.check_noise`
warns when the spectrum still falls across the noise band.

Both also measure the noise's directional factor (`cryogen.model.noise_directional`): from halves
at every |k| (six radial bins), on the spectrum of d; from one volume in the noise band only, on
the spectrum of its periodic component (so the crop's faces draw no cross along the k axes), and
assumed to hold at every |k|, since the anisotropy of back-projection noise is a property of the
reconstruction, not of the specimen (the radial levels are then re-measured on the spectrum
divided by the factor, so they are means over all directions of a shell). A strong smooth signal
still puts some power near the k axes of a crop (at SNR 1, up to ~25 % in the bins there).

Both estimators treat the volume as periodic (plain FFT, no window, so the wedge stays sharp);
the jump at its borders adds a little high-frequency power (~1-3 % of sigma for tiles of ~50^3
at SNR 1). They hold a few float64 arrays of the rfft grid in memory:
pass tiles or crops (up to ~256^3), not whole tomograms. Both also keep the total PSD of the
observation per shell (measured and missing region) and its variance, so that `check_noise` can
tell "no signal" and "signal inside the missing wedge" (tilt axis or range wrong) from the model
alone. `estimate_for_tomogram` reads only a central crop of the tomogram (and of its halves).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CryogenError
from .imaging import Wedge, as_volume, frequency_radius, rfft_weights, wedge_mask
from .noise import K_MAX, NoiseModel
from .noise_directional import estimate_directional
from .noise_quiet import (
    BLOCK,
    block_spectra,
    file_blocks,
    live_blocks,
    mean_block_power,
    quiet_blocks,
    shaped_noise,
    volume_blocks,
)

NOISE_BAND = (0.4, 0.5)  # where the data-alone estimator assumes the signal is negligible
#: Radial bins of the directional factor measured on half differences (cycles/voxel): the
#: corners beyond 0.5 (directions near the axes absent) form one.
HALVES_RADII = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, K_MAX + 1e-9])
#: The robust level of a region's power: the mean of all but its top TRIM_FRACTION, over what
#: that trimmed mean is for exponential (pure noise) coefficients, 1 - q (1 - ln q) / (1 - q)
#: with q = TRIM_FRACTION. Not the median / ln 2: a back-projected tomogram's noise lies on the
#: central planes of its tilts, which a crop of ~100 voxels resolves at high |k| (3-degree steps
#: are 3 voxels apart at 0.45 cycles/voxel on a 128 grid), so its coefficients are a mixture of
#: strong (on a plane) and weak (between planes) ones, whose median / ln 2 gave 0.73 x the mean
#: power on a tilt-series phantom (0.97 on a 32^3 patch, where the planes blur together).
TRIM_FRACTION = 0.01
_TRIMMED_MEAN = 1.0 - TRIM_FRACTION * (1.0 - math.log(TRIM_FRACTION)) / (1.0 - TRIM_FRACTION)
_MIN_BAND_MEASURED = 256  # rfft coefficients needed in the noise band (measured region)
_MIN_BAND_MISSING = 64  # ... and in its missing region, when the grid has one
_CORNER_COEFFICIENTS = 2048  # per estimate of the PSD beyond the noise band


def _volume(v: Any, what: str) -> np.ndarray:
    """`v` as a finite (z, y, x) volume (see `imaging.as_volume`)."""
    a = as_volume(v, what)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise CryogenError(f"{what} contains NaN or Inf values")
    return a


def _centred(a: np.ndarray) -> np.ndarray:
    """a minus its mean, as float32 (float64 accumulation)."""
    out = a.astype(np.float32, copy=True)
    out -= np.float32(a.mean(dtype=np.float64))
    return out


def _power(v: np.ndarray) -> np.ndarray:
    """|F(v)_k|^2 / N on the rfftn grid, float64."""
    import scipy.fft

    spec = scipy.fft.rfftn(v, workers=-1)
    p = spec.real.astype(np.float64) ** 2
    p += spec.imag.astype(np.float64) ** 2
    p /= v.size
    return p


def _periodic_power(v: np.ndarray) -> np.ndarray:
    """`_power` of the periodic component of `v` (Moisan's periodic plus smooth decomposition):
    the jumps across the volume's opposite faces, which a crop's FFT sees as edges, put a cross
    of power along the k axes that a median over one direction's coefficients does not ignore;
    the smooth component carrying them is removed, and the spectrum is not blurred as by a window."""
    import scipy.fft

    jumps = np.zeros(v.shape, np.float64)
    for axis in range(3):
        step = np.take(v, [-1], axis=axis).astype(np.float64) - np.take(v, [0], axis=axis)  # across the face
        jumps[(slice(None),) * axis + (0,)] += np.squeeze(step, axis)
        jumps[(slice(None),) * axis + (-1,)] -= np.squeeze(step, axis)
    cosines = [np.cos(2 * np.pi * np.fft.fftfreq(n)) for n in v.shape[:2]] + [
        np.cos(2 * np.pi * np.fft.rfftfreq(v.shape[2]))
    ]
    laplacian = 2.0 * (cosines[0][:, None, None] + cosines[1][None, :, None] + cosines[2][None, None, :]) - 6.0
    laplacian[0, 0, 0] = 1.0
    smooth = scipy.fft.rfftn(jumps, workers=-1) / laplacian
    smooth[0, 0, 0] = 0.0
    spec = scipy.fft.rfftn(v, workers=-1) - smooth
    return (spec.real**2 + spec.imag**2) / v.size


def _shell_edges(n_shells: int) -> tuple[np.ndarray, np.ndarray]:
    if int(n_shells) < 1:
        raise CryogenError(f"n_shells must be >= 1, not {n_shells}")
    edges = np.linspace(0.0, K_MAX, int(n_shells) + 1)
    return edges, 0.5 * (edges[:-1] + edges[1:])


def _shell_index(radius: np.ndarray, n_shells: int) -> np.ndarray:
    return np.minimum((radius * (n_shells / K_MAX)).astype(np.int64), n_shells - 1)


def _shell_means(
    power: np.ndarray, select: np.ndarray, shell: np.ndarray, weights: np.ndarray, centres: np.ndarray
) -> tuple[np.ndarray, int]:
    """Weighted mean of `power` over the selected coefficients of each shell; empty shells are
    interpolated from their neighbours (constant beyond the ends). Returns zeros if none at all."""
    n = len(centres)
    w = weights[select]
    sums = np.bincount(shell[select], weights=power[select] * w, minlength=n)
    counts = np.bincount(shell[select], weights=w, minlength=n)
    full = counts > 0
    if not full.any():
        return np.zeros(n), 0
    means = np.zeros(n)
    means[full] = sums[full] / counts[full]
    if not full.all():
        means[~full] = np.interp(centres[~full], centres[full], means[full])
    return means, int(full.sum())


def _spectrum_profile(power: np.ndarray, shape3: tuple[int, int, int], wedge: Wedge, n_shells: int):
    """Radial shell means of `power` in the measured and the missing region, the mean over the
    missing region, and the grid quantities used for them."""
    _, centres = _shell_edges(n_shells)
    radius = frequency_radius(shape3)
    mask = wedge_mask(shape3, wedge)
    weights = np.broadcast_to(rfft_weights(shape3[2]), power.shape)
    shell = _shell_index(radius, n_shells)
    not_dc = radius > 0
    measured, _ = _shell_means(power, mask & not_dc, shell, weights, centres)
    missing_shells, n_missing = _shell_means(power, ~mask, shell, weights, centres)
    wm = weights[~mask]
    missing_mean = float((power[~mask] * wm).sum() / wm.sum()) if n_missing else 0.0
    return centres, measured, missing_shells, missing_mean, radius, mask


def estimate_from_halves(even: np.ndarray, odd: np.ndarray, wedge: Wedge, n_shells: int = 32) -> NoiseModel:
    """The noise model from two independent half reconstructions (even/odd tilts or frames), both
    (Z, Y, X).

    The observation is (even + odd) / 2; its noise is estimated from d = (even - odd) / 2, whose
    radial PSD is measured per shell in the measured region (see the module docstring).
    """
    e = _volume(even, "even half")
    o = _volume(odd, "odd half")
    if e.shape != o.shape:
        raise CryogenError(f"even and odd halves have different shapes {e.shape} and {o.shape}")
    _shell_edges(n_shells)
    e = e.astype(np.float32, copy=False)
    o = o.astype(np.float32, copy=False)
    d = _centred((e - o) * np.float32(0.5))
    sigma = float(np.sqrt(np.mean(d.astype(np.float64) ** 2)))
    if not sigma > 0:
        raise CryogenError("even and odd halves are identical: their difference has no noise to measure")
    obs = _centred((e + o) * np.float32(0.5))
    shape3 = e.shape
    power = _power(d)
    centres, measured, _, missing, radius, _ = _spectrum_profile(power, shape3, wedge, n_shells)
    _, data_meas, data_miss, _, _, _ = _spectrum_profile(_power(obs), shape3, wedge, n_shells)
    radial = NoiseModel(sigma, tuple(centres), tuple(measured), missing, "halves")
    base = radial.psd(shape3, wedge)
    directional = estimate_directional(power, base, shape3, wedge, radius > 0, HALVES_RADII, robust=False)
    return NoiseModel(
        sigma=sigma,
        shell_freqs=tuple(centres),
        measured_psd=tuple(measured),
        missing_psd=missing,
        method="halves",
        data_variance=float(np.mean(obs.astype(np.float64) ** 2)),
        data_psd=tuple(data_meas),
        data_missing_psd=tuple(data_miss),
        directional=directional,
    )


def _robust_level(power: np.ndarray) -> float:
    """The mean power of noise coefficients `power` (1-D, any distribution across them), robust
    to a few strong signal coefficients: the trimmed mean (see TRIM_FRACTION)."""
    top = np.quantile(power, 1.0 - TRIM_FRACTION)
    return float(np.mean(power[power <= top])) / _TRIMMED_MEAN


def _noise_band(radius: np.ndarray, mask: np.ndarray, shape3: tuple[int, int, int]) -> np.ndarray:
    """The band where the noise is measured: NOISE_BAND, widened (first upwards, then downwards)
    until both regions (the missing one only if the grid has one) hold enough coefficients."""
    has_missing = not mask.all()
    lo0, hi0 = NOISE_BAND
    top = K_MAX + 1e-9
    for lo, hi in ((lo0, hi0), (lo0, 0.6), (lo0, top), (0.35, top), (0.3, top), (0.25, top)):
        band = (radius >= lo) & (radius <= hi)
        n_meas = int((band & mask).sum())
        n_miss = int((band & ~mask).sum())
        if n_meas >= _MIN_BAND_MEASURED and (not has_missing or n_miss >= _MIN_BAND_MISSING):
            return band
    raise CryogenError(
        f"volume of shape {shape3} is too small to estimate the noise from its high frequencies "
        f"({n_meas} measured and {n_miss} missing coefficients above |k| = {lo:g} cycles/voxel)"
    )


def _corner_profile(
    power: np.ndarray, radius: np.ndarray, mask: np.ndarray, n_shells: int, band_top: float, level: float
) -> tuple[float, ...]:
    """The measured-region PSD per shell: `level` (the noise band's) up to the band's top, and
    beyond it, in the corners of Fourier space (|k| > 0.5: half the coefficients of a cube), the
    data's own level shell by shell. The signal is still weaker there than in the band, so the
    data are the noise, and real tomograms' noise falls there (interpolation in back-projection,
    binning): a flat model would give simulated observations twice the corner power of the data
    (measured on a real crop), which the discriminator then tells apart at once."""
    edges, _ = _shell_edges(n_shells)
    shell = _shell_index(radius, n_shells)[mask]
    values = power[mask]
    out = np.full(n_shells, level)
    for i in range(n_shells):
        if edges[i] < band_top:
            continue
        # the shell and as many neighbours as it takes for a steady level (~2 % error)
        for k in range(n_shells):
            near = values[np.abs(shell - i) <= k]
            if near.size >= _CORNER_COEFFICIENTS:
                break
        if near.size:
            out[i] = _robust_level(near)
    return tuple(float(v) for v in out)


def _radial_from_data(
    power: np.ndarray, radius: np.ndarray, mask: np.ndarray, band: np.ndarray, n_shells: int
) -> tuple[tuple[float, ...], float]:
    """The data-alone radial model: measured_psd (the band's level, then the corners' own) and
    missing_psd, from trimmed means of `power` (see the module docstring)."""
    level = _robust_level(power[band & mask])
    sel = band & ~mask
    missing = _robust_level(power[sel]) if sel.any() else 0.0
    return _corner_profile(power, radius, mask, n_shells, float(radius[band].max()), level), missing


#: below this share of the data's variance the noise band of noise-free, binned or low-pass
#: filtered data holds too little to measure a direction in: the model stays radial (and
#: qc.warnings says sigma is unreliable)
MIN_NOISE_SHARE = 0.01


def estimate_from_data(
    volume: np.ndarray,
    wedge: Wedge,
    n_shells: int = 32,
    blocks: Callable[[], Iterable[np.ndarray]] | None = None,
) -> NoiseModel:
    """The noise model from one volume, (Z, Y, X): its spectrum's shape and directions from the
    quietest blocks `blocks()` yields (read twice; default: the volume's own; `noise_quiet`), at the level of the
    volume's noise band (0.4..0.5 cycles/voxel, where the signal is assumed negligible). Without
    enough blocks (small volumes), a flat noise PSD in each region at that level (this
    under-estimates the noise of binned, tapered or low-pass filtered data: use even/odd halves).

    Flat model: the directional factor is measured in the noise band, as power / radial model per
    direction, and ASSUMED to hold at every |k| (on the M. pneumoniae WBP it was 3.5x too strong
    along the tilt axis at 0.1-0.3: the interpolation it comes from damps high |k| only); with a
    factor, the radial levels are re-measured on the power divided by it, so that they are means
    over all directions, not medians of a mixture of directions."""
    v = _volume(volume, "volume")
    _shell_edges(n_shells)
    y = _centred(v)
    var = float(np.mean(y.astype(np.float64) ** 2))
    if not var > 0:
        raise CryogenError("volume is constant: there is no noise to estimate")
    shape3 = v.shape
    power = _power(y)
    centres, data_meas, data_miss, _, radius, mask = _spectrum_profile(power, shape3, wedge, n_shells)
    band = _noise_band(radius, mask, shape3)
    measured_psd, psd_missing = _radial_from_data(power, radius, mask, band, n_shells)
    edges, _ = _shell_edges(n_shells)
    own = block_spectra(volume_blocks(v), wedge, edges)
    if blocks is None:
        blocks = partial(volume_blocks, v)
    spectra = block_spectra(blocks(), wedge, edges, periodic=True)
    quiet = quiet_blocks(spectra, centres)
    live = live_blocks(own, centres)
    missing_shape: tuple[float, ...] = ()
    directional = None
    if quiet is not None and live.any():
        # the noise's own shape up to the band's top (the corners' beyond), at the volume's level
        shaped = shaped_noise(spectra[quiet].mean(axis=0), own[live].mean(axis=0), np.asarray(data_meas), centres)
        top = float(radius[band].max())
        band_level = measured_psd[0]  # the flat level: the band's, where psd_missing was measured
        measured_psd = tuple(float(q) if lo < top else m for q, m, lo in zip(shaped, measured_psd, edges, strict=False))
        if band_level > 0:  # the wedge's noise, leaked from the measured region's, follows its shape
            missing_shape = tuple(m / band_level for m in measured_psd)
        radial = NoiseModel(0.0, tuple(centres), measured_psd, psd_missing, "data", missing_shape=missing_shape)
        if radial.variance(shape3, wedge) >= MIN_NOISE_SHARE * var:
            grid = (BLOCK, BLOCK, BLOCK)
            directional = estimate_directional(
                mean_block_power(blocks(), quiet),
                radial.psd(grid, wedge),
                grid,
                wedge,
                frequency_radius(grid) > 0,
                HALVES_RADII,
                robust=False,
                samples=len(quiet),
            )
    else:
        radial = NoiseModel(0.0, tuple(centres), measured_psd, psd_missing, "data")
        band_edges = np.array([float(radius[band].min()), float(radius[band].max()) + 1e-9])
        if radial.variance(shape3, wedge) >= MIN_NOISE_SHARE * var:  # else the band holds no noise to measure
            base = radial.psd(shape3, wedge)
            directional = estimate_directional(_periodic_power(y), base, shape3, wedge, band, band_edges, robust=True)
        if directional is not None:
            measured_psd, psd_missing = _radial_from_data(
                power / directional.evaluate(shape3, wedge), radius, mask, band, n_shells
            )
    psd_only = NoiseModel(
        0.0, tuple(centres), measured_psd, psd_missing, "data", directional=directional, missing_shape=missing_shape
    )
    return NoiseModel(
        sigma=math.sqrt(psd_only.variance(shape3, wedge)),
        shell_freqs=tuple(centres),
        measured_psd=measured_psd,
        missing_psd=psd_missing,
        method="data",
        data_variance=var,
        data_psd=tuple(data_meas),
        data_missing_psd=tuple(data_miss),
        directional=directional,
        missing_shape=missing_shape,
    )


# -- from files ---------------------------------------------------------------------------------

NOISE_CROP = 128  # edge of the central crop the noise is estimated on: enough coefficients, little memory


def _central_crop(path: str | Path, crop: int) -> np.ndarray:
    """The central min(crop, n)^3 block of an MRC volume, read without loading the rest; NaN or
    Inf in it stop with the file's name."""
    from ..io.mrc import MrcReader, check_finite_block, read_central_crop

    with MrcReader(path) as reader:
        block = read_central_crop(reader, crop)
        check_finite_block(block, path, (reader.shape[0] - block.shape[0]) // 2)
    return block


def check_halves(path: str | Path, halves: tuple[str | Path, str | Path]) -> None:
    """Stop early, naming the file, when a half tomogram is unreadable or not the tomogram's shape."""
    from ..io.mrc import MrcReader

    with MrcReader(path) as reader:
        shape = reader.shape
    for half in halves:
        with MrcReader(half) as reader:
            if reader.shape != shape:
                raise CryogenError(f"half tomogram has shape {reader.shape}, the tomogram {shape}", half)


def estimate_for_tomogram(
    path: str | Path, wedge: Wedge, halves: tuple[str | Path, str | Path] | None = None, crop: int = NOISE_CROP
) -> NoiseModel:
    """The noise model of a tomogram from its central crop: from the even/odd halves when given
    (no assumption on the spectrum), else from the tomogram alone (`estimate_from_data`: the
    spectrum's shape from its quietest blocks, read across the whole file; flat in small ones).
    The centre holds the specimen, and a crop keeps memory independent of the tomogram's size."""
    if halves is None:
        try:
            return estimate_from_data(_central_crop(path, crop), wedge, blocks=partial(file_blocks, path))
        except CryogenError as exc:
            raise CryogenError(f"noise estimate: {exc}", path) from None
    check_halves(path, halves)
    try:
        return estimate_from_halves(_central_crop(halves[0], crop), _central_crop(halves[1], crop), wedge)
    except CryogenError as exc:
        raise CryogenError(f"{exc} (halves {halves[0]} and {halves[1]})") from None
