"""Measures of a restoration that need no ground truth: what a user can check on a real tomogram.

- `data_consistency`: does the result still explain the data? The FSC, shell by shell, between the
  re-wedged result A x and the input's measured part A y. 1 means the measured frequencies are
  unchanged; denoising lowers it at high frequency (the noise is gone), inventing or losing
  structure lowers it everywhere.
- `wedge_fill`: how much power the missing wedge holds relative to the measured region at the same
  |k| (0: empty, as in the input; about 1: as full as the measured directions). Cheap and general,
  and blind to isotropic filters (a low-pass leaves it unchanged), but it cannot tell filled
  structure from filled noise, and a denoiser that removes the measured region's noise raises
  it a little without filling anything: read it with the next measure.
- `filament_isotropy`: the roundness of a filament's cross-section (a microtubule, an actin
  bundle: any tube lying roughly in the XY plane). The filament is turned onto an axis, averaged
  along its length, and its wall contrast (wall minus the background just inside and outside it)
  is compared where the wall's normal is along the beam (top and bottom, within +-30 degrees:
  erased by the missing wedge) and across it (sides). A round tube gives about 1; an input with
  a missing wedge gives well below 1 (0.21 on the real microtubule crop in ../shared/real; a
  Gaussian low-pass of it, sigma 2 voxels, 0.27).

All take (Z, Y, X) volumes, beam along z, as float arrays held in memory: crop a region around
the structure first for large tomograms.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage, signal

from ..errors import CryogenError
from ..model.imaging import Wedge, apply_wedge_np, frequency_radius, rfft_weights, wedge_mask
from .metrics import BAND_MAX, _crossing, fsc_curve

SECTOR = 30.0  # degrees either side of the vertical (top/bottom) and horizontal (sides)
FILL_BAND = (0.05, BAND_MAX)  # cycles/voxel: above the specimen's overall shape, below the noise


# ------------------------------------------------------------------------- data consistency


@dataclass
class Consistency:
    """The FSC between A x and A y: shell centres (cycles/voxel), per-shell FSC, its mean over
    0 < |k| <= BAND_MAX, and where it first falls below 0.5 (cycles/voxel and angstrom). Also
    its minimum up to Nyquist (0.5 cycles/voxel) and where: the mean hides shells whose sign the
    result inverts (a mean of 0.88 came with -0.8 at 0.25-0.38 cycles/voxel: README); a denoised
    result's FSC falls towards 0 where the input is all noise, but does not go negative."""

    freqs: np.ndarray
    fsc: np.ndarray
    mean: float
    fsc_05: float
    fsc_05_angstrom: float | None
    minimum: float = 1.0
    minimum_at: float = 0.0


def data_consistency(
    restored: np.ndarray, observed: np.ndarray, wedge: Wedge, voxel_size: float | None = None
) -> Consistency:
    """FSC of the re-wedged `restored` against the measured part of `observed`, both (Z, Y, X).

    Both sides are restricted to the measured region (whatever an input holds inside the wedge
    is not data: back-projection leakage and noise)."""
    freqs, fsc = fsc_curve(apply_wedge_np(restored, wedge), apply_wedge_np(observed, wedge))
    band = freqs <= BAND_MAX
    crossing = float(_crossing(freqs, fsc, 0.5))
    angstrom = None if not voxel_size else float(voxel_size) / crossing
    inside = np.flatnonzero((freqs > 0) & (freqs <= 0.5))
    worst = int(inside[np.argmin(fsc[inside])])
    return Consistency(freqs, fsc, float(fsc[band].mean()), crossing, angstrom, float(fsc[worst]), float(freqs[worst]))


# ------------------------------------------------------------------------------ wedge fill


def _taper(n: int) -> np.ndarray:
    """A Hann taper: without it the cut faces of a crop paint lines along the k axes, through
    the wedge."""
    return np.hanning(n + 2)[1:-1]


def wedge_fill(volume: np.ndarray, wedge: Wedge, band: tuple[float, float] = FILL_BAND) -> float:
    """Mean power of the missing wedge's coefficients with |k| in `band`, each divided by the mean
    power of the measured coefficients in its shell (shells of width 1 / max(shape)); the kz
    axis (the z profile, never measured) is left out. `volume` is (Z, Y, X)."""
    v = np.asarray(volume, dtype=np.float64)
    v = v - v.mean()
    nz, ny, nx = v.shape
    v = v * _taper(nz)[:, None, None] * _taper(ny)[None, :, None] * _taper(nx)[None, None, :]
    spec = scipy.fft.rfftn(v, workers=-1)
    power = (spec.real**2 + spec.imag**2) * rfft_weights(nx)
    counts = np.broadcast_to(rfft_weights(nx), power.shape)
    radius = frequency_radius(v.shape, rfft=True)
    use = (radius > band[0]) & (radius <= band[1])
    use[:, 0, 0] = False
    measured = wedge_mask(v.shape, wedge, rfft=True)
    shell = np.floor(radius * max(v.shape) + 0.5).astype(np.int64)
    n = int(shell.max()) + 1

    def sums(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.bincount(shell[mask], power[mask], n), np.bincount(shell[mask], counts[mask], n)

    p_meas, c_meas = sums(use & measured)
    p_wedge, c_wedge = sums(use & ~measured)
    ok = (c_wedge > 0) & (p_meas > 0)
    if not ok.any():
        raise CryogenError(f"no missing-wedge or measured coefficients with |k| in {band} for shape {v.shape}")
    ratio = (p_wedge[ok] / c_wedge[ok]) / (p_meas[ok] / c_meas[ok])
    return float((ratio * c_wedge[ok]).sum() / c_wedge[ok].sum())


# -------------------------------------------------------------------------- filament isotropy


@dataclass
class TubeProfile:
    """What `filament_isotropy` found and measured. Angles in the cross-section: 0 = +x' (a side),
    90 = +z (the top). `section` is (Z, W): the filament averaged along its length, x' across."""

    ratio: float  # top/bottom wall contrast over side wall contrast
    top_bottom: float
    side: float
    axis_angle: float  # degrees in XY from the y axis towards x
    centre: tuple[float, float]  # (z, x') of the tube's centre in `section`
    radius: float  # of the wall's centre line, voxels
    polarity: int  # +1: the wall is denser (brighter) than the background
    section: np.ndarray


def filament_axis(volume: np.ndarray, sigma: float = 2.0) -> float:
    """The dominant in-plane direction (degrees from y towards x, in (-90, 90]) of the (Z, Y, X)
    volume's z-mean: the eigenvector of the smallest eigenvalue of the structure tensor, along
    which the image varies least."""
    image = ndimage.gaussian_filter(np.asarray(volume, dtype=np.float64).mean(axis=0), sigma)
    gy, gx = np.gradient(image)
    tensor = np.array([[np.mean(gy * gy), np.mean(gy * gx)], [np.mean(gy * gx), np.mean(gx * gx)]])
    _, vectors = np.linalg.eigh(tensor)
    dy, dx = vectors[:, 0]
    angle = float(np.degrees(np.arctan2(dx, dy)))
    return angle - 180.0 if angle > 90.0 else angle + 180.0 if angle <= -90.0 else angle


def cross_section(volume: np.ndarray, axis_angle: float) -> np.ndarray:
    """The (Z, W) mean of the (Z, Y, X) volume along the in-plane direction `axis_angle` (degrees
    from y towards x), through the XY centre; x' (across) runs along W. Samples outside the
    volume are left out of the mean."""
    v = np.asarray(volume, dtype=np.float64)
    nz, ny, nx = v.shape
    a = np.radians(axis_angle)
    along, across = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])  # (dy, dx)
    half = 0.5 * np.hypot(ny, nx)
    t = np.arange(-np.floor(half), np.floor(half) + 1)  # steps along (rows) and across (columns)
    yy = (ny - 1) / 2 + t[:, None] * along[0] + t[None, :] * across[0]
    xx = (nx - 1) / 2 + t[:, None] * along[1] + t[None, :] * across[1]
    inside = (yy >= 0) & (yy <= ny - 1) & (xx >= 0) & (xx <= nx - 1)
    count = inside.sum(axis=0)
    cols = count >= max(4, 0.25 * count.max())  # keep columns sampled over a fair length
    section = np.empty((nz, int(cols.sum())))
    for z in range(nz):
        plane = ndimage.map_coordinates(v[z], [yy, xx], order=1, mode="nearest")
        section[z] = (plane * inside).sum(axis=0)[cols] / count[cols]
    return section


def _ring_template(radius: float, wall: float) -> np.ndarray:
    """A zero-mean, unit-norm ring: +1 on the wall, negative inside and just outside it."""
    reach = int(np.ceil(radius + 1.5 * wall))
    z, x = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    r = np.hypot(z, x)
    disk = r <= radius + 1.5 * wall
    t = np.where(np.abs(r - radius) <= wall / 2, 1.0, 0.0)
    t[disk] -= t[disk].mean()
    t[~disk] = 0.0
    return t / np.linalg.norm(t)


def _subvoxel_peak(score: np.ndarray, i: tuple) -> tuple[float, float]:
    """The peak at index `i` of a 2-D score, refined by a parabola through it and its neighbours
    along each axis."""
    out = []
    for axis in range(2):
        lo, hi = list(i), list(i)
        lo[axis] -= 1
        hi[axis] += 1
        offset = 0.0
        if lo[axis] >= 0 and hi[axis] < score.shape[axis]:
            a, b, c = score[tuple(lo)], score[i], score[tuple(hi)]
            curvature = a - 2 * b + c
            if np.isfinite(curvature) and curvature < 0:
                offset = float(np.clip(0.5 * (a - c) / curvature, -0.5, 0.5))
        out.append(float(i[axis]) + offset)
    return out[0], out[1]


def locate_tube(
    section: np.ndarray, radius: float, wall: float, polarity: int | None = None
) -> tuple[tuple[float, float], float, int]:
    """The centre (z, x'), wall radius and polarity of the strongest ring in a (Z, W) cross-section:
    the peak of its correlation with ring templates of radius 0.8 .. 1.2 x `radius`. Centres where
    the wall would leave the section are not considered."""
    s = section - section.mean()
    best = (-np.inf, (0.0, 0.0), radius, 1)
    for r in radius * np.linspace(0.8, 1.2, 9):
        corr = signal.fftconvolve(s, _ring_template(r, wall)[::-1, ::-1], mode="same")
        m = int(np.ceil(r + wall / 2))
        valid = np.full(corr.shape, -np.inf)
        score = np.abs(corr) if polarity is None else polarity * corr
        valid[m : -m or None, m : -m or None] = score[m : -m or None, m : -m or None]
        i = np.unravel_index(int(np.argmax(valid)), valid.shape)
        if valid[i] > best[0]:
            sign = polarity if polarity is not None else (1 if corr[i] > 0 else -1)
            best = (float(valid[i]), _subvoxel_peak(valid, i), float(r), int(sign))
    if not np.isfinite(best[0]):
        raise CryogenError(f"the cross-section {section.shape} is too small for a tube of radius {radius:g} voxels")
    return best[1], best[2], best[3]


def wall_contrast(
    section: np.ndarray, centre: tuple[float, float], radius: float, wall: float, polarity: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Wall contrast against the angle (degrees, 0 = +x', 90 = +z) in a (Z, W) cross-section:
    the mean over the wall (|r - radius| <= wall / 2) minus the mean over the bands of one wall
    width just inside and just outside it, times `polarity`. Samples outside the section are
    left out."""
    angles = np.arange(0.0, 360.0, 2.0)
    radii = np.arange(max(radius - 1.5 * wall, 0.0), radius + 1.5 * wall + 1e-9, 0.5)
    t = np.radians(angles)[:, None]
    zz = centre[0] + radii[None, :] * np.sin(t)
    xx = centre[1] + radii[None, :] * np.cos(t)
    prof = ndimage.map_coordinates(section, [zz, xx], order=1, mode="constant", cval=np.nan)
    on_wall = np.abs(radii - radius) <= wall / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an angle whose samples all fall outside
        contrast = np.nanmean(prof[:, on_wall], axis=1) - np.nanmean(prof[:, ~on_wall], axis=1)
    return angles, polarity * contrast


def filament_isotropy(
    volume: np.ndarray,
    radius: float,
    axis_angle: float | None = None,
    wall: float | None = None,
    polarity: int | None = None,
) -> TubeProfile:
    """Top/bottom-to-side wall contrast of a tube lying roughly in the XY plane of a (Z, Y, X)
    volume; see the module docstring.

    `radius`: the wall's centre line in voxels, roughly (refined within +-20 %); for a
    microtubule about 11 nm over the voxel size. `axis_angle`: the filament's direction in
    degrees from y towards x (None: estimated by `filament_axis`). `wall`: its thickness in
    voxels (None: radius / 3). `polarity`: +1 if the wall is brighter than the background, -1
    if darker, None to find out. With several parallel tubes, the strongest ring is measured
    (its centre is in the result). The ratio is NaN when the sides show no contrast."""
    wall = float(wall) if wall is not None else radius / 3.0
    angle = filament_axis(volume) if axis_angle is None else float(axis_angle)
    section = cross_section(volume, angle)
    centre, r, sign = locate_tube(section, radius, wall, polarity)
    angles, contrast = wall_contrast(section, centre, r, wall, sign)
    off_vertical = np.abs(angles % 180.0 - 90.0)  # degrees from 90 or 270
    off_horizontal = 90.0 - off_vertical  # degrees from 0 or 180
    top_bottom = float(np.nanmean(contrast[off_vertical <= SECTOR]))
    side = float(np.nanmean(contrast[off_horizontal <= SECTOR]))
    ratio = top_bottom / side if side > 0 else float("nan")
    return TubeProfile(ratio, top_bottom, side, angle, centre, r, sign, section)
