"""The imaging model: the missing-wedge mask M, the projection A = F^-1 M F, and y = A R x + n.

Axes are (z, y, x); the beam is along z at zero tilt; the tilt axis is y (IMOD convention) or x.
A tilt series over [tilt_min, tilt_max] measures, in Fourier space, the central planes that
contain the tilt axis and are tilted by t from the in-plane axis (kx for tilt axis y, ky for
tilt axis x) towards kz. A frequency is therefore measured iff its angle from the in-plane axis,
atan(kz / k_inplane) folded into (-90, 90], lies within the tilt range. Frequencies on the tilt
axis itself lie in every plane and are always measured. The mask is made Hermitian-symmetric
(a frequency counts as measured only if its negative does too), so A maps real volumes to real
volumes and is an exact orthogonal projection: A A = A and A^T = A to float precision.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CryogenError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .noise import NoiseModel

FFT_DIMS = (-3, -2, -1)


@dataclass(frozen=True)
class Wedge:
    """Tilt geometry of one tomogram: the tilt range in degrees and the tilt axis ('y' or 'x')."""

    tilt_min: float = -60.0
    tilt_max: float = 60.0
    tilt_axis: str = "y"

    def __post_init__(self) -> None:
        lo, hi = float(self.tilt_min), float(self.tilt_max)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise CryogenError(f"tilt range {lo}..{hi} is not finite")
        if lo >= hi:
            raise CryogenError(f"tilt range min ({lo:g}) must be below max ({hi:g})")
        if lo < -90 or hi > 90:
            raise CryogenError(f"tilt range {lo:g}..{hi:g} goes beyond +-90 degrees")
        if self.tilt_axis not in ("y", "x"):
            raise CryogenError(f"tilt axis must be 'y' or 'x', not {self.tilt_axis!r}")
        object.__setattr__(self, "tilt_min", lo)
        object.__setattr__(self, "tilt_max", hi)

    def as_dict(self) -> dict:
        return {"tilt_min": self.tilt_min, "tilt_max": self.tilt_max, "tilt_axis": self.tilt_axis}


def tilt_angle(kz: np.ndarray, kp: np.ndarray) -> np.ndarray:
    """The tilt (degrees, folded into (-90, 90]) at which frequency (kz, k_inplane) is measured:
    the angle of its projection on the plane normal to the tilt axis; k and -k share it."""
    angle = np.degrees(np.arctan2(kz, kp))  # (-180, 180]
    angle = np.where(angle > 90.0, angle - 180.0, angle)
    return np.where(angle <= -90.0, angle + 180.0, angle)


def _plane_mask(n_beam: int, n_inplane: int, wedge: Wedge, turn: float = 0.0) -> np.ndarray:
    """Measured frequencies in the (kz, k_inplane) plane, full FFT layout, Hermitian-symmetric;
    with `turn`, those of the volume turned by that many degrees about the tilt axis."""
    kz = np.fft.fftfreq(n_beam)[:, None]
    kp = np.fft.fftfreq(n_inplane)[None, :]
    angle = tilt_angle(kz, kp)
    if turn:
        angle = (angle + turn + 90.0) % 180.0 - 90.0  # back to the tilt it was measured at
    eps = 1e-9
    measured = (angle >= wedge.tilt_min - eps) & (angle <= wedge.tilt_max + eps)
    if not turn and (wedge.tilt_max >= 90.0 - eps or wedge.tilt_min <= -90.0 + eps):
        measured |= (kp == 0) & (kz != 0)  # the beam axis itself, angle +-90
    measured |= (kz == 0) & (kp == 0)
    neg_z = (-np.arange(n_beam)) % n_beam
    neg_p = (-np.arange(n_inplane)) % n_inplane
    return measured & measured[neg_z][:, neg_p]


def wedge_mask(shape: tuple[int, int, int], wedge: Wedge, rfft: bool = True, turn: float = 0.0) -> np.ndarray:
    """Boolean mask of measured Fourier coefficients for a (z, y, x) volume; with `turn`, of the
    volume turned by that many degrees about the tilt axis (`rotations.tilt_axis_matrices`).

    With `rfft=True` the layout matches `numpy/torch.fft.rfftn` (last axis nx // 2 + 1).
    """
    nz, ny, nx = (int(s) for s in shape)
    if wedge.tilt_axis == "y":
        plane = _plane_mask(nz, nx, wedge, turn)[:, None, :]  # independent of ky
    else:
        plane = _plane_mask(nz, ny, wedge, turn)[:, :, None]  # independent of kx
    full = np.broadcast_to(plane, (nz, ny, nx))
    if rfft:
        full = full[..., : nx // 2 + 1]
    return np.ascontiguousarray(full)


def rfft_weights(nx: int) -> np.ndarray:
    """How many coefficients of the full FFT grid each rfft column stands for (1 or 2): sums
    over a half spectrum weighted by these equal sums over the full one."""
    w = np.full(nx // 2 + 1, 2.0)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    return w


def frequency_radius(shape: tuple[int, int, int], rfft: bool = True) -> np.ndarray:
    """|k| in cycles per voxel for every Fourier coefficient of a (z, y, x) volume."""
    nz, ny, nx = (int(s) for s in shape)
    kz = np.fft.fftfreq(nz)[:, None, None]
    ky = np.fft.fftfreq(ny)[None, :, None]
    kx = (np.fft.rfftfreq(nx) if rfft else np.fft.fftfreq(nx))[None, None, :]
    return np.sqrt(kz**2 + ky**2 + kx**2)


def as_volume(x: Any, what: str) -> np.ndarray:
    """`x` as a (z, y, x) array of real numbers with at least 2 voxels along every axis, else a
    one-line error naming `what`. No copy: memory-mapped volumes stay on disk (callers check
    the values, slab by slab where the volume may be large)."""
    a = np.asarray(x)
    if a.ndim != 3:
        raise CryogenError(f"{what} must be a 3-D (z, y, x) volume, not {a.ndim}-D with shape {tuple(a.shape)}")
    if a.dtype.kind not in "fiub":
        raise CryogenError(f"{what} must hold real numbers, not {a.dtype}")
    if min(a.shape) < 2:
        raise CryogenError(f"{what} shape {tuple(a.shape)} is too small: it needs at least 2 voxels along every axis")
    return a


def cached_tensor(a: np.ndarray, device: str, dtype: Any = None) -> torch.Tensor:
    """`a` as a tensor for a cache that training and restoring share. Made outside inference mode:
    a tensor made inside it can never enter autograd, so a cache first filled while restoring
    (under `torch.inference_mode`) would break every later training step in the same process."""
    import torch

    with torch.inference_mode(False):
        return torch.from_numpy(a).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=512)
def _mask_tensor(shape: tuple[int, int, int], wedge: Wedge, device: str, turn: float = 0.0) -> torch.Tensor:
    return cached_tensor(wedge_mask(shape, wedge, turn=turn).astype(np.float32), device)


def mask_tensor(
    shape: tuple[int, ...], wedge: Wedge, device: torch.device | str = "cpu", turn: float = 0.0
) -> torch.Tensor:
    """The rfft-layout wedge mask as a float32 tensor, cached per shape, wedge, device and turn
    (callers round turns to whole degrees, so a few hundred masks cover them all)."""
    import torch

    return _mask_tensor(tuple(int(s) for s in shape[-3:]), wedge, str(torch.device(device)), float(turn))


@functools.lru_cache(maxsize=64)
def _radius_tensor(shape: tuple[int, int, int], device: str) -> torch.Tensor:
    return cached_tensor(frequency_radius(shape), device)


def radius_tensor(shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """`frequency_radius` of the last three axes of `shape` as a float64 tensor on the rfft grid,
    cached per shape and device (filters per shell of |k| run on every training step and MAP
    step); shared, so not to be changed in place."""
    import torch

    return _radius_tensor(tuple(int(s) for s in shape[-3:]), str(torch.device(device)))


def apply_wedge(x: torch.Tensor, wedge: Wedge) -> torch.Tensor:
    """A x: keep only the measured Fourier coefficients of the last three axes of `x`, (..., Z, Y, X)."""
    import torch

    spectrum = torch.fft.rfftn(x, dim=FFT_DIMS)
    spectrum = spectrum * mask_tensor(x.shape, wedge, x.device)
    return torch.fft.irfftn(spectrum, s=x.shape[-3:], dim=FFT_DIMS)


def tilt_axis_dims(tilt_axis: str) -> tuple[int, int]:
    """The dims of a (..., Z, Y, X) tensor along the tilt axis and along the in-plane axis across
    it (which, with the beam, spans the wedge's plane)."""
    return (-2, -1) if tilt_axis == "y" else (-1, -2)


def wedge_flips(wedge: Wedge) -> list[tuple[int, ...]]:
    """The axis flips (dims of a (..., Z, Y, X) tensor, identity first) that map the wedge onto
    itself, so A flip(x) = flip(A x): flipping the tilt axis, or the beam and the in-plane axis
    together (a half turn about the tilt axis), always; the beam or the in-plane axis alone only
    when the tilt range is symmetric (the flip negates every tilt)."""
    axis, inplane = tilt_axis_dims(wedge.tilt_axis)
    flips = [(), (axis,), (-3, inplane), (-3, -2, -1)]
    if wedge.tilt_min == -wedge.tilt_max:
        flips += [(-3,), (inplane,), tuple(sorted((-3, axis))), tuple(sorted((axis, inplane)))]
    return flips


def apply_wedge_np(x: np.ndarray, wedge: Wedge) -> np.ndarray:
    """A x for a numpy volume, (..., Z, Y, X) (same code path as the torch operator); float32."""
    import torch

    return apply_wedge(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), wedge).numpy()


def observe(
    x: torch.Tensor,
    wedge: Wedge,
    noise: NoiseModel | None = None,
    rotations: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The batched forward model y = A R x + n for x of shape (B, Z, Y, X).

    `rotations` is either None (R = identity), an integer tensor of cube-rotation indices (B,),
    or float rotation matrices (B, 3, 3) applied by interpolation; see `cryogen.model.rotations`.
    The noise is drawn from `noise` (None: no noise) with `generator` for reproducibility.
    """
    if rotations is not None:
        from .rotations import rotate

        x = rotate(x, rotations)
    y = apply_wedge(x, wedge)
    if noise is not None:
        y = y + noise.sample(tuple(y.shape), wedge, generator=generator, device=y.device)
    return y
