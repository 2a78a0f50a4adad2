"""The tilt-series forward model: simulated tomograms made the way real ones are made.

`simulate` (the ideal model) multiplies the phantom's spectrum by a binary wedge and adds noise
shaped by the same wedge. Here the phantom (density relative to vacuum) is instead projected at
each tilt of a tilt series (`TiltScheme`: range, step, acquisition order; tilt axis y or x) by the
slab projector of `cryogen.sim.projection`; each image is optionally degraded by radiation damage
that grows with the dose accumulated in acquisition order (`Dose`) and by the microscope's CTF
(`CTF`, phase-flipped by default), all at a pixel `binning` times finer than the output and then
decimated without an anti-alias filter (aliasing, as in binned tomograms); Gaussian noise is
added per image (optionally stronger at high tilt, where the path through the ice is longer);
and the volume is reconstructed by weighted back-projection (ramp or SIRT-like filter). Even and
odd halves are reconstructed from alternating tilts, so their noise is independent, and their
mean is the full reconstruction.

What differs from the ideal model, and what real tomograms show: the measured region of Fourier
space is a fan of discrete planes, one per tilt, that overlap at low frequency but leave gaps
between them at high frequency (beyond ~ 1 / (thickness * step)); noise is back-projected along
the tilt directions, so it is streaky and directional (its power lies on the planes) instead of
filling the wedge evenly; the wedge edge is soft (the last planes have a finite width and the
volume is cut to the slab's box in z); and the detector samples each projection at its own pixel,
so high tilts alias. The CTF removes the lowest frequencies and, uncorrected, flips contrast
between its zeros; damage weakens the high frequencies of the last images taken.

SNR is defined as in `simulate`: var(signal) / var(noise) over the reconstructed volume, where
the signal is the reconstruction of the noise-free images (so it carries the CTF, damage and
aliasing) and the noise is the reconstruction of the image noise. The mean level of a weighted
back-projection is arbitrary (the ramp filter removes the DC); it is set to the truth's mean.
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from ..errors import CryogenError
from ..model.imaging import Wedge
from .ctf import CTF, ctf_curve, dose_attenuation, filter_images
from .phantom import BAND_LIMIT_SIGMA, VACUUM, check_count, check_positive, check_seed, check_shape, make_phantom
from .projection import MAX_TILT, RECON_FILTERS, SlabProjector, weighted_backprojection
from .simulate import Simulation

__all__ = ["ORDERS", "Dose", "TiltScheme", "acquire", "dose_weight", "misalign", "reconstruct", "simulate_tilt_series"]

ORDERS = ("dose-symmetric", "bidirectional", "sequential")


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise CryogenError(f"{name} must be a finite number, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class TiltScheme:
    """Tilts from `tilt_min` to `tilt_max` (degrees) every `step`, about `axis` ('y' or 'x').

    `order` is the acquisition order, which matters only with dose-dependent damage:
    'dose-symmetric' (0, +step, -step, +2 step, ...; Hagen et al. 2017), 'bidirectional'
    (0 up to tilt_max, then down to tilt_min) or 'sequential' (tilt_min up to tilt_max).
    """

    tilt_min: float = -60.0
    tilt_max: float = 60.0
    step: float = 3.0
    order: str = "dose-symmetric"
    axis: str = "y"

    def __post_init__(self) -> None:
        lo, hi, step = (
            _finite("tilt_min", self.tilt_min),
            _finite("tilt_max", self.tilt_max),
            _finite("step", self.step),
        )
        if step <= 0:
            raise CryogenError(f"tilt step must be positive, not {step:g}")
        if lo < -90 or hi > 90:
            raise CryogenError(f"tilt range {lo:g}..{hi:g} goes beyond +-90 degrees")
        if max(abs(lo), abs(hi)) > MAX_TILT:
            raise CryogenError(f"tilt range {lo:g}..{hi:g}: tilts beyond +-{MAX_TILT:g} send the beam along the slab")
        if hi - lo < step:
            raise CryogenError(f"tilt range {lo:g}..{hi:g} with step {step:g} holds fewer than 2 tilts")
        if self.order not in ORDERS:
            raise CryogenError(f"tilt order must be one of {', '.join(ORDERS)}, not {self.order!r}")
        if self.axis not in ("y", "x"):
            raise CryogenError(f"tilt axis must be 'y' or 'x', not {self.axis!r}")
        for name, v in (("tilt_min", lo), ("tilt_max", hi), ("step", step)):
            object.__setattr__(self, name, v)

    def angles(self) -> np.ndarray:
        """The tilts in degrees, ascending."""
        n = math.floor((self.tilt_max - self.tilt_min) / self.step + 1e-9) + 1
        return self.tilt_min + self.step * np.arange(n)

    def acquisition_rank(self) -> np.ndarray:
        """For each tilt of `angles()`, its position (0 = first) in the acquisition."""
        a = self.angles()
        start = int(np.argmin(np.abs(a)))
        if self.order == "sequential":
            sequence = np.arange(len(a))
        elif self.order == "bidirectional":
            sequence = np.concatenate([np.arange(start, len(a)), np.arange(start - 1, -1, -1)])
        else:  # by |tilt|, the positive side first at each |tilt|
            sequence = np.lexsort((a < 0, np.abs(a - a[start])))
        rank = np.empty(len(a), dtype=np.int64)
        rank[sequence] = np.arange(len(a))
        return rank

    def wedge(self) -> Wedge:
        """The nominal wedge of these tilts (first and last angle)."""
        a = self.angles()
        return Wedge(float(a[0]), float(a[-1]), self.axis)


@dataclass(frozen=True)
class Dose:
    """Dose-dependent image quality: damage with accumulated exposure, and the loss of signal
    through thicker ice at high tilt.

    Each image receives `electrons_per_tilt` (e/A^2) and is damaged by the dose accumulated up
    to the middle of its exposure, in acquisition order. With `thickness_mfp` > 0 (ice thickness
    over the inelastic mean free path, ~0.5 for 150 nm), fewer electrons cross the specimen at
    high tilt, and the noise relative to the signal grows as exp(thickness_mfp / (2 cos(tilt))).
    """

    electrons_per_tilt: float = 3.0
    thickness_mfp: float = 0.0

    def __post_init__(self) -> None:
        e = _finite("electrons_per_tilt", self.electrons_per_tilt)
        t = _finite("thickness_mfp", self.thickness_mfp)
        if e <= 0 or t < 0:
            raise CryogenError(f"dose needs electrons_per_tilt > 0 and thickness_mfp >= 0, not {e:g} and {t:g}")
        object.__setattr__(self, "electrons_per_tilt", e)
        object.__setattr__(self, "thickness_mfp", t)

    def exposure(self, tilts: TiltScheme) -> np.ndarray:
        """Accumulated dose (e/A^2) at the middle of each tilt's exposure, per tilt of `angles()`."""
        return (tilts.acquisition_rank() + 0.5) * self.electrons_per_tilt

    def noise_factor(self, tilts: TiltScheme) -> np.ndarray:
        """Noise std of each tilt relative to the zero tilt's."""
        cos = np.cos(np.radians(tilts.angles()))
        return np.exp(0.5 * self.thickness_mfp * (1.0 / cos - 1.0))


def _axis_first(volume: np.ndarray, axis: str) -> np.ndarray:
    """(z, y, x) -> the projector's layout, tilt axis in the middle: a view, also its own inverse."""
    return volume if axis == "y" else np.swapaxes(volume, 1, 2)


def acquire(
    volume: np.ndarray,
    tilts: TiltScheme,
    pixel_size: float,
    *,
    ctf: CTF | None = None,
    dose: Dose | None = None,
    binning: int = 1,
) -> np.ndarray:
    """Noise-free tilt-series images of a (z, y, x) `volume` (density relative to vacuum, voxels
    of `pixel_size` A), decimated by `binning`: float32 (tilt, n_axis / binning, n_in / binning),
    where n_axis is the size along the tilt axis and n_in the other in-plane size.

    Line integrals are in units of output voxels; the detector grid is placed so that image pixel
    i of the decimated series sits over output voxel i (the volume's sample binning * i).
    """
    vol = _axis_first(np.asarray(volume, dtype=np.float32), tilts.axis)
    nz, _, nx = vol.shape
    if nz % binning or nx % binning or vol.shape[1] % binning:
        raise CryogenError(f"volume shape {volume.shape} is not divisible by the binning {binning}")
    centre = (binning * (nz // binning - 1) / 2, binning * (nx // binning - 1) / 2, binning * (nx // binning - 1) / 2)
    images = SlabProjector(nz, nx, tilts.angles(), centre=centre).forward(vol) / np.float32(binning)
    if ctf is not None or dose is not None:
        exposure = None if dose is None else dose.exposure(tilts)[:, None, None]

        def transfer(k: np.ndarray) -> np.ndarray:
            h = np.ones_like(k) if ctf is None else ctf_curve(k, ctf)
            return h if exposure is None else h[None] * dose_attenuation(k[None], exposure)

        images = filter_images(images, transfer, pixel_size)
    return np.ascontiguousarray(images[:, ::binning, ::binning])


def dose_weight(images: np.ndarray, tilts: TiltScheme, dose: Dose, pixel_size: float) -> np.ndarray:
    """Dose weighting as processing pipelines apply it to each image of a (tilt, y, u) stack, signal
    and noise alike: each frequency scaled by the amplitude a structure keeps after that image's
    accumulated exposure (`dose_attenuation`), so the images taken last count less at high
    frequency. It reshapes the measured power by tilt angle the way real tomograms show it (highest
    near 0 degrees in a dose-symmetric series); float32, the stack's shape."""
    exposure = dose.exposure(tilts)[:, None, None]
    return filter_images(images, lambda k: dose_attenuation(k[None], exposure), pixel_size)


def misalign(images: np.ndarray, rms: float, rng: np.random.Generator) -> np.ndarray:
    """Each image of a (tilt, y, u) stack shifted by its own random (dy, du), `rms` pixels per axis
    (a Fourier shift: sub-pixel, periodic): the residual error of a tilt series' alignment, which
    blurs the reconstruction anisotropically and most at high frequency; float32."""
    shifts = rng.normal(0.0, float(rms), (images.shape[0], 2))
    ky = np.fft.fftfreq(images.shape[1])[:, None]
    ku = np.fft.rfftfreq(images.shape[2])[None, :]
    ramps = np.exp(-2j * np.pi * (ky[None] * shifts[:, 0, None, None] + ku[None] * shifts[:, 1, None, None]))
    spectrum = np.fft.rfft2(images) * ramps
    return np.fft.irfft2(spectrum, s=images.shape[1:]).astype(np.float32)


def reconstruct(
    images: np.ndarray,
    angles: np.ndarray,
    step: float,
    shape: tuple[int, int, int],
    axis: str = "y",
    recon_filter: str = "ramp",
    sirt_iterations: int = 15,
) -> np.ndarray:
    """Weighted back-projection of (tilt, n_axis, n_in) `images` taken at `angles` (degrees), each
    standing for `step` degrees of tilt, into a float32 (z, y, x) volume of `shape`."""
    nz, ny, nx = shape
    n_axis, n_in = (ny, nx) if axis == "y" else (nx, ny)
    if images.shape != (len(angles), n_axis, n_in):
        raise CryogenError(f"images shape {images.shape} does not match {len(angles)} tilts of a {shape} volume")
    projector = SlabProjector(nz, n_in, angles)
    vol = weighted_backprojection(images, projector, step, recon_filter, sirt_iterations)
    return np.ascontiguousarray(_axis_first(vol, axis))


def _coarse_truth(fine: np.ndarray, binning: int) -> np.ndarray:
    """The truth at the output grid: the fine phantom band-limited as `make_phantom` does at that
    grid (Gaussian, BAND_LIMIT_SIGMA output voxels), then sampled where the detector samples it."""
    if binning == 1:
        return fine
    extra = BAND_LIMIT_SIGMA * math.sqrt(binning**2 - 1.0)  # on top of the fine phantom's own
    smooth = gaussian_filter(fine, extra, mode="nearest")
    return np.ascontiguousarray(smooth[::binning, ::binning, ::binning], dtype=np.float32)


def _check_options(
    tilts: object, ctf: object, dose: object, binning: object, recon_filter: object, sirt_iterations: object
) -> None:
    if not isinstance(tilts, TiltScheme):
        raise CryogenError(f"tilts must be a TiltScheme, not {type(tilts).__name__}")
    if ctf is not None and not isinstance(ctf, CTF):
        raise CryogenError(f"ctf must be a CTF or None, not {type(ctf).__name__}")
    if dose is not None and not isinstance(dose, Dose):
        raise CryogenError(f"dose must be a Dose or None, not {type(dose).__name__}")
    if recon_filter not in RECON_FILTERS:
        raise CryogenError(f"reconstruction filter must be one of {', '.join(RECON_FILTERS)}, not {recon_filter!r}")
    _integer("binning", binning, 1, 8)
    _integer("sirt_iterations", sirt_iterations, 1, 10**6)


def _integer(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= int(value) <= high:
        raise CryogenError(f"{name} must be an integer from {low} to {high}, not {value!r}")
    return int(value)


def simulate_tilt_series(
    shape: tuple[int, int, int],
    tilts: TiltScheme,
    snr: float,
    seed: int,
    voxel_size: float = 10.0,
    halves: bool = False,
    *,
    ctf: CTF | None = None,
    dose: Dose | None = None,
    binning: int = 1,
    recon_filter: str = "ramp",
    sirt_iterations: int = 15,
    dose_weighting: bool = False,
    misalignment: float = 0.0,
    phantom: np.ndarray | None = None,
    beads: int = 0,
) -> Simulation:
    """A phantom of `shape` (z, y, x) and its tomogram through the tilt-series model, with noise
    scaled so var(signal) / var(noise) = `snr` in the reconstruction (see the module docstring).

    Each effect is switched alone: `ctf` (None: perfect optics), `dose` (None: no damage, equal
    noise per tilt), `binning` (1: no aliasing), `recon_filter` ('ramp' or 'sirt', with
    `sirt_iterations`), `dose_weighting` (the images weighted by their exposure, `dose_weight`;
    needs `dose`), `misalignment` (each image shifted at random, that many pixels rms per axis,
    `misalign`). With `halves`, also even/odd tomograms from alternating tilts; then
    observation == (even + odd) / 2. `phantom`: this truth (density relative to vacuum, `shape`)
    instead of the cellular phantom, at binning 1. `beads`: that many 10 nm gold fiducials in the
    cellular phantom (`make_phantom`); the noise level is then set by the specimen without them,
    so beads change the noise of nothing else. Deterministic given `seed`.
    """
    shape = check_shape(shape)
    snr = check_positive("snr", snr)
    voxel_size = check_positive("voxel_size", voxel_size)
    seed = check_seed(seed)
    _check_options(tilts, ctf, dose, binning, recon_filter, sirt_iterations)
    misalignment = _finite("misalignment", misalignment)
    if misalignment < 0:
        raise CryogenError(f"misalignment must be >= 0 pixels, not {misalignment:g}")
    if dose_weighting and dose is None:
        raise CryogenError("dose weighting needs a dose (electrons per tilt)")
    beads = check_count("beads", beads)
    b = int(binning)
    phantom_rng, noise_rng, align_rng = np.random.default_rng(seed).spawn(3)
    gold = None  # the beads alone, to leave them out of the noise level
    if phantom is None:
        fine_shape = (b * shape[0], b * shape[1], b * shape[2])
        bare_rng = copy.deepcopy(phantom_rng)
        fine = make_phantom(fine_shape, phantom_rng, voxel_size / b, beads=beads)
        if beads:
            gold = fine - make_phantom(fine_shape, bare_rng, voxel_size / b)
        truth = _coarse_truth(fine, b)
        fine = fine - np.float32(VACUUM)  # a new array: at binning 1 the truth is `fine` itself
    else:
        if np.shape(phantom) != shape or b != 1 or beads:
            raise CryogenError(
                f"a given phantom must have the shape {shape}, binning 1 and no beads, not {np.shape(phantom)}, "
                f"{b} and {beads}"
            )
        truth = fine = np.ascontiguousarray(phantom, dtype=np.float32)

    def image(volume: np.ndarray) -> np.ndarray:
        """The tilt series of `volume`, misaligned and dose-weighted alike for every call."""
        out = acquire(volume, tilts, voxel_size / b, ctf=ctf, dose=dose, binning=b)
        if misalignment:
            out = misalign(out, misalignment, copy.deepcopy(align_rng))
        if dose_weighting:
            assert dose is not None
            out = dose_weight(out, tilts, dose, voxel_size)
        return out

    images = image(fine)
    del fine
    specimen = images if gold is None else images - image(gold)
    noise = noise_rng.standard_normal(images.shape, dtype=np.float32)
    if dose_weighting:
        assert dose is not None
        noise = dose_weight(noise, tilts, dose, voxel_size)
    if dose is not None:
        noise *= dose.noise_factor(tilts).astype(np.float32)[:, None, None]
    angles = tilts.angles()
    parts = [slice(0, None, 2), slice(1, None, 2)] if halves else [slice(None)]
    step = tilts.step * len(parts)  # each tilt of a half stands for two steps of tilt

    def wbp(data: np.ndarray, part: slice) -> np.ndarray:
        return reconstruct(data[part], angles[part], step, shape, tilts.axis, recon_filter, int(sirt_iterations))

    signals = [wbp(images, p) for p in parts]
    noises = [wbp(noise, p) for p in parts]
    signal, noise_vol = sum(signals) / np.float32(len(parts)), sum(noises) / np.float32(len(parts))
    if gold is not None:  # the noise level is the bead-free specimen's
        bare = sum(wbp(specimen, p) for p in parts) / np.float32(len(parts))
        target_var = float(np.var(bare, dtype=np.float64)) / snr
        del bare
    else:
        target_var = float(np.var(signal, dtype=np.float64)) / snr
    scale = np.float32(math.sqrt(target_var / max(float(np.var(noise_vol, dtype=np.float64)), 1e-30)))
    offset = np.float32(float(np.mean(truth, dtype=np.float64)) - float(np.mean(signal, dtype=np.float64)))
    vols = [s + offset + scale * n for s, n in zip(signals, noises, strict=True)]
    if halves:
        even, odd = vols
        observation = (even + odd) / np.float32(2)
    else:
        (observation,), even, odd = vols, None, None
    sigma = float(np.std(scale * noise_vol, dtype=np.float64))
    return Simulation(truth, observation.astype(np.float32, copy=False), even, odd, sigma, tilts.wedge())
