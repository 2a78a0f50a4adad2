"""A soft transfer function T(k) for the imaging model, A_T = F^-1 T F, estimated from the data.

The binary wedge (`imaging.wedge_mask`) says a frequency is measured or not, at the nominal
tilt range. A real tomogram's transfer can differ: its edges lie where the data say (weighted
back-projection gives each tilt its angular interval, so the edge sits about half a tilt step
beyond the last tilt), and they may be soft (noisier last tilts, filters, interpolation). `TransferFunction`
holds T as an angular profile per radial shell: T(|k|, theta), theta the tilt angle of k
(`imaging.tilt_angle`, degrees in (-90, 90], 90 along the beam), on a small grid of shell
radii x angle nodes with linear interpolation in both, so one profile serves every tile
shape. T is real, in [0, 1], 1 on the tilt axis (those frequencies lie in every tilted plane)
and made Hermitian-symmetric like the wedge mask, so A_T maps real volumes to real volumes and
is self-adjoint (<A_T x, y> = <x, A_T y>). Built from a `Wedge` it is exactly the binary mask,
and A_T = A is the orthogonal projection (A A = A); a soft T is not idempotent: it is a
filter, the amplitude transfer of the measurement, and A_T A_T = F^-1 T^2 F.

Estimation (`estimate_transfer`): the power in a tomogram is T^2 (S + N) + L, where S is the
specimen's spectrum, N the noise that went through the same reconstruction, and L what
back-projection leaks into the missing wedge (the noise model's business, not T's). From
`qc.geometry`'s Hann-windowed, shell-whitened spectrum of a central crop (<= 128^3), the median
power per shell and 2-degree angle bin (averaged over the tilt-axis component; the median
ignores a filament's strong streaks) is scaled between the floor deep in the wedge (0) and the
level just inside each edge (1), and read as a half-power edge and the sigma of a Gaussian-
blurred step per shell and side. The window and the Fourier grid blur the edge too: the same
reading of the expected spectrum of an ideal observation of the crop's shape measures that, and
it is removed (bias subtracted, blur in quadrature), so an ideal observation gives the binary
wedge back to within a degree. T = sqrt of the product of the two blurred steps in power.
The radial fall-off (reconstruction low-pass, CTF envelope) is NOT put into T: it is isotropic,
so it commutes with the proxy's rotations and already lives in the data x is learnt from; T
carries what rotation must not carry along, the angular shape of the measurement. Gaps between
discrete tilts (3 degrees apart) are below the angular resolution of such a crop (about
1/(N |k|) radians, more at low |k|, widened by the window) and are not represented.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CryogenError
from .imaging import FFT_DIMS, Wedge, cached_tensor, frequency_radius, tilt_angle, wedge_mask

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Shells, and angle bins (every 2 degrees) in which the spectrum is read; the estimate's
#: angle nodes (every degree), fine enough that linear interpolation keeps a sharp edge sharp.
N_SHELLS = 16
N_BINS = 91
N_ANGLES = 181
#: Degrees kept clear of the wedge edges when measuring the level (inside) and floor (outside).
MARGIN = 10.0
#: Regions used when no tilt range is given (as `qc.geometry.tilt_range` does).
INNER, OUTER = 30.0, 80.0
#: A shell whose measured region holds less than this many times the wedge's power says nothing.
CONTRAST = 4.0
#: Gaussian smoothing of the binned profile (sigma: shells, angle nodes), also fills empty bins.
SMOOTH = (0.75, 0.75)
#: Where (degrees inside the first edge estimate) the level just inside the edge is read.
LOCAL = (4.0, 16.0)
#: T at which a side of the wedge is reported as its edge: half of the power is transferred.
HALF_POWER = math.sqrt(0.5)
#: Shells where the crop's own angular blur (sigma, degrees) exceeds this copy the nearest finer one.
MAX_BLUR = 5.0
#: Shells whose edge lies further (degrees) from the median over shells are outliers (the
#: specimen's own low-frequency anisotropy: a slab, a filament) and copy the nearest good one.
MAX_OFF = 6.0
#: Standard normal quantile of 0.9: the 0.9 -> 0.1 power crossings of a blurred step are 2 Z90 sigma apart.
Z90 = 1.2815515655446004


def _crossings(profile: np.ndarray, angles: np.ndarray, level: float) -> np.ndarray:
    """Per row of `profile` (R, n_angles), the angles where it first falls below `level` going
    out from 0 degrees towards -90 and towards +90 (linear between nodes, nan if never): (R, 2)."""
    out = np.full((profile.shape[0], 2), np.nan)
    start = int(np.searchsorted(angles, 0.0))
    for s, row in enumerate(profile):
        for side, order in enumerate((np.arange(start, -1, -1), np.arange(start, len(angles)))):
            below = np.nonzero(row[order] < level)[0]
            if below.size and below[0] > 0:
                j0, j1 = order[below[0] - 1], order[below[0]]
                f = (row[j0] - level) / (row[j0] - row[j1])
                out[s, side] = angles[j0] + f * (angles[j1] - angles[j0])
    return out


def _nanmedian(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """np.nanmedian, nan (without a warning) where everything is nan."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(values, axis=axis)


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64).ravel())


@dataclass(frozen=True)
class TransferFunction:
    """T(|k|, theta): `values[i][j]` at shell radius `radii[i]` (cycles/voxel, increasing) and
    tilt angle `angles[j]` (degrees, increasing from -90 to 90), about `tilt_axis` ('y' or 'x')."""

    radii: tuple[float, ...]
    angles: tuple[float, ...]
    values: tuple[tuple[float, ...], ...]
    tilt_axis: str = "y"

    def __post_init__(self) -> None:
        radii, angles = _floats(self.radii), _floats(self.angles)
        values = np.asarray(self.values, dtype=np.float64)
        if values.shape != (len(radii), len(angles)) or not radii or len(angles) < 2:
            raise CryogenError(
                f"transfer values of shape {values.shape} do not match {len(radii)} radii x {len(angles)} angles"
            )
        if not (np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0):
            raise CryogenError("transfer values must be finite and within [0, 1]")
        if np.any(np.diff(radii) <= 0) or np.any(np.diff(angles) <= 0) or angles[0] != -90.0 or angles[-1] != 90.0:
            raise CryogenError("transfer radii must increase, and its angles increase from -90 to 90 degrees")
        if self.tilt_axis not in ("y", "x"):
            raise CryogenError(f"tilt axis must be 'y' or 'x', not {self.tilt_axis!r}")
        object.__setattr__(self, "radii", radii)
        object.__setattr__(self, "angles", angles)
        object.__setattr__(self, "values", tuple(_floats(row) for row in values))

    @classmethod
    def from_grid(cls, radii: Any, angles: Any, values: Any, tilt_axis: str = "y") -> TransferFunction:
        """From array-likes: radii (R,), angles (A,), values (R, A)."""
        return cls(_floats(radii), _floats(angles), tuple(_floats(row) for row in np.atleast_2d(values)), tilt_axis)

    @classmethod
    def from_wedge(cls, wedge: Wedge) -> TransferFunction:
        """The binary wedge as a profile: steps between adjacent floats at the tilt limits (with
        `wedge_mask`'s tolerance), so it evaluates to exactly `wedge_mask` on any shape."""
        eps = 1e-9
        a, b = wedge.tilt_min - eps, wedge.tilt_max + eps
        beam = b >= 90.0 or a <= -90.0  # the beam axis (angle 90) is measured
        nodes = [(-90.0, 1.0)] if a <= -90.0 else [(-90.0, 0.0), (float(np.nextafter(a, -np.inf)), 0.0), (a, 1.0)]
        if b >= 90.0:
            nodes.append((90.0, 1.0))
        else:
            nodes += [(b, 1.0), (float(np.nextafter(b, np.inf)), 0.0), (float(np.nextafter(90.0, -np.inf)), 0.0)]
            nodes.append((90.0, 1.0 if beam else 0.0))
        angles, values = zip(*sorted(dict(nodes).items()), strict=True)
        return cls.from_grid((0.0,), angles, (values,), wedge.tilt_axis)

    @property
    def profile(self) -> np.ndarray:
        """The values as an array (n_radii, n_angles)."""
        return np.asarray(self.values, dtype=np.float64)

    def as_dict(self) -> dict:
        return {
            "radii": list(self.radii),
            "angles": list(self.angles),
            "values": [list(r) for r in self.values],
            "tilt_axis": self.tilt_axis,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TransferFunction:
        try:
            return cls.from_grid(d["radii"], d["angles"], d["values"], d.get("tilt_axis", "y"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CryogenError(f"not a transfer function: {exc}") from None

    def evaluate(self, shape: tuple[int, int, int], rfft: bool = True) -> np.ndarray:
        """T on the Fourier grid of a (Z, Y, X) volume (float64; rfft layout as `wedge_mask`)."""
        nz, ny, nx = (int(s) for s in shape)
        n_in, n_ax = (nx, ny) if self.tilt_axis == "y" else (ny, nx)
        kz, kp = np.fft.fftfreq(nz)[:, None], np.fft.fftfreq(n_in)[None, :]
        angle = tilt_angle(kz, kp)
        plane = np.stack([np.interp(angle, self.angles, row) for row in self.values])  # (R, nz, n_in)
        plane = np.minimum(plane, plane[:, (-np.arange(nz)) % nz][:, :, (-np.arange(n_in)) % n_in])  # Hermitian
        plane[:, (kz == 0) & (kp == 0)] = 1.0  # the tilt axis (and DC) lies in every tilted plane
        if len(self.radii) == 1:
            t = np.broadcast_to(plane[0][:, :, None], (nz, n_in, n_ax))
        else:
            r = np.sqrt(kz[:, :, None] ** 2 + kp[:, :, None] ** 2 + np.fft.fftfreq(n_ax)[None, None, :] ** 2)
            pos = np.interp(r, self.radii, np.arange(len(self.radii), dtype=np.float64))
            i = np.minimum(pos.astype(np.int64), len(self.radii) - 2)
            w = pos - i
            zi, pi = np.arange(nz)[:, None, None], np.arange(n_in)[None, :, None]
            t = (1.0 - w) * plane[i, zi, pi] + w * plane[i + 1, zi, pi]
        full = t.transpose(0, 2, 1) if self.tilt_axis == "y" else t  # (z, y, x)
        return np.ascontiguousarray(full[..., : nx // 2 + 1] if rfft else full)

    def edges(self, level: float = HALF_POWER) -> np.ndarray:
        """Per shell, the angles (lo, hi) where T first falls below `level` going out from 0
        degrees towards -90 and +90 (default: half power); nan where it never does: (R, 2)."""
        return _crossings(self.profile, np.asarray(self.angles), level)

    def widths(self, high: float = 0.9, low: float = 0.1) -> np.ndarray:
        """Per shell and side, the angular width (degrees) of the edge from `high` to `low`: (R, 2)."""
        return np.abs(self.edges(low) - self.edges(high))


@functools.lru_cache(maxsize=32)
def _transfer_tensor(shape: tuple[int, int, int], transfer: TransferFunction, device: str, dtype: Any) -> torch.Tensor:
    return cached_tensor(transfer.evaluate(shape), device, dtype)


def apply_transfer(x: torch.Tensor, transfer: TransferFunction) -> torch.Tensor:
    """A_T x = F^-1 T F x over the last three axes of x, (Z, Y, X) or (B, Z, Y, X).

    Self-adjoint for any T; idempotent only for a binary T. As MAP's data term, use
    ||A_T x - y||^2 / (2 sigma^2): its gradient A_T (A_T x - y) weighs each frequency by T^2, so
    a half-measured frequency pulls half as hard in amplitude and the prior fills the rest."""
    import torch

    shape = tuple(int(s) for s in x.shape[-3:])
    t = _transfer_tensor(shape, transfer, str(x.device), x.dtype if x.is_floating_point() else torch.float32)
    return torch.fft.irfftn(torch.fft.rfftn(x, dim=FFT_DIMS) * t, s=shape, dim=FFT_DIMS)


def _binned_profile(power: np.ndarray, band: np.ndarray, axis: str, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Median power per (shell, angle node) of a full-layout spectrum (Z, Y, X), over `band`;
    nan where a bin holds too few coefficients: (N_SHELLS, n_bins - 1), the directions +-90
    merged in column 0 (the median ignores a filament's few strong coefficients); and the shell
    centres (cycles/voxel)."""
    from ..qc.geometry import BAND, MIN_BIN

    kz = np.fft.fftfreq(power.shape[0])[:, None, None]
    kp = np.fft.fftfreq(power.shape[2] if axis == "y" else power.shape[1])
    kp = kp[None, None, :] if axis == "y" else kp[None, :, None]
    use = band & (np.sqrt(kz**2 + kp**2) >= BAND[0])  # the angle means little near the tilt axis
    width = (BAND[1] - BAND[0]) / N_SHELLS
    shell = np.minimum(((frequency_radius(power.shape, rfft=False) - BAND[0]) / width).astype(np.int64), N_SHELLS - 1)
    node = np.rint((np.broadcast_to(tilt_angle(kz, kp), power.shape) + 90.0) * ((n_bins - 1) / 180.0))
    key = (shell * (n_bins - 1) + node.astype(np.int64) % (n_bins - 1))[use]
    order = np.argsort(key, kind="stable")
    groups = np.split(power[use][order], np.searchsorted(key[order], np.arange(1, N_SHELLS * (n_bins - 1))))
    medians = np.array([np.median(g) if g.size >= MIN_BIN else np.nan for g in groups])
    return medians.reshape(N_SHELLS, n_bins - 1), BAND[0] + width * (np.arange(N_SHELLS) + 0.5)


def _expected_power(shape: tuple[int, int, int], wedge: Wedge) -> tuple[np.ndarray, np.ndarray]:
    """The expected spectrum, through `qc.geometry`'s window, of white noise in the binary wedge:
    F[R w*w] with R = F^-1 M the noise's autocorrelation and w*w the window's (Wiener-Khinchin).
    What the estimate reads off an ideal observation, without the noise of one draw."""
    from ..qc.geometry import BAND, _window

    auto = [np.fft.ifft(np.abs(np.fft.fft(_window(n).astype(np.float64))) ** 2).real for n in shape]
    corr = np.fft.ifftn(wedge_mask(shape, wedge, rfft=False).astype(np.float64)).real
    power = np.fft.fftn(corr * auto[0][:, None, None] * auto[1][None, :, None] * auto[2][None, None, :]).real
    radius = frequency_radius(shape, rfft=False)
    return np.maximum(power, 0.0), (radius >= BAND[0]) & (radius <= BAND[1])


def _smooth(profile: np.ndarray) -> np.ndarray:
    """Normalised Gaussian smoothing (circular in angle) that ignores and fills nan bins."""
    from scipy.ndimage import gaussian_filter

    known = np.isfinite(profile)
    num = gaussian_filter(np.where(known, profile, 0.0), SMOOTH, mode=("nearest", "wrap"))
    den = gaussian_filter(known.astype(np.float64), SMOOTH, mode=("nearest", "wrap"))
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), np.nan)


def _regions(angles: np.ndarray, hint: Wedge | None) -> tuple[np.ndarray, np.ndarray]:
    """Masks over angle nodes: well inside the measured region, and deep in the missing wedge."""
    if hint is None:
        return np.abs(angles) <= INNER, np.abs(angles) >= OUTER
    inner = (angles >= hint.tilt_min + MARGIN) & (angles <= hint.tilt_max - MARGIN)
    if not inner.any():
        inner = (angles >= hint.tilt_min) & (angles <= hint.tilt_max) & (np.abs(angles) <= INNER)
    return inner, (angles < hint.tilt_min - MARGIN) | (angles > hint.tilt_max + MARGIN)


def _edges(power: np.ndarray, band: np.ndarray, axis: str, n_bins: int, hint: Wedge | None) -> tuple[np.ndarray, ...]:
    """Per shell and side (lo, hi), the half-power edge and the sigma (degrees) of a Gaussian-
    blurred step with the same 0.9 -> 0.1 power crossings, two (N_SHELLS, 2) arrays; the shell
    radii; and which shells show a wedge at all.

    The power is scaled between the floor deep in the wedge (0) and a level (1): first the
    level well inside the measured region, which places the edge, then per side the level
    just inside that edge (the specimen's spectrum need not be flat in angle). Each side is
    made non-increasing towards the beam, so the specimen's own anisotropy reads as no holes."""
    binned, radii = _binned_profile(power, band, axis, n_bins)
    angles = np.linspace(-90.0, 90.0, n_bins)
    binned = _smooth(binned)[:, np.arange(n_bins) % (n_bins - 1)]  # node n-1 is +90 == -90
    inner, outer = _regions(angles, hint)
    level = _nanmedian(binned[:, inner], axis=1)
    floor = _nanmedian(binned[:, outer], axis=1) if outer.any() else np.zeros(len(radii))
    good = np.isfinite(level) & np.isfinite(floor) & (level > CONTRAST * np.maximum(floor, 0.0)) & (level > 0)
    first = _crossings(_fraction(binned, floor, np.where(good, level, np.inf)), angles, 0.5)
    edge, sigma = np.full_like(first, np.nan), np.full_like(first, np.nan)
    for side, sign in enumerate((-1.0, 1.0)):
        depth = sign * (first[:, side : side + 1] - angles[None, :])  # degrees inside the edge
        near = (depth >= LOCAL[0]) & (depth <= LOCAL[1])
        local = _nanmedian(np.where(near, binned, np.nan), axis=1)
        local = np.where(np.isfinite(local), local, level)
        frac = _fraction(binned, floor, np.where(good, np.maximum(local, floor), np.inf))
        edge[:, side] = _crossings(frac, angles, 0.5)[:, side]
        sigma[:, side] = np.abs(_crossings(frac, angles, 0.1) - _crossings(frac, angles, 0.9))[:, side] / (2 * Z90)
    return edge, sigma, radii, good


def _fraction(binned: np.ndarray, floor: np.ndarray, level: np.ndarray) -> np.ndarray:
    """(binned - floor) / (level - floor) per shell, in [0, 1], made unimodal (the smallest
    profile above it that rises to one maximum and then falls)."""
    frac = np.clip(np.nan_to_num((binned - floor[:, None]) / (level - floor)[:, None]), 0.0, 1.0)
    return np.minimum(np.maximum.accumulate(frac, axis=1), np.maximum.accumulate(frac[:, ::-1], axis=1)[:, ::-1])


def _along_shells(values: np.ndarray, ok: np.ndarray, n: int) -> np.ndarray:
    """Running median (5 shells) of `values` (R, 2) over the shells `ok`; every other shell takes
    its nearest one's."""
    runs = np.array([_nanmedian(values[ok][max(0, j - 2) : j + 3], axis=0) for j in range(len(ok))])
    return runs[np.abs(np.arange(n)[:, None] - ok[None, :]).argmin(axis=1)]


def estimate_transfer(
    volume: np.ndarray,
    wedge_hint: Wedge | None = None,
    tilt_axis: str | None = None,
    crop: int = 128,
    n_angles: int = N_ANGLES,
) -> TransferFunction:
    """T estimated from the power spectrum of a (Z, Y, X) volume's central crop (at most `crop`
    voxels per axis). `wedge_hint` (its range need only be roughly right) places the regions
    that set the levels 1 and 0, and gives the tilt axis.

    Per shell and side, the measured power fraction gives a half-power edge and a blur sigma.
    The same reading of the expected spectrum of an ideal (binary-wedge) observation of the
    crop's shape gives the estimate's own bias and blur (window, Fourier grid): the bias is
    subtracted and the blur removed in quadrature, so an ideal observation gives (nearly) the
    binary wedge. Shells whose own blur exceeds MAX_BLUR degrees (the lowest, which the crop
    cannot resolve in angle) or whose edge is MAX_OFF degrees off the median take their nearest
    good shell's edge; a running median over shells tames the noise of one crop, and the blur is
    kept from falling with |k| (the specimen's anisotropy at low |k| would read as softness). T = sqrt of the product of two blurred steps in power."""
    from scipy.special import ndtr

    from ..qc.geometry import _whitened_power

    axis = tilt_axis or (wedge_hint.tilt_axis if wedge_hint is not None else "y")
    if wedge_hint is not None and axis != wedge_hint.tilt_axis:
        raise CryogenError(f"tilt axis {axis!r} contradicts the wedge hint's {wedge_hint.tilt_axis!r}")
    if axis not in ("y", "x"):
        raise CryogenError(f"tilt axis must be 'y' or 'x', not {axis!r}")
    v = np.asarray(volume)
    if v.ndim != 3:
        raise CryogenError(f"need a 3-D (z, y, x) volume to estimate a transfer function, not shape {v.shape}")
    if min(v.shape) < 16:
        raise CryogenError(f"volume of shape {v.shape} is too small to estimate a transfer function (16 per axis)")
    lo = [(n - min(n, crop)) // 2 for n in v.shape]
    v = np.asarray(v[lo[0] : lo[0] + crop, lo[1] : lo[1] + crop, lo[2] : lo[2] + crop], dtype=np.float32)
    if not np.isfinite(v).all():
        raise CryogenError("volume holds NaN or infinite values: cannot estimate a transfer function")
    if v.min() == v.max():
        raise CryogenError("volume is constant: it has no power spectrum to estimate a transfer function from")
    edge, sigma, radii, good = _edges(*_whitened_power(v), axis, N_BINS, wedge_hint)
    good &= ~np.isnan(edge).all(axis=1)
    if not good.any():
        raise CryogenError("the power spectrum shows no missing wedge: cannot estimate a transfer function")
    median = _nanmedian(edge[good], axis=0)
    lo_edge, hi_edge = (
        float(np.clip(m, -89.0, 89.0)) if np.isfinite(m) else d for m, d in zip(median, (-90.0, 90.0), strict=True)
    )
    ideal = Wedge(lo_edge, hi_edge, axis)
    own_edge, own_sigma, _, _ = _edges(*_expected_power(v.shape, ideal), axis, N_BINS, ideal)
    edge = edge + np.nan_to_num(np.array([ideal.tilt_min, ideal.tilt_max]) - own_edge)
    sigma = np.sqrt(np.clip(sigma**2 - np.nan_to_num(own_sigma) ** 2, 0.0, None))
    resolved = good & (np.nan_to_num(own_sigma, nan=np.inf) <= MAX_BLUR).all(axis=1)
    resolved &= ~(np.abs(edge - _nanmedian(edge[good], axis=0)) > MAX_OFF).any(axis=1)  # nan: no edge, fine
    ok = np.nonzero(resolved if resolved.any() else good)[0]
    a = np.linspace(-90.0, 90.0, n_angles)[None, :]
    floor = 90.0 / (n_angles - 1)  # half a node: a sharp edge between nodes keeps its place
    edge, sigma = _along_shells(edge, ok, len(radii)), _along_shells(sigma, ok, len(radii))
    # no softer at low |k| than above: planes overlap there; dose and filters act on all |k| alike
    sigma = np.maximum(np.minimum.accumulate(sigma[::-1], axis=0)[::-1], floor)
    power = np.where(np.isnan(edge[:, :1]), 1.0, ndtr((a - edge[:, :1]) / sigma[:, :1]))
    power *= np.where(np.isnan(edge[:, 1:]), 1.0, ndtr((edge[:, 1:] - a) / sigma[:, 1:]))
    return TransferFunction.from_grid(radii, a[0], np.sqrt(power), axis)


def plot_transfer(transfer: TransferFunction, path: str | Path, size: int = 128) -> None:
    """PNG: the profile T(shell, angle) as an image, and T in the kz-k_inplane plane at k_axis = 0."""
    from ..io.files import atomic_output
    from ..qc.plotting import pyplot

    plt = pyplot()
    shape = (size, 1, size) if transfer.tilt_axis == "y" else (size, size, 1)
    plane = np.fft.fftshift(transfer.evaluate(shape, rfft=False).reshape(size, size))
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 4.2))
    radii = transfer.radii if len(transfer.radii) > 1 else (0.0, math.sqrt(3) / 2)
    prof = transfer.profile if len(transfer.radii) > 1 else np.repeat(transfer.profile, 2, axis=0)
    a0.pcolormesh(transfer.angles, radii, prof, vmin=0, vmax=1, cmap="gray", shading="nearest")
    a0.set(xlabel="tilt angle (degrees)", ylabel="|k| (cycles/voxel)", title="T per shell")
    im = a1.imshow(plane, vmin=0, vmax=1, cmap="gray", origin="lower", extent=(-0.5, 0.5, -0.5, 0.5))
    kp = "kx" if transfer.tilt_axis == "y" else "ky"
    a1.set(xlabel=f"{kp} (cycles/voxel)", ylabel="kz (cycles/voxel)", title=f"T in the kz-{kp} plane")
    fig.colorbar(im, ax=a1, fraction=0.046)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
