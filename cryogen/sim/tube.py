"""A simulated twin of the real microtubule crop, made with the effects of real acquisition one by
one, so that what keeps a real tomogram's missing wedge from filling can be found with a truth.

The scene (`tube_phantom`) has the geometry of the crop in ../shared/real (44 x 136 x 84 voxels
of 10.52 A): two microtubules (wall centre line at 11 nm radius, 4 nm wall, both at the crop's
16.6 degrees from y in XY) and 40 small blobs; `lattice` adds 14 protofilaments around each wall
and 4 nm monomers along them, `crowded` 400 blobs and ten thin (~7 nm) filaments at random
orientations. `simulate_tube` takes it through the tilt-series model (`simulate_tilt_series`)
with the effects named in TUBE_EFFECTS switched on; "all" of them at once restores as the real
crop does (the README's Quality section), while each alone still fills the wedge.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import CryogenError
from .ctf import CTF
from .simulate import Simulation
from .tilt_series import Dose, TiltScheme, simulate_tilt_series

__all__ = ["TUBE_ANGLE", "TUBE_EFFECTS", "TUBE_SHAPE", "TUBE_VOXEL", "simulate_tube", "tube_effects", "tube_phantom"]

TUBE_SHAPE = (44, 136, 84)  # the real crop's (z, y, x)
TUBE_VOXEL = 10.52  # angstrom
#: each effect of real acquisition the tube can be made with, and what it does
TUBE_EFFECTS = {
    "asymmetric": "the crop's tilt range, -66 to +57 degrees in 3 degree steps, not +-60",
    "ctf": "the microscope's CTF, 3 um underfocus, phase-flipped",
    "dose": "radiation damage with the accumulated dose, 3 e/A^2 per tilt, dose-symmetric, and the images dose-weighted",
    "misalignment": "each image shifted at random, 1 pixel rms per axis: residual alignment error",
    "crowding": "400 blobs instead of 40, and ten thin filaments at random orientations around the tubes",
    "lattice": "14 protofilaments around each wall and 4 nm monomers along them",
    "low-snr": "SNR 0.37, the crop's implied, instead of 0.5",
}
TUBE_ANGLE = -16.6  # degrees: the crop's filaments, from y towards x (`filament_isotropy`'s angle)
_TUBES = ((0.571, 0.5), (0.19, 0.4545))  # (x, z) of each tube's axis at the middle y, as fractions of the shape


def tube_effects(names: Iterable[str]) -> tuple[str, ...]:
    """The effects named (in TUBE_EFFECTS order), "all" for every one; a clear error for others."""
    names = list(names)
    if "all" in names:
        return tuple(TUBE_EFFECTS)
    unknown = sorted(set(names) - set(TUBE_EFFECTS))
    if unknown:
        raise CryogenError(f"unknown tube effect(s) {', '.join(unknown)}: choose from all, {', '.join(TUBE_EFFECTS)}")
    return tuple(e for e in TUBE_EFFECTS if e in names)


def tube_phantom(
    shape: tuple[int, int, int] = TUBE_SHAPE,
    voxel_size: float = TUBE_VOXEL,
    *,
    lattice: bool = False,
    crowded: bool = False,
    seed: int = 7,
) -> np.ndarray:
    """The crop's scene (module docstring) on a (z, y, x) grid of `shape`: float32, mean 0, std 1."""
    nz, ny, nx = shape
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij", sparse=True)
    vol = np.zeros(shape, np.float32)
    radius, fwhm = 110.0 / voxel_size, 40.0 / voxel_size
    tan, cos = np.tan(np.radians(TUBE_ANGLE)), np.cos(np.radians(TUBE_ANGLE))
    for fx, fz in _TUBES:
        xc, zc = fx * nx, fz * nz
        xs = xc + tan * (y - ny / 2)  # the axis's x at each y
        r = np.sqrt((x - xs) ** 2 + (z - zc) ** 2) * cos
        wall = np.exp(-((r - radius) ** 2) / (2 * (fwhm / 2.355) ** 2))
        if lattice:
            phi = np.arctan2(z - zc, x - xs)
            along = (y - ny / 2) / cos * voxel_size  # angstrom along the axis
            wall = wall * (1 + 0.8 * np.cos(14 * phi)) * (1 + 0.4 * np.cos(2 * np.pi * along / 40.0))
        vol += wall.astype(np.float32)
    for _ in range(400 if crowded else 40):
        c = rng.uniform([6, 0, 0], [nz - 6, ny, nx])
        s = rng.uniform(1.5, 3.5)
        vol += (0.8 * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * s * s))).astype(np.float32)
    if crowded:  # thin straight filaments (actin-like), flatter than isotropic like a lamella's contents
        for _ in range(10):
            c = rng.uniform([8, 0, 0], [nz - 8, ny, nx])
            d = rng.normal(size=3)
            d[0] *= 0.3
            d /= np.linalg.norm(d)
            v = (z - c[0], y - c[1], x - c[2])
            along = v[0] * d[0] + v[1] * d[1] + v[2] * d[2]
            dist2 = v[0] ** 2 + v[1] ** 2 + v[2] ** 2 - along**2
            vol += (1.2 * np.exp(-dist2 / (2 * 1.5**2))).astype(np.float32)
    return ((vol - vol.mean()) / vol.std()).astype(np.float32)


def simulate_tube(effects: Iterable[str] = (), seed: int = 0) -> Simulation:
    """The crop's scene through the tilt-series model with `effects` (names of TUBE_EFFECTS, or
    "all"); the phantom is the same for every seed, the noise and the misalignment follow `seed`."""
    on = set(tube_effects(effects))
    lo, hi = (-66.0, 57.0) if "asymmetric" in on else (-60.0, 60.0)
    return simulate_tilt_series(
        TUBE_SHAPE,
        TiltScheme(lo, hi, 3.0),
        0.37 if "low-snr" in on else 0.5,
        seed,
        TUBE_VOXEL,
        ctf=CTF(defocus_um=3.0) if "ctf" in on else None,
        dose=Dose(3.0) if "dose" in on else None,
        dose_weighting="dose" in on,
        misalignment=1.0 if "misalignment" in on else 0.0,
        phantom=tube_phantom(lattice="lattice" in on, crowded="crowding" in on),
    )
