"""Quality of a reconstruction against a known ground truth: the project's yardstick.

`evaluate(recon, truth, wedge, voxel_size)` returns, as plain floats:

- ``cc``: the Pearson correlation of the two volumes in real space.
- ``fsc_0.5`` / ``fsc_0.143``: where the Fourier shell correlation first falls below 0.5 / 0.143,
  in cycles per voxel, linearly interpolated between shells (0.5, Nyquist, if it never does);
  ``fsc_0.5_angstrom`` / ``fsc_0.143_angstrom``: the same as a resolution, voxel_size / freq
  (None when the voxel size is unknown).
- ``wedge_recovery``: fit a * recon + b to the truth by least squares in real space; then
  1 - sum_W |F(fit - truth)|^2 / sum_W |F(truth - mean(truth))|^2 over the Fourier coefficients W
  in the missing wedge with 0 < |k| <= 0.25 cycles per voxel. 1 is perfect, 0 is no better than
  an empty wedge, negative is worse than that. None when the truth has no power there (an empty
  wedge, or a truth that was itself wedge-filtered).
- ``measured_recovery``: the same over the measured coefficients (same band).

Two diagnostics beside them (not part of the yardstick): ``wedge_recovery_no_z_profile`` is
``wedge_recovery`` without the coefficients on the kz axis (kx = ky = 0), and ``cc_no_z_profile``
the cc after removing each z plane's mean from both volumes. The kz axis holds the z profile, the
mean density of each plane along the beam (the ice slab, above all); no tilt range ever measures
it, so no method can learn it from the data, yet in a slab-shaped specimen it holds most of the
wedge's low-frequency power and much of the variance. These two say how much of the rest a
reconstruction recovers.

Frequencies are |k| in cycles per voxel with k from fftfreq per axis, so non-cubic volumes work.
FSC shells are |k| in [(i - 1/2) w, (i + 1/2) w) with centre i w, w = 1 / max(shape), for
i = 1 .. max(shape) // 2 (the DC term belongs to no shell). The FSC at k = 0 is taken as 1, so a
curve already below the threshold in its first shell crosses between 0 and that shell.

Everything is computed in float64 on the half spectrum (rfft layout, with each coefficient that
stands for itself and its Hermitian mirror counted twice); the result equals the full-FFT
definition. Memory: two complex128 half spectra (about 16 bytes per voxel in all) plus small
index arrays; the real-space passes and the float64 conversion go slab by slab, so float32 or
memory-mapped inputs are never copied whole.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np
import scipy.fft

from ..errors import CryogenError
from ..model.imaging import Wedge, as_volume, frequency_radius, rfft_weights, wedge_mask

THRESHOLDS = (0.5, 0.143)
BAND_MAX = 0.25  # cycles per voxel: the band of the recovery metrics, 0 < |k| <= BAND_MAX
KEYS = (
    "cc",
    "fsc_0.5",
    "fsc_0.143",
    "fsc_0.5_angstrom",
    "fsc_0.143_angstrom",
    "wedge_recovery",
    "measured_recovery",
    "wedge_recovery_no_z_profile",
    "cc_no_z_profile",
)
_SLAB_ELEMENTS = 1 << 22  # elements per slab in the chunked passes
_EMPTY_POWER = 1e-10  # truth power in a region below this fraction of its total (k != 0): undefined


# --------------------------------------------------------------------------------------- checks


def _shape3(x: np.ndarray) -> tuple[int, int, int]:
    nz, ny, nx = (int(s) for s in x.shape)
    return nz, ny, nx


def _check_pair(a: Any, b: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Two (Z, Y, X) volumes of the same shape (not copied), else a one-line error."""
    a = as_volume(a, names[0])
    b = as_volume(b, names[1])
    if a.shape != b.shape:
        raise CryogenError(f"{names[0]} shape {tuple(a.shape)} differs from {names[1]} shape {tuple(b.shape)}")
    return a, b


def _slabs(nz: int, plane: int):
    step = max(1, _SLAB_ELEMENTS // max(1, plane))
    for z0 in range(0, nz, step):
        yield slice(z0, min(nz, z0 + step))


def _slab64(x: np.ndarray, s: slice) -> np.ndarray:
    return np.asarray(x[s], dtype=np.float64)


def _check_finite(x: np.ndarray, what: str) -> None:
    if np.issubdtype(x.dtype, np.floating):
        for s in _slabs(x.shape[0], x.shape[1] * x.shape[2]):
            if not np.isfinite(x[s]).all():
                raise CryogenError(f"{what} contains NaN or Inf values")


# ----------------------------------------------------------------------------------- real space


def _moments(recon: np.ndarray, truth: np.ndarray) -> tuple[float, float, float, float, float]:
    """Means of recon and truth, and the centred sums s_rr, s_tt, s_rt (two slab-wise passes)."""
    n = recon.size
    plane = recon.shape[1] * recon.shape[2]
    sum_r = sum_t = 0.0
    for s in _slabs(recon.shape[0], plane):
        sum_r += float(_slab64(recon, s).sum())
        sum_t += float(_slab64(truth, s).sum())
    mr, mt = sum_r / n, sum_t / n
    s_rr = s_tt = s_rt = 0.0
    for s in _slabs(recon.shape[0], plane):
        r = _slab64(recon, s) - mr
        t = _slab64(truth, s) - mt
        s_rr += float(np.vdot(r, r))
        s_tt += float(np.vdot(t, t))
        s_rt += float(np.vdot(r, t))
    return mr, mt, s_rr, s_tt, s_rt


def _is_constant(x: np.ndarray) -> bool:
    lo, hi = math.inf, -math.inf
    for s in _slabs(x.shape[0], x.shape[1] * x.shape[2]):
        lo = min(lo, float(x[s].min()))
        hi = max(hi, float(x[s].max()))
    return lo == hi


# ------------------------------------------------------------------------------- Fourier space


def _rfft3(x: np.ndarray) -> np.ndarray:
    """rfftn of a real volume in float64, without a whole float64 copy of the input."""
    nz, ny, nx = x.shape
    out = np.empty((nz, ny, nx // 2 + 1), dtype=np.complex128)
    for s in _slabs(nz, ny * nx):
        out[s] = scipy.fft.rfft(_slab64(x, s), axis=-1, workers=-1)
    return scipy.fft.fftn(out, axes=(0, 1), overwrite_x=True, workers=-1)  # in place


class _Geometry:
    """Per-coefficient shell index and band membership for one shape (rfft layout)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = shape
        n = max(shape)
        self.n_shells = n // 2
        self.freqs = np.arange(1, self.n_shells + 1) / n
        radius = frequency_radius(shape, rfft=True)
        self.band = (radius > 0) & (radius <= BAND_MAX)
        radius *= n  # in place from here on: radius becomes the shell index
        radius += 0.5
        np.floor(radius, out=radius)
        np.minimum(radius, self.n_shells + 1, out=radius)  # n_shells + 1: beyond the last shell
        dtype = np.int16 if self.n_shells + 1 < np.iinfo(np.int16).max else np.int32
        self.shell = radius.astype(dtype)
        del radius
        self.weights = rfft_weights(shape[2])


def _shell_sums(fa: np.ndarray, fb: np.ndarray, geo: _Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nbins = geo.n_shells + 2
    cross, pa, pb = np.zeros(nbins), np.zeros(nbins), np.zeros(nbins)
    nz, ny, nh = fa.shape
    for s in _slabs(nz, ny * nh):
        a, b = fa[s], fb[s]
        idx = geo.shell[s].ravel()
        w = geo.weights
        cross += np.bincount(idx, (w * (a.real * b.real + a.imag * b.imag)).ravel(), nbins)
        pa += np.bincount(idx, (w * (a.real**2 + a.imag**2)).ravel(), nbins)
        pb += np.bincount(idx, (w * (b.real**2 + b.imag**2)).ravel(), nbins)
    sl = slice(1, geo.n_shells + 1)
    return cross[sl], pa[sl], pb[sl]


def _fsc_from_sums(cross: np.ndarray, pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    denom = np.sqrt(pa * pb)
    fsc = np.zeros_like(cross)
    ok = denom > 0
    fsc[ok] = cross[ok] / denom[ok]
    return np.clip(fsc, -1.0, 1.0)


def _crossing(freqs: np.ndarray, fsc: np.ndarray, threshold: float) -> float:
    """First frequency where the FSC falls below `threshold`, interpolated; 0.5 if it never does."""
    below = np.flatnonzero(fsc < threshold)
    if below.size == 0:
        return 0.5
    i = int(below[0])
    f0, c0 = (0.0, 1.0) if i == 0 else (float(freqs[i - 1]), float(fsc[i - 1]))
    f1, c1 = float(freqs[i]), float(fsc[i])
    return f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0)


def _region_sums(
    fr: np.ndarray, ft: np.ndarray, scale: float, geo: _Geometry, wedge: Wedge
) -> tuple[float, float, float, float, float, float, float]:
    """sum |a R - T|^2 and sum |T|^2 inside the wedge and over the measured region (band only),
    the truth's total power at k != 0, and the wedge sums on the kz axis alone."""
    measured = wedge_mask(geo.shape, wedge, rfft=True)
    err_w = pow_w = err_m = pow_m = total = err_z = pow_z = 0.0
    nz, ny, nh = fr.shape
    w = geo.weights
    for s in _slabs(nz, ny * nh):
        r, t = fr[s], ft[s]
        d = scale * r - t
        err = w * (d.real**2 + d.imag**2)
        pw = w * (t.real**2 + t.imag**2)
        band, meas = geo.band[s], measured[s]
        in_wedge = band & ~meas
        in_meas = band & meas
        err_w += float(err[in_wedge].sum())
        pow_w += float(pw[in_wedge].sum())
        err_z += float(err[:, 0, 0][in_wedge[:, 0, 0]].sum())  # the kz axis: the z profile
        pow_z += float(pw[:, 0, 0][in_wedge[:, 0, 0]].sum())
        err_m += float(err[in_meas].sum())
        pow_m += float(pw[in_meas].sum())
        total += float(pw.sum())
    total -= float(abs(ft[0, 0, 0]) ** 2)  # the DC term
    return err_w, pow_w, err_m, pow_m, total, err_z, pow_z


def _recovery(err: float, power: float, total: float) -> float | None:
    if not power > _EMPTY_POWER * total:
        return None
    return float(1.0 - err / power)


# ------------------------------------------------------------------------------------ public


def fsc_curve(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Fourier shell correlation of two volumes, both (Z, Y, X): (shell centre frequencies, fsc).

    Shell i (i = 1 .. max(shape) // 2) holds |k| in [(i - 1/2) w, (i + 1/2) w), w = 1 / max(shape),
    |k| in cycles per voxel; a shell where either volume has no power gets FSC 0.
    """
    a, b = _check_pair(a, b, ("first volume", "second volume"))
    _check_finite(a, "first volume")
    _check_finite(b, "second volume")
    geo = _Geometry(_shape3(a))
    fa = _rfft3(a)
    fb = _rfft3(b)
    return geo.freqs.copy(), _fsc_from_sums(*_shell_sums(fa, fb, geo))


def _voxel_size(voxel_size) -> float | None:
    if voxel_size is None:
        return None
    if not isinstance(voxel_size, (Real, np.floating, np.integer)) or isinstance(voxel_size, bool):
        raise CryogenError(f"voxel size must be a number, not {voxel_size!r}")
    v = float(voxel_size)
    return v if math.isfinite(v) and v > 0 else None


def evaluate(recon: np.ndarray, truth: np.ndarray, wedge: Wedge = Wedge(), voxel_size: float | None = None) -> dict:
    """Compare `recon` with the ground truth `truth` (both (z, y, x)); see the module docstring.

    Returns {"cc", "fsc_0.5", "fsc_0.143", "fsc_0.5_angstrom", "fsc_0.143_angstrom",
    "wedge_recovery", "measured_recovery"} as plain Python floats (None where undefined).
    """
    recon, truth = _check_pair(recon, truth, ("reconstruction", "truth"))
    if not isinstance(wedge, Wedge):
        raise CryogenError(f"wedge must be a cryogen.model.imaging.Wedge, not {type(wedge).__name__}")
    voxel = _voxel_size(voxel_size)
    _check_finite(recon, "reconstruction")
    _check_finite(truth, "truth")
    if _is_constant(truth):
        raise CryogenError("truth is constant: nothing to compare against")

    _, _, s_rr, s_tt, s_rt = _moments(recon, truth)
    if s_rr > 0:
        cc = max(-1.0, min(1.0, s_rt / math.sqrt(s_rr * s_tt)))
        scale = s_rt / s_rr  # least-squares a in a * recon + b ~ truth; b only touches k = 0
    else:  # a constant reconstruction: no correlation, the best fit is the truth's mean
        cc, scale = 0.0, 0.0

    geo = _Geometry(_shape3(truth))
    fr = _rfft3(recon)
    ft = _rfft3(truth)
    fsc = _fsc_from_sums(*_shell_sums(fr, ft, geo))
    err_w, pow_w, err_m, pow_m, total, err_z, pow_z = _region_sums(fr, ft, scale, geo, wedge)
    del fr, ft

    result: dict = {"cc": float(cc)}
    freq = {t: float(_crossing(geo.freqs, fsc, t)) for t in THRESHOLDS}
    result["fsc_0.5"] = freq[0.5]
    result["fsc_0.143"] = freq[0.143]
    result["fsc_0.5_angstrom"] = None if voxel is None else float(voxel / freq[0.5])
    result["fsc_0.143_angstrom"] = None if voxel is None else float(voxel / freq[0.143])
    result["wedge_recovery"] = _recovery(err_w, pow_w, total)
    result["measured_recovery"] = _recovery(err_m, pow_m, total)
    # diagnostics without the z profile (the mean density of each z plane, e.g. the ice slab):
    # it lives on the kz axis, which no tilt range measures, so no data-driven method can know it
    result["wedge_recovery_no_z_profile"] = _recovery(err_w - err_z, pow_w - pow_z, total)
    result["cc_no_z_profile"] = _cc_without_z_profile(recon, truth)
    return result


def _cc_without_z_profile(recon: np.ndarray, truth: np.ndarray) -> float:
    r = recon - recon.mean(axis=(1, 2), keepdims=True, dtype=np.float64)
    t = truth - truth.mean(axis=(1, 2), keepdims=True, dtype=np.float64)
    den = math.sqrt(float((r * r).sum()) * float((t * t).sum()))
    return float((r * t).sum() / den) if den > 0 else 0.0
