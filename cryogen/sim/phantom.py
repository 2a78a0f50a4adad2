"""Synthetic cellular-like phantoms: the ground truth of every simulated tomogram.

The restoration method learns without ground truth, so the only way to measure how well it
recovers what the missing wedge hides is a phantom whose truth is known and which contains what
makes real tomograms hard: a vitreous ice slab in vacuum, lipid bilayers (double lines that the
wedge smears along z), hollow and solid filaments in every orientation (one nearly along the beam,
the worst case), and irregular macromolecular complexes of several sizes.

Sizes are physical (nm) and converted with the voxel size (angstrom per voxel); they are clamped
so that tiny test volumes still hold recognisable, non-empty content. Each object is rendered
only inside its own bounding box with vectorised numpy, and objects are combined by taking the
denser value (occupancy), so overlaps never pile up to unphysical densities. Densities are
relative to ice (0): protein and lipid positive, vacuum negative. The forward models that observe
a phantom are `cryogen.sim.simulate` (ideal) and `cryogen.sim.tilt_series` (as real tomograms are made).
"""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from ..errors import CryogenError

__all__ = [
    "BAND_LIMIT_SIGMA",
    "ICE",
    "VACUUM",
    "check_count",
    "check_positive",
    "check_seed",
    "check_shape",
    "make_phantom",
]

ICE = 0.0  # density of vitreous ice: the reference level
VACUUM = -0.5  # outside the specimen slab: less dense than ice
PROTEIN = 1.0  # filaments and complexes
LIPID_HEAD = 0.9  # the two dense leaflets of a bilayer
LIPID_TAIL = 0.25  # the hydrocarbon core between them
LUMEN = 0.1  # vesicle content: slightly denser than ice
GOLD = 10.0  # fiducial gold: ~10x protein's contrast against ice (mean inner potentials ~30 V, ~7 V, ~4.5 V)
BEAD_NM = 10.0  # diameter of the usual fiducial
BAND_LIMIT_SIGMA = 0.7  # voxels: final Gaussian low-pass so the truth has no aliasing
MIN_SIGMA = 0.5  # voxels: the narrowest Gaussian feature that can be point-sampled


# ----------------------------------------------------------------------------- validation


def check_shape(shape: Any) -> tuple[int, int, int]:
    """`shape` (anything a user may pass) as three integers >= 8, else a one-line error."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise CryogenError(f"shape must be three integers (z, y, x), not {shape!r}") from None
    ok = len(dims) == 3 and all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims)
    if not ok:
        raise CryogenError(f"shape must be three integers (z, y, x), not {shape!r}")
    if min(dims) < 8:
        raise CryogenError(f"shape {tuple(int(d) for d in dims)} is too small: every axis needs >= 8 voxels")
    return int(dims[0]), int(dims[1]), int(dims[2])


def check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CryogenError(f"{name} must be a positive number, not {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise CryogenError(f"{name} must be positive and finite, not {v!r}")
    return v


def check_count(name: str, value: object, high: int = 10_000) -> int:
    """`value` as an integer count from 0 to `high`, else a one-line error naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) <= high:
        raise CryogenError(f"{name} must be an integer from 0 to {high}, not {value!r}")
    return int(value)


def check_seed(seed: object) -> int:
    """A seed as an int; a one-line error for anything but a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise CryogenError(f"seed must be a non-negative integer, not {seed!r}")
    return int(seed)


# ----------------------------------------------------------------------------- geometry helpers


def _ramp(x: np.ndarray) -> np.ndarray:
    """Partial-volume step: 1 where x << 0, 0 where x >> 0, linear over one voxel."""
    return np.clip(0.5 - x, 0.0, 1.0)


def _box(center: np.ndarray, half: np.ndarray, shape: tuple[int, int, int]):
    """Slices of the voxel box around `center` (+- `half`) clipped to the volume, and the open
    grid of voxel coordinates relative to `center`; None when the box misses the volume."""
    lo = np.maximum(np.floor(center - half).astype(int), 0)
    hi = np.minimum(np.ceil(center + half).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=False))
    grids = np.ogrid[sl]
    rel = [(g - c).astype(np.float32) for g, c in zip(grids, center, strict=False)]
    return sl, rel


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _rot_z_tilt(rng: np.random.Generator, max_tilt_deg: float) -> np.ndarray:
    """Random rotation about z (the beam) composed with a small tilt away from it."""
    phi = rng.uniform(0, 2 * np.pi)
    a, b = np.radians(rng.uniform(-max_tilt_deg, max_tilt_deg, 2))
    rz = np.array([[1, 0, 0], [0, np.cos(phi), -np.sin(phi)], [0, np.sin(phi), np.cos(phi)]])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[np.cos(b), np.sin(b), 0], [-np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ ry @ rx


# ----------------------------------------------------------------------------- the ice slab


@dataclass
class _Slab:
    """The specimen: a slab of ice of thickness `thickness`, mid-surface z = zc + gy*y' + gx*x'."""

    zc: float
    gy: float
    gx: float
    thickness: float
    ny: int
    nx: int

    def mid(self, y: np.ndarray | float, x: np.ndarray | float) -> np.ndarray | float:
        return self.zc + self.gy * (y - self.ny / 2) + self.gx * (x - self.nx / 2)

    def inside(self, z0: int, z1: int) -> np.ndarray:
        """Fraction of each voxel of planes z0..z1 inside the slab (partial-volume edge)."""
        z = np.arange(z0, z1, dtype=np.float32)[:, None, None]
        y = np.arange(self.ny, dtype=np.float32)[None, :, None]
        x = np.arange(self.nx, dtype=np.float32)[None, None, :]
        dist = np.abs(z - self.mid(y, x)) - np.float32(self.thickness / 2)
        return _ramp(dist)


def _make_slab(shape: tuple[int, int, int], rng: np.random.Generator) -> _Slab:
    nz, ny, nx = shape
    ty, tx = np.tan(np.radians(rng.uniform(-3.0, 3.0, 2)))  # tilt about x (z varies with y), about y
    shift = abs(ty) * ny / 2 + abs(tx) * nx / 2  # how far the mid-surface moves at the corners
    if shift > 0.12 * nz:  # flat volumes: keep the tilt small enough to leave vacuum above and below
        ty, tx, shift = ty * 0.12 * nz / shift, tx * 0.12 * nz / shift, 0.12 * nz
    room = 0.47 * nz - shift  # half-thickness that still leaves ~3% of z as vacuum on each side
    thickness = min(rng.uniform(0.6, 0.85) * nz, 2 * room)
    offset = rng.uniform(-1, 1) * max(0.0, room - thickness / 2)
    return _Slab(nz / 2 + offset, float(ty), float(tx), float(thickness), ny, nx)


# ----------------------------------------------------------------------------- vesicles


def _membrane_profile(d: np.ndarray, vox_per_nm: float) -> np.ndarray:
    """Density across a lipid bilayer at signed distance d (voxels) from its mid-plane, negative
    inside: two dense head-group leaflets 4 nm apart around a lighter core, lumen behind it."""
    half = 2.0 * vox_per_nm  # leaflet centres at +-2 nm
    s = max(0.75 * vox_per_nm, MIN_SIGMA)
    inv = np.float32(-0.5 / s**2)
    heads = np.exp((d - half) ** 2 * inv) + np.exp((d + half) ** 2 * inv)
    core = _ramp(np.abs(d) - (half - 1.5 * s))  # stops short of the leaflet peaks
    lumen = _ramp(d + half + 2 * s)
    return LIPID_HEAD * heads + LIPID_TAIL * core + LUMEN * lumen


@dataclass
class _Vesicle:
    center: np.ndarray  # (z, y, x) voxels
    axes: np.ndarray  # semi-axes in the body frame (z', y', x'), voxels
    rot: np.ndarray  # body -> volume rotation
    reach: float  # in-plane bounding radius, voxels

    def sdf(self, rel: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Approximate signed distance (voxels) to the ellipsoid surface, negative inside.

        `rel` is [dz, dy, dx] relative to the centre (broadcastable arrays) or an (n, 3) array.
        """
        if isinstance(rel, np.ndarray):
            rel = [rel[:, 0], rel[:, 1], rel[:, 2]]
        r = self.rot.astype(np.float32)
        a = self.axes.astype(np.float32)
        k0 = 0.0
        k1 = 0.0
        for i in range(3):  # body coordinates p' = R^T p, without materialising p
            p = rel[0] * r[0, i] + rel[1] * r[1, i] + rel[2] * r[2, i]
            k0 = k0 + (p / a[i]) ** 2
            k1 = k1 + (p / a[i] ** 2) ** 2
        k0 = np.sqrt(k0)
        k1 = np.maximum(np.sqrt(k1), np.float32(1e-6))
        return k0 * (k0 - 1.0) / k1


def _place_vesicles(shape, slab: _Slab, vpn: float, rng: np.random.Generator) -> list[_Vesicle]:
    _nz, ny, nx = shape
    area_nm2 = ny * nx / vpn**2
    count = max(2, round(area_nm2 / 10000.0 * rng.uniform(0.8, 1.25)))
    membrane = 2.0 * vpn + 2 * max(0.75 * vpn, MIN_SIGMA)  # half-thickness of the bilayer
    r_max_fit = 0.35 * min(ny, nx)
    z_cap = max(0.45 * slab.thickness, membrane + 1.0)
    out: list[_Vesicle] = []
    for k in range(count):
        for _ in range(60):
            r = min(rng.uniform(15.0, 60.0) * vpn, r_max_fit)
            r = max(r, membrane + 1.5)
            axes = np.array(
                [min(r * rng.uniform(0.65, 1.0), z_cap), r * rng.uniform(0.85, 1.15), r * rng.uniform(0.85, 1.15)]
            )
            if k == 0:  # guarantee one vesicle cut by a side of the volume
                side = rng.integers(4)
                d_edge = rng.uniform(0.3, 0.8) * axes[1:].min()
                y = rng.uniform(0, ny) if side >= 2 else (d_edge if side == 0 else ny - d_edge)
                x = rng.uniform(0, nx) if side < 2 else (d_edge if side == 2 else nx - d_edge)
            else:
                y, x = rng.uniform(0, ny), rng.uniform(0, nx)
            room = max(0.0, slab.thickness / 2 - axes[0] - membrane)
            z = slab.mid(y, x) + rng.uniform(-1, 1) * room
            reach = float(axes[1:].max() + membrane)
            center = np.array([z, y, x])
            if all(np.hypot(y - v.center[1], x - v.center[2]) > reach + v.reach + 2 * vpn for v in out):
                out.append(_Vesicle(center, axes, _rot_z_tilt(rng, 15.0), reach))
                break
    return out


def _render_vesicle(vol: np.ndarray, ves: _Vesicle, vpn: float) -> None:
    margin = 2.0 * vpn + 4 * max(0.75 * vpn, MIN_SIGMA) + 1
    half = np.sqrt(((ves.rot * ves.axes[None, :]) ** 2).sum(axis=1)) + margin
    box = _box(ves.center, half, vol.shape)
    if box is None:
        return
    sl, rel = box
    dens = _membrane_profile(ves.sdf(rel), vpn)
    np.maximum(vol[sl], dens, out=vol[sl])


# ----------------------------------------------------------------------------- filaments


def _tube_profile(d: np.ndarray, r_out: float, r_in: float) -> np.ndarray:
    """Density at distance d (voxels) from a filament axis: a wall between r_in and r_out
    (r_in = 0: a solid filament)."""
    dens = _ramp(d - r_out)
    if r_in > 0:
        dens = dens * _ramp(r_in - d)
    return PROTEIN * dens


def _curve(
    start_mid: np.ndarray, direction: np.ndarray, length: float, step: float, bend: float, rng: np.random.Generator
) -> np.ndarray:
    """A gently curved polyline of `length` voxels centred on `start_mid`: the tangent drifts
    smoothly (smoothed random walk) by about `bend` radians over the whole length."""
    n = max(2, int(np.ceil(length / step)) + 1)
    d0 = direction / np.linalg.norm(direction)
    helper = np.array([1.0, 0.0, 0.0]) if abs(d0[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(d0, helper)
    u /= np.linalg.norm(u)
    v = np.cross(d0, u)
    walk = np.cumsum(gaussian_filter1d(rng.standard_normal((2, n)), sigma=max(1.0, n / 6), axis=1), axis=1)
    walk -= walk[:, n // 2 : n // 2 + 1]
    scale = np.abs(walk).max() + 1e-12
    walk *= bend / scale
    tangents = d0[None, :] + walk[0][:, None] * u[None, :] + walk[1][:, None] * v[None, :]
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    pts = np.concatenate([np.zeros((1, 3)), np.cumsum(tangents[:-1] * step, axis=0)])
    return pts - pts[n // 2] + start_mid


def _render_filament(vol: np.ndarray, pts: np.ndarray, r_out: float, r_in: float) -> None:
    """Distance to the polyline, segment by segment in each segment's box, then the profile."""
    reach = r_out + 1.5
    lo = np.maximum(np.floor(pts.min(axis=0) - reach).astype(int), 0)
    hi = np.minimum(np.ceil(pts.max(axis=0) + reach).astype(int) + 1, vol.shape)
    if np.any(hi <= lo):
        return
    dist2 = np.full(tuple(hi - lo), np.float32(np.inf), dtype=np.float32)
    local = pts - lo
    last = len(local) - 2
    for i, (p0, p1) in enumerate(itertools.pairwise(local)):
        mid, half = (p0 + p1) / 2, np.abs(p1 - p0) / 2 + reach
        box = _box(mid, half, dist2.shape)
        if box is None:
            continue
        sl, rel = box
        seg = (p1 - p0).astype(np.float32)
        q = [rel[k] + np.float32(mid[k] - p0[k]) for k in range(3)]  # relative to p0
        t_raw = (q[0] * seg[0] + q[1] * seg[1] + q[2] * seg[2]) / np.float32(max(float(seg @ seg), 1e-9))
        t = np.clip(t_raw, 0, 1)
        d2 = (q[0] - t * seg[0]) ** 2 + (q[1] - t * seg[1]) ** 2 + (q[2] - t * seg[2]) ** 2
        if i == 0:  # open ends: a filament stops flat instead of in a hemispherical cap
            d2 = np.where(t_raw < 0, np.float32(np.inf), d2)
        if i == last:
            d2 = np.where(t_raw > 1, np.float32(np.inf), d2)
        np.minimum(dist2[sl], d2, out=dist2[sl])
    dens = _tube_profile(np.sqrt(dist2), r_out, r_in)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=False))
    np.maximum(vol[sl], dens, out=vol[sl])


@dataclass
class _Filament:
    kind: str  # "mt" (hollow microtubule) or "actin" (solid)
    orient: str  # "z" (nearly along the beam), "plane" or "oblique"
    pts: np.ndarray  # (n, 3) polyline of the axis, voxels
    r_out: float
    r_in: float


def _plan_filaments(
    shape: tuple[int, int, int], slab: _Slab, vesicles: list[_Vesicle], vpn: float, rng: np.random.Generator
) -> list[_Filament]:
    """Microtubules and actin filaments: one microtubule nearly along z (the hardest case for the
    missing wedge), the others alternating between in-plane and oblique (20-55 degrees)."""
    _nz, ny, nx = shape
    small = min(ny, nx)
    area_nm2 = ny * nx / vpn**2
    # microtubule: outer radius 12.5 nm, wall 5 nm; actin: solid, radius 3.5 nm
    mt_out = min(12.5 * vpn, 0.2 * small)
    mt_in = max(0.0, min(7.5 * vpn, mt_out - 1.2))
    act = float(np.clip(3.5 * vpn, 0.8, 0.08 * small))
    kinds = [("mt", "z")]  # the hardest case for the missing wedge: a tube along the beam
    n_mt = max(1, round(area_nm2 / 20000.0))
    n_act = max(2, round(area_nm2 / 8000.0))
    others = ["mt"] * n_mt + ["actin"] * n_act
    kinds += [(kind, ("plane", "oblique")[i % 2]) for i, kind in enumerate(others)]
    if n_act >= 6:  # big fields: a second beam-aligned filament
        kinds.append(("actin", "z"))
    out: list[_Filament] = []
    for kind, orient in kinds:
        r_out, r_in = (mt_out, mt_in) if kind == "mt" else (act, 0.0)
        for _ in range(20):  # filaments do not pass through each other (last try taken regardless)
            pts = _draw_filament(shape, slab, vesicles, orient, r_out, rng)
            if not any(_too_close(pts, r_out, f.pts, f.r_out) for f in out):
                break
        out.append(_Filament(kind, orient, pts, r_out, r_in))
    return out


def _step(r_out: float) -> float:
    """Spacing of the polyline vertices of a filament axis, voxels."""
    return max(2.0, 0.8 * r_out)


def _too_close(a: np.ndarray, ra: float, b: np.ndarray, rb: float) -> bool:
    """Whether two filament axes (polylines of radius ra, rb) come close enough to touch."""
    reach = ra + rb + (_step(ra) + _step(rb)) / 2
    lo, hi = np.maximum(a.min(0), b.min(0)) - reach, np.minimum(a.max(0), b.max(0)) + reach
    if np.any(lo > hi):
        return False
    a = a[np.all((a >= lo) & (a <= hi), axis=1)]
    b = b[np.all((b >= lo) & (b <= hi), axis=1)]
    if len(a) == 0 or len(b) == 0:
        return False
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return bool(d2.min() < (ra + rb + 0.5) ** 2)


def _draw_filament(
    shape: tuple[int, int, int],
    slab: _Slab,
    vesicles: list[_Vesicle],
    orient: str,
    r_out: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """The axis of one filament with the given orientation class, inside the slab."""
    _nz, ny, nx = shape
    phi = rng.uniform(0, 2 * np.pi)
    if orient == "z":
        elev = np.radians(90 - rng.uniform(0, 10))
        length, bend = 1.6 * slab.thickness + 2 * r_out, 0.08
        margin = r_out + 2
        for _ in range(30):  # keep it off the vesicles so it stays visible
            y = rng.uniform(margin, max(margin, ny - margin))
            x = rng.uniform(margin, max(margin, nx - margin))
            if all(np.hypot(y - v.center[1], x - v.center[2]) > v.reach + r_out for v in vesicles):
                break
    else:
        if orient == "plane":
            elev = np.radians(rng.uniform(-4, 4))
            length = rng.uniform(0.6, 1.3) * max(ny, nx)
        else:
            elev = np.radians(rng.uniform(20, 55) * rng.choice([-1, 1]))
            length = min(rng.uniform(0.6, 1.3) * max(ny, nx), 1.3 * slab.thickness / np.sin(abs(elev)))
        bend = rng.uniform(0.15, 0.45)
        y, x = rng.uniform(0, ny), rng.uniform(0, nx)
    z = slab.mid(y, x)
    if orient == "plane":
        z += rng.uniform(-1, 1) * max(0.0, slab.thickness / 2 - r_out - 2)
    direction = np.array([np.sin(elev), np.cos(elev) * np.sin(phi), np.cos(elev) * np.cos(phi)])
    return _curve(np.array([z, y, x]), direction, length, _step(r_out), bend, rng)


# ----------------------------------------------------------------------------- complexes


def _complexes(
    vol: np.ndarray,
    slab: _Slab,
    vesicles: list[_Vesicle],
    filaments: list[_Filament],
    vpn: float,
    rng: np.random.Generator,
) -> None:
    """Tens of irregular complexes (clusters of Gaussian blobs) of 10, 15 and 25 nm, off the
    membranes and filaments and not overlapping each other."""
    nz, ny, nx = vol.shape
    slab_nm3 = ny * nx * slab.thickness / vpn**3
    count = int(np.clip(round(slab_nm3 * 1.5e-5 * rng.uniform(0.8, 1.25)), 3, 4000))
    r_cap = 0.2 * min(nz, ny, nx)
    membrane = 2.0 * vpn + 2 * max(0.75 * vpn, MIN_SIGMA)
    centers = np.zeros((0, 3))
    radii = np.zeros(0)
    if filaments:  # axis vertices, each with the distance a complex centre must keep from it
        fil_pts = np.concatenate([f.pts for f in filaments])
        fil_keep = np.concatenate([np.full(len(f.pts), f.r_out + _step(f.r_out) / 2) for f in filaments])
    else:
        fil_pts, fil_keep = np.zeros((0, 3)), np.zeros(0)
    for _ in range(count):
        diam = rng.choice([10.0, 15.0, 25.0], p=[0.4, 0.35, 0.25])
        r = float(np.clip(diam / 2 * vpn, 1.5, r_cap))
        for _ in range(30):
            y, x = rng.uniform(0, ny), rng.uniform(0, nx)
            room = max(0.0, slab.thickness / 2 - r - 1)
            c = np.array([slab.mid(y, x) + rng.uniform(-1, 1) * room, y, x])
            if len(radii) and np.any(np.linalg.norm(centers - c, axis=1) < 0.9 * (radii + r)):
                continue
            if np.any(np.linalg.norm(fil_pts - c, axis=1) < fil_keep + r):
                continue
            if any(abs(float(v.sdf((c - v.center)[None, :].astype(np.float32))[0])) < r + membrane for v in vesicles):
                continue
            break
        else:
            continue
        centers = np.vstack([centers, c])
        radii = np.append(radii, r)
        _render_complex(vol, c, r, rng)


def _render_complex(vol: np.ndarray, center: np.ndarray, r: float, rng: np.random.Generator) -> None:
    n_blobs = int(rng.integers(3, 8))
    sig = np.maximum(r * rng.uniform(0.22, 0.38, n_blobs), MIN_SIGMA)
    # blob centres: random points in an anisotropic, randomly oriented ellipsoid -> irregular shape
    stretch = rng.uniform(0.6, 1.0, 3)
    offs = rng.standard_normal((n_blobs, 3))
    offs *= (rng.uniform(0.0, 1.0, (n_blobs, 1)) ** (1 / 3)) / np.linalg.norm(offs, axis=1, keepdims=True)
    offs = (offs * stretch * (r - sig[:, None])) @ _random_rotation(rng).T
    box = _box(center, np.full(3, r + 1.0), vol.shape)
    if box is None:
        return
    sl, rel = box
    s = 0.0
    for o, sg in zip(offs, sig, strict=False):
        inv = np.float32(-0.5 / sg**2)
        # separable: three 1-D exponentials on the open grid, broadcast into the box
        s = s + np.exp((rel[0] - o[0]) ** 2 * inv) * np.exp((rel[1] - o[1]) ** 2 * inv) * np.exp(
            (rel[2] - o[2]) ** 2 * inv
        )
    amp = np.float32(PROTEIN * rng.uniform(0.75, 1.0))
    dens = amp * (1.0 - np.exp(np.float32(-2.0) * s))  # saturate: overlapping blobs stay protein-dense
    np.maximum(vol[sl], dens, out=vol[sl])


# ----------------------------------------------------------------------------- fiducials


def _beads(vol: np.ndarray, slab: _Slab, count: int, vpn: float, rng: np.random.Generator) -> None:
    """`count` gold fiducials of BEAD_NM, just inside the slab's top or bottom surface (where
    beads land when added to the grid before plunging), apart from each other. Occupancy like the
    other objects (the denser value wins), with a one-voxel partial-volume edge."""
    _nz, ny, nx = vol.shape
    r = max(BEAD_NM / 2 * vpn, 1.0)
    centers: list[np.ndarray] = []
    for _ in range(count):
        for _ in range(60):
            y, x = rng.uniform(r, ny - r), rng.uniform(r, nx - r)
            side = 1.0 if rng.random() < 0.5 else -1.0
            z = slab.mid(y, x) + side * max(slab.thickness / 2 - r - 0.5, 0.0)
            c = np.array([z, y, x])
            if all(np.linalg.norm(c - o) > 3 * r for o in centers):
                break
        else:
            continue
        centers.append(c)
        box = _box(c, np.full(3, r + 1.0), vol.shape)
        if box is None:
            continue
        sl, rel = box
        dist = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2)
        np.maximum(vol[sl], np.float32(GOLD) * _ramp(dist - np.float32(r)), out=vol[sl])


# ----------------------------------------------------------------------------- public API


def make_phantom(
    shape: tuple[int, int, int], rng: np.random.Generator, voxel_size: float = 10.0, beads: int = 0
) -> np.ndarray:
    """A clean, isotropic, cellular-like (z, y, x) float32 phantom; deterministic given `rng`.

    An ice slab (0) in vacuum (VACUUM), holding vesicles with bilayer membranes, microtubules and
    actin filaments in several orientations (one nearly along the beam z), and complexes of
    10-25 nm; sizes follow `voxel_size` (angstrom per voxel). Band-limited (Gaussian, 0.7 voxel).
    `beads`: that many 10 nm gold fiducials (GOLD, ~10x protein) at the slab's surfaces, drawn
    after everything else, so the rest of the phantom is the same with or without them.
    """
    shape = check_shape(shape)
    voxel_size = check_positive("voxel_size", voxel_size)
    beads = check_count("beads", beads)
    if not isinstance(rng, np.random.Generator):
        raise CryogenError(f"rng must be a numpy.random.Generator, not {type(rng).__name__}")
    vpn = 10.0 / voxel_size  # voxels per nm
    vol = np.full(shape, ICE, dtype=np.float32)  # objects on ice
    slab = _make_slab(shape, rng)
    vesicles = _place_vesicles(shape, slab, vpn, rng)
    for ves in vesicles:
        _render_vesicle(vol, ves, vpn)
    filaments = _plan_filaments(shape, slab, vesicles, vpn, rng)
    for fil in filaments:
        _render_filament(vol, fil.pts, fil.r_out, fil.r_in)
    _complexes(vol, slab, vesicles, filaments, vpn, rng)
    if beads:
        _beads(vol, slab, beads, vpn, rng)
    step = max(1, (1 << 22) // (shape[1] * shape[2]))  # blend with vacuum a few planes at a time
    for z0 in range(0, shape[0], step):
        z1 = min(shape[0], z0 + step)
        inside = slab.inside(z0, z1)
        vol[z0:z1] = inside * vol[z0:z1] + (1.0 - inside) * np.float32(VACUUM)
    out = gaussian_filter(vol, BAND_LIMIT_SIGMA, mode="nearest")
    return out.astype(np.float32, copy=False)
