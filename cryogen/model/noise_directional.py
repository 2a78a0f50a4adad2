"""The directional factor of a noise model: how a tomogram's noise power varies with the direction
of k at a given |k|, and its estimation from a power spectrum.

Back-projection noise is not radial. Along the tilt axis nothing is interpolated (each
projection's rows are back-projected as they are), across it every back-projected ray is
interpolated, so high-frequency noise is stronger along the tilt axis than across it (2.4x at
0.4-0.5 cycles/voxel on a real crop), and it varies with the tilt angle too (more near the
specimen plane than at 40-60 degrees of tilt). `DirectionalFactor` holds that shape as a small
grid over three coordinates of k, all invariant under k -> -k (so the factor is Hermitian-
symmetric, like the wedge mask):

- `radii`: |k| in cycles/voxel;
- `cosines`: |k_axis| / |k|, the cosine of the angle between k and the tilt axis (0 across it,
  1 along it; uniform in it is uniform in solid angle);
- `angles`: the tilt angle of k in the plane normal to the tilt axis (`imaging.tilt_angle`,
  degrees folded into (-90, 90]), so the measured region and the missing wedge are ranges of it.

Values are linear in all three between nodes (bin centres), constant beyond the end nodes. The
factor multiplies the radial PSD, whose level jumps at the wedge edge, so the two regions are
interpolated separately: measured coefficients from the nodes inside the wedge's tilt range,
missing ones from the nodes outside it (periodic through +-90 degrees). On each grid it is
evaluated on, it is normalised to mean 1 over the measured coefficients of each radial shell and
over all missing coefficients, so the model's sigma, measured_psd and missing_psd keep their
meaning: the factor only redistributes power among the directions of a shell.

Estimation (`estimate_directional`): the ratio of a spectrum to the radial model's PSD, per
coefficient, averaged into bins around the nodes (the mean for a noise-only spectrum such as the
half difference; median / ln 2 where signal may remain), normalised per shell and region, and
shrunk by how noisy each bin is, in a hierarchy: each radial row towards all rows pooled, the
pool towards its separable part a(cosine) b(angle), a and b towards 1 (empirical Bayes: a
deviation is kept in the proportion the spread between bins exceeds what their counts alone
would give). Small volumes get a coarser grid. A spectrum isotropic within its sampling noise
gives no factor (None), so the model stays radial. (`transfer.TransferFunction` interpolates a
2-D profile, |k| x angle; this grid is 3-D, so scipy's regular-grid interpolator does it.)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CryogenError
from .imaging import Wedge, rfft_weights, tilt_angle, wedge_mask

#: Bins across |k_axis| / |k| and the tilt angle step (degrees), at full and at coarse resolution.
N_COSINES = (8, 4)
ANGLE_STEP = (15.0, 30.0)
#: Mean coefficients per (cosine, angle) bin, all radii pooled, below which the coarse grid is
#: used; and per bin to be measured at all.
FINE_COUNT = 96
MIN_COUNT = 16
#: Variance of median / ln 2 of n exponential samples, in units of mean^2 / n (that of the mean is 1).
MEDIAN_VARIANCE = 1.0 / np.log(2.0) ** 2
_EPS = 1e-9
INTERP_BLOCK = 1 << 16  # points per block of the interpolation (see _interpolate)


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64).ravel())


@dataclass(frozen=True)
class DirectionalFactor:
    """Factor `values[i][j][l]` at |k| = `radii[i]`, |k_axis|/|k| = `cosines[j]` and tilt angle
    `angles[l]` (all increasing); see the module docstring. The tilt axis is the wedge's."""

    radii: tuple[float, ...]
    cosines: tuple[float, ...]
    angles: tuple[float, ...]
    values: tuple[tuple[tuple[float, ...], ...], ...]

    def __post_init__(self) -> None:
        radii, cosines, angles = _floats(self.radii), _floats(self.cosines), _floats(self.angles)
        values = np.asarray(self.values, dtype=np.float64)
        if values.shape != (len(radii), len(cosines), len(angles)) or values.size == 0:
            raise CryogenError(
                f"noise model: directional values of shape {values.shape} do not match "
                f"{len(radii)} radii x {len(cosines)} cosines x {len(angles)} angles"
            )
        if not (np.isfinite(values).all() and values.min() > 0):
            raise CryogenError("noise model: directional values must be finite and > 0")
        for name, nodes, lo, hi in (
            ("radii", radii, 0.0, np.inf),
            ("cosines", cosines, 0.0, 1.0),
            ("angles", angles, -90.0, 90.0),
        ):
            if np.any(np.diff(nodes) <= 0) or min(nodes) < lo or max(nodes) > hi:
                raise CryogenError(f"noise model: directional {name} must increase within [{lo:g}, {hi:g}]")
        object.__setattr__(self, "radii", radii)
        object.__setattr__(self, "cosines", cosines)
        object.__setattr__(self, "angles", angles)
        object.__setattr__(self, "values", tuple(tuple(_floats(row) for row in plane) for plane in values))

    @property
    def grid(self) -> np.ndarray:
        """The values as an array (n_radii, n_cosines, n_angles)."""
        return np.asarray(self.values, dtype=np.float64)

    def as_dict(self) -> dict:
        return {
            "radii": list(self.radii),
            "cosines": list(self.cosines),
            "angles": list(self.angles),
            "values": self.grid.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> DirectionalFactor:
        try:
            values = np.asarray(d["values"], dtype=np.float64)
            nested = tuple(tuple(_floats(row) for row in plane) for plane in values)
            return cls(_floats(d["radii"]), _floats(d["cosines"]), _floats(d["angles"]), nested)
        except (KeyError, TypeError, ValueError) as exc:
            raise CryogenError(f"noise model: not a directional factor: {exc}") from None

    def evaluate(self, shape3: tuple[int, int, int], wedge: Wedge) -> np.ndarray:
        """The normalised factor on the rfftn grid of a (Z, Y, X) volume, float64 (a fresh copy)."""
        return _evaluate(self, tuple(int(s) for s in shape3), wedge).copy()


def _coordinates(shape3: tuple[int, int, int], axis: str, rfft: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|k|, |k_axis| / |k| (0 at DC) and the tilt angle of every coefficient, each (Z, Y, X or X//2+1)."""
    nz, ny, nx = shape3
    kz = np.fft.fftfreq(nz)[:, None, None]
    ky = np.fft.fftfreq(ny)[None, :, None]
    kx = (np.fft.rfftfreq(nx) if rfft else np.fft.fftfreq(nx))[None, None, :]
    k_axis, k_plane = (ky, kx) if axis == "y" else (kx, ky)
    radius = np.sqrt(kz**2 + ky**2 + kx**2)
    cosine = np.abs(k_axis) / np.where(radius > 0, radius, 1.0)
    return radius, cosine, np.broadcast_to(tilt_angle(kz, k_plane), radius.shape)


def _unwrap(angle: np.ndarray, wedge: Wedge) -> np.ndarray:
    """Angles of the missing region as one interval [tilt_max, tilt_min + 180] (periodic fold)."""
    return np.where(angle < wedge.tilt_min - _EPS, angle + 180.0, angle)


def _region_nodes(factor: DirectionalFactor, wedge: Wedge, measured: bool) -> tuple[np.ndarray, np.ndarray]:
    """The angle nodes of one region (unwrapped for the missing one, sorted) and their values."""
    angles = np.asarray(factor.angles)
    inside = (angles >= wedge.tilt_min - _EPS) & (angles <= wedge.tilt_max + _EPS)
    sel = inside if measured else ~inside
    nodes = angles[sel] if measured else _unwrap(angles[sel], wedge)
    order = np.argsort(nodes)
    return nodes[order], factor.grid[:, :, sel][:, :, order]


def _interpolate(axes: list[np.ndarray], values: np.ndarray, points: list[np.ndarray]) -> np.ndarray:
    """Multilinear interpolation on a regular grid, constant beyond the end nodes (points are
    clipped into the node range; an axis with one node is constant along it). The points go
    through in blocks of INTERP_BLOCK: scipy's query, index and distance arrays for all 2 M
    points of chunk's 128^3 crop at once added ~75 MB to its peak memory."""
    from scipy.interpolate import RegularGridInterpolator

    keep = [i for i, a in enumerate(axes) if len(a) > 1]
    if not keep:
        return np.full(points[0].shape, float(values.ravel()[0]))
    vals = values.reshape([len(a) for i, a in enumerate(axes) if i in keep])
    interp = RegularGridInterpolator([axes[i] for i in keep], vals)
    n = points[0].size
    out = np.empty(n)
    for start in range(0, n, INTERP_BLOCK):
        part = slice(start, min(start + INTERP_BLOCK, n))
        out[part] = interp(np.stack([np.clip(points[i].ravel()[part], axes[i][0], axes[i][-1]) for i in keep], axis=-1))
    return out.reshape(points[0].shape)


# 16 grids: the tile shapes of a run are few, and a 128^3 estimation grid holds 8.6 MB
@functools.lru_cache(maxsize=16)
def _evaluate(factor: DirectionalFactor, shape3: tuple[int, int, int], wedge: Wedge) -> np.ndarray:
    radius, cosine, angle = _coordinates(shape3, wedge.tilt_axis, rfft=False)
    mask = wedge_mask(shape3, wedge, rfft=False)
    out = np.ones(shape3)
    for measured, region in ((True, mask), (False, ~mask)):
        nodes, values = _region_nodes(factor, wedge, measured)
        if not (region.any() and nodes.size):
            continue  # no nodes for this region: no information, factor 1
        theta = angle[region] if measured else _unwrap(angle[region], wedge)
        axes = [np.asarray(factor.radii), np.asarray(factor.cosines), nodes]
        out[region] = _interpolate(axes, values, [radius[region], cosine[region], theta])
    mirror = np.ix_(*[(-np.arange(n)) % n for n in shape3])
    out = 0.5 * (out + out[mirror])  # Hermitian: the folded angle differs between +-k on Nyquist planes
    out = out[..., : shape3[2] // 2 + 1]
    return _normalise(out, radius[..., : shape3[2] // 2 + 1], wedge_mask(shape3, wedge), shape3)


def _normalise(factor: np.ndarray, radius: np.ndarray, mask: np.ndarray, shape3: tuple[int, int, int]) -> np.ndarray:
    """Mean 1 (rfft-weighted) over the measured coefficients of each shell of width 1/min(shape)
    and over all missing coefficients."""
    weights = np.broadcast_to(rfft_weights(shape3[2]), factor.shape)
    shell = np.rint(radius * min(shape3)).astype(np.int64)
    key = np.where(mask, shell, -1) + 1  # 0: the missing region
    sums = np.bincount(key.ravel(), weights=(factor * weights).ravel())
    counts = np.bincount(key.ravel(), weights=weights.ravel())
    means = np.where(counts > 0, sums / np.maximum(counts, 1e-300), 1.0)
    out = factor / means[key]
    out[0, 0, 0] = 1.0
    return out


# -- estimation -------------------------------------------------------------------------------


def _angle_edges(wedge: Wedge, step: float) -> tuple[np.ndarray, int]:
    """Bin edges over the tilt angle, aligned with the wedge: its measured range, then the
    missing one unwrapped past +90 (see `_unwrap`); and how many bins are measured ones."""
    lo, hi = wedge.tilt_min, wedge.tilt_max
    n_in = max(1, round((hi - lo) / step))
    edges = list(np.linspace(lo, hi, n_in + 1))
    gap = lo + 180.0 - hi
    if gap > _EPS:
        edges += list(np.linspace(hi, lo + 180.0, max(1, round(gap / step)) + 1)[1:])
    return np.asarray(edges), n_in


def _fold(angle: np.ndarray) -> np.ndarray:
    """Back into (-90, 90]."""
    return np.where(angle > 90.0, angle - 180.0, angle)


def estimate_directional(
    power: np.ndarray,
    base: np.ndarray,
    shape3: tuple[int, int, int],
    wedge: Wedge,
    select: np.ndarray,
    radius_edges: np.ndarray,
    robust: bool,
    samples: int = 1,
) -> DirectionalFactor | None:
    """The directional factor of `power`, the rfftn-layout spectrum of a `shape3` (Z, Y, X) volume, given
    its radial model `base` (same layout): binned ratios power / base over the coefficients in
    `select`, radial bins at `radius_edges`, normalised and shrunk (see the module docstring).
    `robust`: median / ln 2 per bin (signal may remain) instead of the mean. `samples`: `power`
    is the mean of that many independent spectra (blocks of a tomogram), so each coefficient
    counts as that many (less shrinkage, fewer empty bins). None where nothing departs from
    isotropy by more than its sampling noise (every shrinkage weight 0)."""
    radius, cosine, angle = _coordinates(shape3, wedge.tilt_axis, rfft=True)
    use = select & (radius > 0)
    if use.any():  # wedge-confined noise: nothing to measure in the missing region
        use &= base > 1e-6 * float(np.median(base[use]))
    n_r = len(radius_edges) - 1
    for n_c, step in zip(N_COSINES, ANGLE_STEP, strict=True):
        a_edges, n_in = _angle_edges(wedge, step)
        if use.sum() * samples >= FINE_COUNT * n_c * (len(a_edges) - 1):  # rows borrow from their pool
            break
    n_a = len(a_edges) - 1
    ir = np.clip(np.searchsorted(radius_edges, radius[use], side="right") - 1, 0, n_r - 1)
    ic = np.minimum((cosine[use] * n_c).astype(np.int64), n_c - 1)
    theta = _unwrap(angle[use], wedge) if n_a > n_in else angle[use]
    ia = np.clip(np.searchsorted(a_edges, theta, side="right") - 1, 0, n_a - 1)
    key = (ir * n_c + ic) * n_a + ia
    ratio = (power[use] / base[use]).astype(np.float64)
    level, count = _bin_levels(ratio, key, n_r * n_c * n_a, robust, samples)
    level, count = level.reshape(n_r, n_c, n_a), count.reshape(n_r, n_c, n_a)
    regions = (slice(0, n_in), slice(n_in, n_a))
    values = np.ones_like(level)
    for part in regions:
        values[:, :, part] = _shrunk(level[:, :, part], count[:, :, part], robust)
    if np.all(values == 1.0):
        return None
    centres = 0.5 * (a_edges[:-1] + a_edges[1:])
    order = np.argsort(_fold(centres))
    r_nodes = 0.5 * (radius_edges[:-1] + radius_edges[1:])
    c_nodes = (np.arange(n_c) + 0.5) / n_c
    return DirectionalFactor(
        _floats(r_nodes),
        _floats(c_nodes),
        _floats(_fold(centres)[order]),
        tuple(tuple(_floats(row) for row in plane) for plane in values[:, :, order]),
    )


def _bin_levels(
    ratio: np.ndarray, key: np.ndarray, n_bins: int, robust: bool, samples: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Per bin, the mean (or median / ln 2) of `ratio` and its number of coefficients (times
    `samples`, see `estimate_directional`); nan where fewer than MIN_COUNT."""
    n = np.bincount(key, minlength=n_bins).astype(np.float64)
    if robust:
        order = np.argsort(key, kind="stable")
        groups = np.split(ratio[order], np.cumsum(n[:-1]).astype(np.int64))
        level = np.array([np.median(g) / np.log(2.0) if g.size else np.nan for g in groups])
    else:
        level = np.bincount(key, weights=ratio, minlength=n_bins) / np.maximum(n, 1.0)
    count = n * samples
    return np.where(count >= MIN_COUNT, level, np.nan), count


def _shrunk(level: np.ndarray, count: np.ndarray, robust: bool) -> np.ndarray:
    """One region's bins (R, C, A), each radial row normalised to a count-weighted mean of 1,
    shrunk in a hierarchy: every row towards the rows pooled, the pool towards its separable
    part a(cosine) b(angle), empty bins taking their target. The anisotropy of back-projection
    noise comes from the reconstruction, so it is much the same at every |k| and in every
    direction's two coordinates; what a few coefficients per bin cannot tell is borrowed."""
    known = np.isfinite(level)
    if not known.any():
        return np.ones_like(level)
    w = np.where(known, count, 0.0)
    row_mean = (np.nan_to_num(level) * w).sum(axis=(1, 2)) / np.maximum(w.sum(axis=(1, 2)), 1.0)
    f = level / np.where(row_mean > 0, row_mean, 1.0)[:, None, None]
    unit = MEDIAN_VARIANCE if robust else 1.0
    total = w.sum(axis=0)
    pool = np.where(total > 0, (np.nan_to_num(f) * w).sum(axis=0) / np.maximum(total, 1.0), np.nan)
    along_c = _marginal(pool, total, 1, unit)  # a(cosine)
    along_a = _marginal(pool / along_c[:, None], total, 0, unit)  # b(angle)
    separable = np.outer(along_c, along_a)
    pool = _toward(pool, unit * separable**2 / np.maximum(total, 1.0), total, separable)
    return np.stack([_toward(row, unit * pool**2 / np.maximum(n, 1.0), n, pool) for row, n in zip(f, w, strict=True)])


def _marginal(values: np.ndarray, weights: np.ndarray, axis: int, unit: float) -> np.ndarray:
    """Mean of the finite `values` weighted by `weights` over `axis`, shrunk towards 1."""
    ok = np.isfinite(values) & (weights > 0)
    norm = np.where(ok, weights, 0.0).sum(axis=axis)
    mean = np.where(norm > 0, np.where(ok, values * weights, 0.0).sum(axis=axis) / np.maximum(norm, 1e-300), np.nan)
    return _toward(mean, unit * np.nan_to_num(mean, nan=1.0) ** 2 / np.maximum(norm, 1.0), norm, np.ones_like(mean))


def _toward(f: np.ndarray, var: np.ndarray, count: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Empirical Bayes shrinkage of estimates `f` (nan: unmeasured) with sampling variances
    `var` towards `target`: weight tau^2 / (tau^2 + var), tau^2 the count-weighted spread of
    f - target beyond the sampling variance."""
    known = np.isfinite(f) & (count > 0)
    if not known.any():
        return target.copy()
    spread = float(np.average((f[known] - target[known]) ** 2, weights=count[known]))
    tau2 = max(spread - float(np.average(var[known], weights=count[known])), 0.0)
    weight = np.where(known, tau2 / (tau2 + var + 1e-300), 0.0)
    return np.where(known, target + weight * (np.nan_to_num(f) - target), target)
