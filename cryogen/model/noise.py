"""The noise model of an observation y = A x + n, and its estimation from data.

In a real tomogram the noise comes through back-projection: it is (mostly) confined to the
measured region of Fourier space, and its power spectrum varies with frequency. The model is
therefore a power spectral density (PSD), not one number:

    PSD(k) = measured_psd(|k|)   for measured k (radial profile, linear interpolation in |k|)
    PSD(k) = missing_psd         for k in the missing wedge (0 when the noise is wedge-confined)

Convention: PSD(k) = E|F(n)_k|^2 / N with the unnormalised FFT over N voxels, so the mean of
the PSD over the full FFT grid is the noise variance (Parseval). |k| is in cycles per voxel and
"measured" comes from the tilt geometry, so a model estimated on one volume transfers to any
other shape (e.g. a 64^3 tile): the noise variance there is what the PSD implies
(`NoiseModel.variance`), while `sigma` keeps the std measured on the estimation volume.

Estimation from even/odd halves (`estimate_from_halves`, method "halves"). The observation is
(even + odd) / 2; its noise has the statistics of d = (even - odd) / 2, in which the signal
cancels exactly. sigma = std(d). The mean of |F(d)_k|^2 / N over the measured coefficients of
each of `n_shells` equal-width radial shells over 0 <= |k| <= sqrt(3)/2 gives measured_psd
(DC excluded; shells without coefficients are interpolated linearly from their neighbours);
missing_psd is the mean over all missing coefficients. No assumption on the spectrum.

Estimation from one volume (`estimate_from_data`, method "data"). After subtracting the mean,
the signal is assumed negligible in the band 0.4 <= |k| <= 0.5 cycles/voxel (widened, first
up to sqrt(3)/2, then down to 0.25, if it holds too few coefficients). There |Y_k|^2 of a
complex Gaussian coefficient is exponential, so median(|Y_k|^2 / N) / ln 2 estimates the PSD
robustly (a few strong signal coefficients do not move it); this is done separately over the
measured and the missing coefficients of the band. The ASSUMPTION that makes it work without
halves: the noise PSD is flat (white) across frequencies within each region, so its level at
high frequency is its level everywhere. Beyond the band (|k| > 0.5, the corners of Fourier
space, half the coefficients of a cube) the signal is weaker still, so there the measured PSD is
the data's own, shell by shell (median / ln 2 over at least 2048 coefficients, borrowing
neighbouring shells where one holds fewer): real tomograms' noise falls there (interpolation in
back-projection), and a flat model would put twice their corner power into simulated
observations (measured on a real crop). sigma^2 is the mean of the resulting PSD over the grid.
It under-estimates sigma for data whose noise was low-pass filtered near Nyquist (binned or
interpolated tomograms, reconstructions with a low-pass filter): use even/odd halves there. `check_noise` warns when the
spectrum still falls across the noise band.

Both estimators treat the volume as periodic (plain FFT, no window, so the wedge stays sharp);
the jump at its borders adds a little high-frequency power (the median keeps this to ~1-3% of
sigma for tiles of ~50^3 at SNR 1). They hold a few float64 arrays of the rfft grid in memory:
pass tiles or crops (up to ~256^3), not whole tomograms.

Both estimators also keep the total PSD of the observation per shell (measured and missing
region) and its variance, so that `check_noise` can tell "no signal" and "signal inside the
missing wedge" (tilt axis or range wrong) from the model alone.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CryogenError
from .imaging import FFT_DIMS, Wedge, frequency_radius, rfft_weights, wedge_mask

if TYPE_CHECKING:  # pragma: no cover
    import torch

K_MAX = math.sqrt(3.0) / 2.0  # largest |k| on any grid, cycles/voxel
NOISE_BAND = (0.4, 0.5)  # where the data-alone estimator assumes the signal is negligible
METHODS = ("halves", "data", "given")
_LN2 = math.log(2.0)
_MIN_BAND_MEASURED = 256  # rfft coefficients needed in the noise band (measured region)
_MIN_BAND_MISSING = 64  # ... and in its missing region, when the grid has one
_CORNER_COEFFICIENTS = 2048  # per estimate of the PSD beyond the noise band


def _floats(values: Any, name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as e:
        raise CryogenError(f"noise model: {name} must be a list of numbers ({e})") from None
    if not all(math.isfinite(v) for v in out):
        raise CryogenError(f"noise model: {name} has non-finite values")
    return out


@dataclass(frozen=True)
class NoiseModel:
    """Noise of an observation: sigma plus a radial PSD in the measured region and a level in the
    missing wedge. See the module docstring for the conventions.

    `data_variance`, `data_psd` and `data_missing_psd` describe the observation the model was
    estimated on (its variance, and its total PSD per shell in the measured and the missing
    region); they are optional diagnostics used by `check_noise`. Use `scaled` to change units,
    so that they follow.
    """

    sigma: float
    shell_freqs: tuple[float, ...]
    measured_psd: tuple[float, ...]
    missing_psd: float
    method: str
    data_variance: float | None = None
    data_psd: tuple[float, ...] = ()
    data_missing_psd: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        sigma = float(self.sigma)
        missing = float(self.missing_psd)
        if not (math.isfinite(sigma) and sigma >= 0):
            raise CryogenError(f"noise model: sigma must be finite and >= 0, not {self.sigma!r}")
        if not (math.isfinite(missing) and missing >= 0):
            raise CryogenError(f"noise model: missing_psd must be finite and >= 0, not {self.missing_psd!r}")
        freqs = _floats(self.shell_freqs, "shell_freqs")
        psd = _floats(self.measured_psd, "measured_psd")
        if not freqs or len(freqs) != len(psd):
            raise CryogenError(
                f"noise model: shell_freqs ({len(freqs)}) and measured_psd ({len(psd)}) must be non-empty and of equal length"
            )
        if any(b <= a for a, b in itertools.pairwise(freqs)):
            raise CryogenError("noise model: shell_freqs must be strictly increasing")
        if min(psd) < 0:
            raise CryogenError("noise model: measured_psd must be >= 0")
        if self.method not in METHODS:
            raise CryogenError(f"noise model: method must be one of {METHODS}, not {self.method!r}")
        data_psd = _floats(self.data_psd, "data_psd")
        data_missing = _floats(self.data_missing_psd, "data_missing_psd")
        for name, values in (("data_psd", data_psd), ("data_missing_psd", data_missing)):
            if values and len(values) != len(freqs):
                raise CryogenError(
                    f"noise model: {name} must have one value per shell ({len(freqs)}), not {len(values)}"
                )
        data_var = None if self.data_variance is None else float(self.data_variance)
        if data_var is not None and not (math.isfinite(data_var) and data_var >= 0):
            raise CryogenError(f"noise model: data_variance must be finite and >= 0, not {self.data_variance!r}")
        for name, value in (
            ("sigma", sigma),
            ("missing_psd", missing),
            ("shell_freqs", freqs),
            ("measured_psd", psd),
            ("data_variance", data_var),
            ("data_psd", data_psd),
            ("data_missing_psd", data_missing),
        ):
            object.__setattr__(self, name, value)

    # -- constructors and units ------------------------------------------------------------

    @classmethod
    def flat(
        cls,
        measured_psd: float,
        missing_psd: float = 0.0,
        shape: tuple[int, ...] | None = None,
        wedge: Wedge | None = None,
        method: str = "given",
    ) -> NoiseModel:
        """A flat (white within each region) model; sigma is what it implies for `shape` and
        `wedge` (both needed unless the two levels are equal).

        `flat(s**2, 0.0, shape, wedge)` is the noise apply_wedge(white noise of std s) gives;
        `flat(s**2, s**2)` is white noise of std s.
        """
        m, w = float(measured_psd), float(missing_psd)
        freqs = (0.0, K_MAX)
        if m == w:
            sigma = math.sqrt(max(m, 0.0))
        elif shape is None or wedge is None:
            raise CryogenError(
                "noise model: a flat model with different measured and missing levels needs shape and wedge"
            )
        else:
            frac = _measured_fraction(tuple(int(s) for s in shape[-3:]), wedge)
            sigma = math.sqrt(max(frac * m + (1.0 - frac) * w, 0.0))
        return cls(sigma=sigma, shell_freqs=freqs, measured_psd=(m, m), missing_psd=w, method=method)

    @classmethod
    def white(cls, sigma: float) -> NoiseModel:
        """White Gaussian noise of std `sigma` everywhere (also inside the missing wedge)."""
        return cls.flat(float(sigma) ** 2, float(sigma) ** 2)

    def scaled(self, factor: float) -> NoiseModel:
        """The model of `factor * n`: sigma times factor, every PSD times factor^2."""
        f = float(factor)
        f2 = f * f
        return replace(
            self,
            sigma=self.sigma * abs(f),
            measured_psd=tuple(v * f2 for v in self.measured_psd),
            missing_psd=self.missing_psd * f2,
            data_variance=None if self.data_variance is None else self.data_variance * f2,
            data_psd=tuple(v * f2 for v in self.data_psd),
            data_missing_psd=tuple(v * f2 for v in self.data_missing_psd),
        )

    # -- the PSD on a grid ------------------------------------------------------------------

    def psd(self, shape: tuple[int, ...], wedge: Wedge) -> np.ndarray:
        """The 3-D PSD (float64) on the rfftn grid of the last three axes of `shape`."""
        shape3 = _shape3(shape)
        radius = frequency_radius(shape3)
        out = np.interp(radius, self.shell_freqs, self.measured_psd)
        out[~wedge_mask(shape3, wedge)] = self.missing_psd
        return out

    def variance(self, shape: tuple[int, ...], wedge: Wedge) -> float:
        """The per-voxel noise variance the PSD implies for a volume of `shape` (mean of the PSD
        over the full FFT grid); what `sample` draws."""
        return _implied_variance(self, _shape3(shape), wedge)[0]

    def measured_variance(self, shape: tuple[int, ...], wedge: Wedge) -> float:
        """The mean PSD over the measured coefficients: the per-voxel noise variance within the
        measured subspace, i.e. the variance to divide ||A (x - y)||^2 by in a (flat-spectrum)
        Gaussian likelihood. Equals variance() / f_measured for wedge-confined noise."""
        return _implied_variance(self, _shape3(shape), wedge)[1]

    def psd_tensor(self, shape: tuple[int, ...], wedge: Wedge, device: Any = "cpu") -> torch.Tensor:
        """The PSD as a float32 tensor on the rfftn grid, cached per shape, wedge and device."""
        import torch

        return _psd_tensor(self, _shape3(shape), wedge, str(torch.device(device)), False)

    def sample(
        self, shape: tuple[int, ...], wedge: Wedge, generator: torch.Generator | None = None, device: Any = "cpu"
    ) -> torch.Tensor:
        """Draw float32 noise of `shape` (leading batch dims allowed; the last three are the volume).

        White Gaussian noise is coloured by sqrt(PSD) in Fourier space, so the result has the
        model's spectrum on this grid and variance `self.variance(shape, wedge)`. The white noise
        is drawn on the generator's device (when given) for reproducibility, then moved.
        """
        import torch

        shape = tuple(int(s) for s in shape)
        shape3 = _shape3(shape)
        dev = torch.device(device)
        draw_dev = generator.device if generator is not None else dev
        white = torch.randn(shape, generator=generator, device=draw_dev, dtype=torch.float32).to(dev)
        amp = _psd_tensor(self, shape3, wedge, str(dev), True)
        spectrum = torch.fft.rfftn(white, dim=FFT_DIMS) * amp
        return torch.fft.irfftn(spectrum, s=shape3, dim=FFT_DIMS)

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-able dict (plain floats and lists) for Zarr attributes and checkpoints."""
        return {
            "sigma": self.sigma,
            "shell_freqs": list(self.shell_freqs),
            "measured_psd": list(self.measured_psd),
            "missing_psd": self.missing_psd,
            "method": self.method,
            "data_variance": self.data_variance,
            "data_psd": list(self.data_psd),
            "data_missing_psd": list(self.data_missing_psd),
        }

    @classmethod
    def from_dict(cls, d: dict) -> NoiseModel:
        if not isinstance(d, dict):
            raise CryogenError(f"noise model must be a dict, not {type(d).__name__}")
        required = ("sigma", "shell_freqs", "measured_psd", "missing_psd", "method")
        missing = [k for k in required if k not in d]
        if missing:
            raise CryogenError(f"noise model is missing {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# -- cached grids -----------------------------------------------------------------------------


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3 or min(shape[-3:]) < 1:
        raise CryogenError(f"noise needs a shape with at least three positive axes (z, y, x), not {shape}")
    return shape[-3:]  # type: ignore[return-value]


@functools.lru_cache(maxsize=64)
def _measured_fraction(shape3: tuple[int, int, int], wedge: Wedge) -> float:
    w = rfft_weights(shape3[2])
    mask = wedge_mask(shape3, wedge)
    return float((mask * w).sum() / np.prod(shape3))


@functools.lru_cache(maxsize=64)
def _implied_variance(model: NoiseModel, shape3: tuple[int, int, int], wedge: Wedge) -> tuple[float, float]:
    psd = model.psd(shape3, wedge)
    w = np.broadcast_to(rfft_weights(shape3[2]), psd.shape)
    mask = wedge_mask(shape3, wedge)
    total = float((psd * w).sum() / np.prod(shape3))
    wm = w[mask]
    measured = float((psd[mask] * wm).sum() / wm.sum())
    return total, measured


@functools.lru_cache(maxsize=32)
def _psd_tensor(model: NoiseModel, shape3: tuple[int, int, int], wedge: Wedge, device: str, sqrt: bool) -> torch.Tensor:
    import torch

    psd = model.psd(shape3, wedge)
    if sqrt:
        psd = np.sqrt(psd)
    return torch.from_numpy(psd.astype(np.float32)).to(device)


# -- estimation -------------------------------------------------------------------------------


def _check_volume(v: Any, what: str) -> np.ndarray:
    a = np.asarray(v)
    if a.ndim != 3:
        raise CryogenError(f"{what} must be a 3-D (z, y, x) volume, not {a.ndim}-D with shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise CryogenError(f"{what} must hold real numbers, not {a.dtype}")
    if a.dtype.kind == "f" and a.dtype.itemsize < 4:
        a = a.astype(np.float32)
    if min(a.shape) < 2:
        raise CryogenError(f"{what} shape {a.shape} is too small to estimate noise")
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
    """The noise model from two independent half reconstructions (even/odd tilts or frames).

    The observation is (even + odd) / 2; its noise is estimated from d = (even - odd) / 2, whose
    radial PSD is measured per shell in the measured region (see the module docstring).
    """
    e = _check_volume(even, "even half")
    o = _check_volume(odd, "odd half")
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
    centres, measured, _, missing, _, _ = _spectrum_profile(_power(d), shape3, wedge, n_shells)
    _, data_meas, data_miss, _, _, _ = _spectrum_profile(_power(obs), shape3, wedge, n_shells)
    return NoiseModel(
        sigma=sigma,
        shell_freqs=tuple(centres),
        measured_psd=tuple(measured),
        missing_psd=missing,
        method="halves",
        data_variance=float(np.mean(obs.astype(np.float64) ** 2)),
        data_psd=tuple(data_meas),
        data_missing_psd=tuple(data_miss),
    )


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
        # the shell and as many neighbours as it takes for a steady median (~2 % error)
        for k in range(n_shells):
            near = values[np.abs(shell - i) <= k]
            if near.size >= _CORNER_COEFFICIENTS:
                break
        if near.size:
            out[i] = float(np.median(near)) / _LN2
    return tuple(float(v) for v in out)


def estimate_from_data(volume: np.ndarray, wedge: Wedge, n_shells: int = 32) -> NoiseModel:
    """The noise model from one volume, assuming a flat noise PSD in each region and negligible
    signal at 0.4..0.5 cycles/voxel (see the module docstring: this under-estimates sigma for
    binned or low-pass filtered data, where even/odd halves are needed)."""
    v = _check_volume(volume, "volume")
    _shell_edges(n_shells)
    y = _centred(v)
    var = float(np.mean(y.astype(np.float64) ** 2))
    if not var > 0:
        raise CryogenError("volume is constant: there is no noise to estimate")
    shape3 = v.shape
    power = _power(y)
    centres, data_meas, data_miss, _, radius, mask = _spectrum_profile(power, shape3, wedge, n_shells)
    band = _noise_band(radius, mask, shape3)
    psd_measured = float(np.median(power[band & mask])) / _LN2
    sel = band & ~mask
    psd_missing = float(np.median(power[sel])) / _LN2 if sel.any() else 0.0
    measured_psd = _corner_profile(power, radius, mask, n_shells, float(radius[band].max()), psd_measured)
    psd_only = NoiseModel(
        sigma=0.0, shell_freqs=tuple(centres), measured_psd=measured_psd, missing_psd=psd_missing, method="data"
    )
    sigma = math.sqrt(psd_only.variance(shape3, wedge))
    return NoiseModel(
        sigma=sigma,
        shell_freqs=tuple(centres),
        measured_psd=measured_psd,
        missing_psd=psd_missing,
        method="data",
        data_variance=var,
        data_psd=tuple(data_meas),
        data_missing_psd=tuple(data_miss),
    )


# -- diagnostics ------------------------------------------------------------------------------


def check_noise(model: NoiseModel) -> list[str]:
    """Warnings about a noise model (and the observation it was estimated on) that a user should see."""
    out: list[str] = []
    f = np.asarray(model.shell_freqs)
    meas = np.asarray(model.measured_psd)
    if model.sigma == 0 or not meas.any():
        out.append("the noise model is zero: the estimate found no noise (identical halves, or a noise-free volume?)")
        return out
    mid = (f >= 0.1) & (f <= 0.5)
    level = float(np.median(meas[mid] if mid.any() else meas))
    if level > 0 and model.missing_psd >= 0.5 * level:
        out.append(
            f"noise inside the missing wedge is {model.missing_psd / level:.2f} x the noise in the measured region: "
            "the noise is not wedge-shaped (simulated white noise, or a reconstruction that fills the wedge), "
            "or the tilt axis / range is wrong"
        )
    if model.data_variance is not None and model.data_variance > 0:
        ratio = model.sigma**2 / model.data_variance
        if ratio > 1.1:
            out.append(
                f"the noise variance is {ratio:.2f} x the variance of the data: the halves are not independent "
                "reconstructions of the same volume, or are scaled differently"
            )
        elif ratio > 0.95:
            out.append(
                f"no signal detected: noise accounts for {100 * min(ratio, 1.0):.1f}% of the data's variance "
                "(total power barely above the noise floor)"
            )
    if model.data_psd and model.data_missing_psd:
        data = np.asarray(model.data_psd)
        miss = np.asarray(model.data_missing_psd)
        noise_meas = meas
        signal = (data > 3.0 * noise_meas) & (f <= 0.5)
        if signal.any():
            excess_meas = data[signal] - noise_meas[signal]
            excess_miss = np.maximum(miss[signal] - model.missing_psd, 0.0)
            r = float(np.median(excess_miss / excess_meas))
            if r > 0.3:
                out.append(
                    f"signal found inside the missing wedge ({r:.2f} x the signal power of the measured region "
                    "at the same frequencies): the tilt axis or tilt range is probably wrong"
                )
    if model.method == "data" and model.data_psd:
        data = np.asarray(model.data_psd)
        low = (f >= 0.4) & (f < 0.45)
        high = (f >= 0.45) & (f <= 0.5)
        if low.any() and high.any() and data[low].mean() > 0:
            drop = float(data[high].mean() / data[low].mean())
            if drop < 0.75:
                out.append(
                    f"the spectrum still falls across the noise band (0.45-0.5 vs 0.4-0.45 cycles/voxel: x{drop:.2f}): "
                    "the data look binned or low-pass filtered, so the noise from data alone is under-estimated; "
                    "use even/odd halves"
                )
    return out


# -- from files ---------------------------------------------------------------------------------

NOISE_CROP = 128  # edge of the central crop the noise is estimated on: enough coefficients, little memory


def _central_crop(path: str | Path, crop: int) -> np.ndarray:
    """The central min(crop, n)^3 block of an MRC volume, read without loading the rest."""
    from ..io.mrc import MrcReader, check_finite_block

    with MrcReader(path) as reader:
        nz, ny, nx = reader.shape
        cz, cy, cx = min(crop, nz), min(crop, ny), min(crop, nx)
        z0, y0, x0 = (nz - cz) // 2, (ny - cy) // 2, (nx - cx) // 2
        block = reader.read_block(z0, z0 + cz, y0, y0 + cy)[:, :, x0 : x0 + cx]
        check_finite_block(block, path, z0)
    return np.ascontiguousarray(block)


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
    (no assumption on the spectrum), else from the tomogram alone (flat-spectrum assumption).
    The centre holds the specimen, and a crop keeps memory independent of the tomogram's size."""
    if halves is None:
        try:
            return estimate_from_data(_central_crop(path, crop), wedge)
        except CryogenError as exc:
            raise CryogenError(f"noise estimate: {exc}", path) from None
    check_halves(path, halves)
    try:
        return estimate_from_halves(_central_crop(halves[0], crop), _central_crop(halves[1], crop), wedge)
    except CryogenError as exc:
        raise CryogenError(f"{exc} (halves {halves[0]} and {halves[1]})") from None
