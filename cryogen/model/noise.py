"""The noise model of an observation y = A x + n: its spectrum, sampling and serialisation.

In a real tomogram the noise comes through back-projection: it is (mostly) confined to the
measured region of Fourier space, and its power spectrum varies with frequency. The model is
therefore a power spectral density (PSD), not one number:

    PSD(k) = measured_psd(|k|)   for measured k (radial profile, linear interpolation in |k|)
    PSD(k) = missing_psd         for k in the missing wedge (0 when the noise is wedge-confined),
             times missing_shape(|k|) where the model has one (a back-projection's wedge holds
             a fixed share of the measured region's noise at each |k|, so it follows its shape)

optionally times a directional factor D(k) (`cryogen.model.noise_directional`): back-projection
noise is stronger along the tilt axis than across it, and varies with the tilt angle. D has
mean 1 over the measured part of each shell and over the missing wedge, so sigma and the radial
profile keep their meaning; without it (None) the model is radial, exactly as before.

Convention: PSD(k) = E|F(n)_k|^2 / N with the unnormalised FFT over N voxels, so the mean of
the PSD over the full FFT grid is the noise variance (Parseval). |k| is in cycles per voxel and
"measured" comes from the tilt geometry, so a model estimated on one volume transfers to any
other shape (e.g. a 64^3 tile): the noise variance there is what the PSD implies
(`NoiseModel.variance`), while `sigma` keeps the std measured on the estimation volume.

Estimating a model from data (even/odd halves, one volume, a tomogram's central crop) is
`cryogen.model.noise_estimate`; the warnings a model gives about its data are
`cryogen.qc.warnings.check_noise`. The dict form (`to_dict` / `from_dict`) is what tile stores
and checkpoints hold: its keys never change, and unknown keys are ignored when read.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CryogenError
from .imaging import FFT_DIMS, Wedge, cached_tensor, frequency_radius, rfft_weights, wedge_mask
from .noise_directional import DirectionalFactor

if TYPE_CHECKING:  # pragma: no cover
    import torch

K_MAX = math.sqrt(3.0) / 2.0  # largest |k| on any grid, cycles/voxel
METHODS = ("halves", "data", "given")
#: `NoiseModel.filtered` works on at least this many radial points (the estimators' shell count)
FILTER_SHELLS = 32


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
    missing wedge, optionally shaped by a `directional` factor. See the module docstring.

    `data_variance`, `data_psd` and `data_missing_psd` describe the observation the model was
    estimated on (its variance, and its total PSD per shell in the measured and the missing
    region); they are optional diagnostics used by `cryogen.qc.warnings.check_noise`. Use `scaled` to change units,
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
    directional: DirectionalFactor | None = None
    missing_shape: tuple[float, ...] = ()

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
        missing_shape = _floats(self.missing_shape, "missing_shape")
        if missing_shape and min(missing_shape) < 0:
            raise CryogenError("noise model: missing_shape must be >= 0")
        for name, values in (
            ("data_psd", data_psd),
            ("data_missing_psd", data_missing),
            ("missing_shape", missing_shape),
        ):
            if values and len(values) != len(freqs):
                raise CryogenError(
                    f"noise model: {name} must have one value per shell ({len(freqs)}), not {len(values)}"
                )
        data_var = None if self.data_variance is None else float(self.data_variance)
        if data_var is not None and not (math.isfinite(data_var) and data_var >= 0):
            raise CryogenError(f"noise model: data_variance must be finite and >= 0, not {self.data_variance!r}")
        directional = self.directional
        if isinstance(directional, dict):
            directional = DirectionalFactor.from_dict(directional) if directional else None
        if directional is not None and not isinstance(directional, DirectionalFactor):
            raise CryogenError(f"noise model: directional must be a dict or None, not {type(directional).__name__}")
        for name, value in (
            ("directional", directional),
            ("sigma", sigma),
            ("missing_psd", missing),
            ("shell_freqs", freqs),
            ("measured_psd", psd),
            ("data_variance", data_var),
            ("data_psd", data_psd),
            ("data_missing_psd", data_missing),
            ("missing_shape", missing_shape),
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

    def filtered(
        self, power_gain: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...], wedge: Wedge
    ) -> NoiseModel:
        """The model of the noise after a radial linear filter (a CTF deconvolution) whose power
        transfer |H|^2 at |k| (cycles/voxel) is `power_gain`: each measured shell's PSD times
        |H|^2 averaged over that shell's measured coefficients on the grid of `shape`, the missing
        level times its average over the missing coefficients; sigma is what the result implies
        for `shape`. Why: a filter that boosts some frequencies more than others makes the noise
        anything but flat, so the data-alone estimate (flat per region) must be made on the
        unfiltered data and carried through the filter, not made on the filtered data. The
        diagnostics (data_*) describe the unfiltered observation and are dropped."""
        shape3 = _shape3(shape)
        radius = frequency_radius(shape3)
        gain = np.asarray(power_gain(radius), dtype=np.float64)
        if gain.shape != radius.shape or not np.isfinite(gain).all() or gain.min() < 0:
            raise CryogenError("noise model: a filter's power gain must be finite and >= 0 on the grid")
        mask = wedge_mask(shape3, wedge)
        weights = np.broadcast_to(rfft_weights(shape3[2]), radius.shape)
        freqs, psd = np.asarray(self.shell_freqs), np.asarray(self.measured_psd)
        if len(freqs) < FILTER_SHELLS:  # a flat model's two points would average the gain over half of |k|
            fine = (np.arange(FILTER_SHELLS) + 0.5) * (K_MAX / FILTER_SHELLS)
            freqs, psd = fine, np.interp(fine, freqs, psd)
        # each shell_freqs point stands for the coefficients nearer to it than to its neighbours
        edges = np.concatenate([[-np.inf], 0.5 * (freqs[1:] + freqs[:-1]), [np.inf]])
        shell = np.searchsorted(edges, radius, side="right") - 1
        sel = mask & (radius > 0)
        sums = np.bincount(shell[sel], weights=(gain * weights)[sel], minlength=len(freqs))
        counts = np.bincount(shell[sel], weights=weights[sel], minlength=len(freqs))
        full = counts > 0
        shell_gain = np.interp(freqs, freqs[full], sums[full] / counts[full]) if full.any() else np.ones(len(freqs))
        missing_gain = float((gain * weights)[~mask].sum() / weights[~mask].sum()) if (~mask).any() else 1.0
        missing_shape: tuple[float, ...] = ()
        if self.missing_shape:  # each |k| by its own gain (the gain is radial), the level by the mean
            shaped = np.interp(freqs, self.shell_freqs, self.missing_shape) * shell_gain
            missing_shape = tuple(float(v) for v in shaped / missing_gain) if missing_gain > 0 else ()
        out = replace(
            self,
            sigma=0.0,
            shell_freqs=tuple(float(f) for f in freqs),
            measured_psd=tuple(float(v) for v in psd * shell_gain),
            missing_shape=missing_shape,
            missing_psd=self.missing_psd * missing_gain,
            data_variance=None,
            data_psd=(),
            data_missing_psd=(),
        )
        return replace(out, sigma=math.sqrt(out.variance(shape3, wedge)))

    # -- the PSD on a grid ------------------------------------------------------------------

    def psd(self, shape: tuple[int, ...], wedge: Wedge) -> np.ndarray:
        """The 3-D PSD (float64) on the rfftn grid of the last three axes of `shape`."""
        shape3 = _shape3(shape)
        radius = frequency_radius(shape3)
        out = np.interp(radius, self.shell_freqs, self.measured_psd)
        missing = ~wedge_mask(shape3, wedge)
        if self.missing_shape:
            out[missing] = self.missing_psd * np.interp(radius[missing], self.shell_freqs, self.missing_shape)
        else:
            out[missing] = self.missing_psd
        if self.directional is not None:
            out *= self.directional.evaluate(shape3, wedge)
        return out

    def missing_profile(self) -> np.ndarray:
        """The missing wedge's PSD at each of `shell_freqs` (before the directional factor)."""
        if self.missing_shape:
            return self.missing_psd * np.asarray(self.missing_shape)
        return np.full(len(self.shell_freqs), self.missing_psd)

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
        """A JSON-able dict (plain floats and lists) for Zarr attributes and checkpoints; the
        "directional" and "missing_shape" keys only when the model has them (other models' dicts
        are as before)."""
        out = {
            "sigma": self.sigma,
            "shell_freqs": list(self.shell_freqs),
            "measured_psd": list(self.measured_psd),
            "missing_psd": self.missing_psd,
            "method": self.method,
            "data_variance": self.data_variance,
            "data_psd": list(self.data_psd),
            "data_missing_psd": list(self.data_missing_psd),
        }
        if self.directional is not None:
            out["directional"] = self.directional.as_dict()
        if self.missing_shape:
            out["missing_shape"] = list(self.missing_shape)
        return out

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
    psd = model.psd(shape3, wedge)
    if sqrt:
        psd = np.sqrt(psd)
    return cached_tensor(psd.astype(np.float32), device)
