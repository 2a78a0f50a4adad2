"""Random 3-D rotations R for the proxy A R x + n.

Two kinds, with a trade-off:

- The 24 rotations of the cube (signed axis permutations with determinant +1) are exact: no
  interpolation, no blur, no lost corners, and cheap (a transpose and flips). But they only move
  the wedge-stretched z direction onto x or y, so the discriminator sees just three orientations
  of the wedge, and a fake that is smeared along a diagonal is never exposed.
  D's fakes take the 8 of them that keep the tilt axis (`tilt_axis_cube_indices`): they still
  move the beam direction into the measured plane, and they turn less of a specimen's own
  orientation (filaments along the axis) into orientations its data never hold.
- Uniform random rotations (Haar measure on SO(3), from unit quaternions) expose every direction,
  at the price of trilinear interpolation (a slight low-pass, which a discriminator can learn to
  detect, so real patches should be rotated too when comparing) and of the corners, which rotate
  out of the cube: only the inscribed sphere is valid, and everything outside it is set to zero.

Rotation matrices act on (z, y, x) coordinates about the volume centre:
out(p) = in(R^T (p - c) + c).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=1)
def cube_rotation_matrices() -> np.ndarray:
    """The 24 proper rotations of the cube as (24, 3, 3) integer matrices; index 0 is identity."""
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3), dtype=np.int64)
            for i, j in enumerate(perm):
                m[i, j] = signs[i]
            if round(np.linalg.det(m)) == 1:
                mats.append(m)
    mats.sort(key=lambda m: (not np.array_equal(m, np.eye(3, dtype=np.int64)), m.tolist()))
    return np.stack(mats)


def cube_inverse(index: int) -> int:
    """Index of the inverse (transpose) of cube rotation `index`."""
    mats = cube_rotation_matrices()
    inv = mats[index].T
    return int(next(i for i, m in enumerate(mats) if np.array_equal(m, inv)))


def rotate_cube(x: torch.Tensor, index: int) -> torch.Tensor:
    """Apply cube rotation `index` exactly to the last three axes of `x` (they must be equal)."""
    m = cube_rotation_matrices()[index]
    lead = x.ndim - 3
    # out[q] = in[p] with q_i = s_i * p_{j(i)} (centred): output axis i comes from input axis j(i).
    src_axes = [int(np.flatnonzero(m[i])[0]) for i in range(3)]
    y = x.permute(*range(lead), *(lead + a for a in src_axes))
    flips = [lead + i for i in range(3) if m[i, src_axes[i]] < 0]
    return y.flip(flips) if flips else y


def random_cube_indices(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n cube-rotation indices drawn uniformly from the 24."""
    return torch.randint(0, 24, (n,), generator=generator)


@functools.lru_cache(maxsize=2)
def tilt_axis_cube_indices(tilt_axis: str) -> tuple[int, ...]:
    """The 8 cube rotations that map the tilt axis ('y' or 'x') onto itself (either sign)."""
    axis = 1 if tilt_axis == "y" else 2
    return tuple(i for i, m in enumerate(cube_rotation_matrices()) if abs(m[axis, axis]) == 1)


def random_tilt_axis_cube_indices(n: int, tilt_axis: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """n of the 8 cube rotations that keep the tilt axis, drawn uniformly."""
    keep = torch.tensor(tilt_axis_cube_indices(tilt_axis))
    return keep[torch.randint(0, len(keep), (n,), generator=generator)]


def random_rotation_matrices(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n rotation matrices drawn uniformly from SO(3) (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    w, a, b, c = q.unbind(1)
    r = torch.stack(
        [
            1 - 2 * (b * b + c * c),
            2 * (a * b - c * w),
            2 * (a * c + b * w),
            2 * (a * b + c * w),
            1 - 2 * (a * a + c * c),
            2 * (b * c - a * w),
            2 * (a * c - b * w),
            2 * (b * c + a * w),
            1 - 2 * (a * a + b * b),
        ],
        dim=1,
    ).reshape(n, 3, 3)
    return r.float()


def spherical_support(shape: tuple[int, int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean mask of the sphere inscribed in the volume: where interpolated rotations are valid."""
    axes = [torch.arange(s, device=device, dtype=torch.float32) - (s - 1) / 2 for s in shape]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    radius = (min(shape) - 1) / 2
    return (zz**2 + yy**2 + xx**2) <= radius**2 + 1e-6


def rotate_interp(x: torch.Tensor, matrices: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Rotate each volume of x (B, Z, Y, X) by its matrix (B, 3, 3) with trilinear interpolation.

    padding "zeros": voxels outside the inscribed sphere are set to zero (they would sample
    outside the input). "reflection": they take mirrored content instead, so no hard edge enters
    the volume's spectrum; callers weigh them out where they compare (`cylinder_support`).
    """
    _b, nz, ny, nx = x.shape
    dev = x.device
    half = torch.tensor([(nz - 1) / 2, (ny - 1) / 2, (nx - 1) / 2], device=dev)
    axes = [torch.arange(s, device=dev, dtype=torch.float32) for s in (nz, ny, nx)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1) - half  # (Z, Y, X, 3) zyx
    src = torch.einsum("bji,zyxj->bzyxi", matrices.to(dev, torch.float32), grid)  # R^T p
    src = src / half.clamp(min=0.5)  # normalised to [-1, 1], align_corners=True
    src = src.flip(-1)  # grid_sample wants (x, y, z)
    out = F.grid_sample(x.unsqueeze(1), src, mode="bilinear", padding_mode=padding, align_corners=True).squeeze(1)
    return out * spherical_support((nz, ny, nx), dev) if padding == "zeros" else out


def tilt_axis_matrices(angles: torch.Tensor, tilt_axis: str) -> torch.Tensor:
    """Rotation matrices (B, 3, 3) turning volumes by `angles` (B,) degrees about the tilt axis
    ('y' or 'x'): the turns that move the missing wedge within the plane it lies in, so the
    turned data measure part of it. A turn by the tilt angle t takes what the tilt at angle a
    measured to the tilt at a + t (`cryogen.model.imaging.wedge_mask(..., turn=t)`)."""
    rad = torch.deg2rad(angles.to(torch.float32))
    c, s = torch.cos(rad), torch.sin(rad)
    m = torch.zeros(len(angles), 3, 3)
    inplane = 2 if tilt_axis == "y" else 1  # the axis that, with z, spans the wedge's plane
    m[:, 3 - inplane, 3 - inplane] = 1.0  # the tilt axis itself stays
    m[:, 0, 0] = c
    m[:, inplane, inplane] = c
    m[:, 0, inplane] = -s
    m[:, inplane, 0] = s
    return m


def cylinder_support(shape: tuple[int, int, int], tilt_axis: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """Float mask of the cylinder about the tilt axis inscribed in the volume: where a turn about
    that axis keeps voxels inside (more of the volume than the sphere keeps)."""
    nz, ny, nx = shape
    z = torch.arange(nz, device=device, dtype=torch.float32) - (nz - 1) / 2
    n_in = nx if tilt_axis == "y" else ny
    p = torch.arange(n_in, device=device, dtype=torch.float32) - (n_in - 1) / 2
    disc = (z[:, None] ** 2 + p[None, :] ** 2) <= ((min(nz, n_in) - 1) / 2) ** 2 + 1e-6
    return (disc[:, None, :] if tilt_axis == "y" else disc[:, :, None]).float().expand(nz, ny, nx)


def rotate(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate a batch x (B, Z, Y, X): integer `rotations` (B,) pick cube rotations (exact),
    float `rotations` (B, 3, 3) are matrices applied by interpolation."""
    if rotations.dtype in (torch.int64, torch.int32):
        return torch.stack([rotate_cube(v, int(i)) for v, i in zip(x, rotations, strict=False)])
    return rotate_interp(x, rotations)


def inverse(rotations: torch.Tensor) -> torch.Tensor:
    """The inverse of each rotation, in the same representation."""
    if rotations.dtype in (torch.int64, torch.int32):
        return torch.tensor([cube_inverse(int(i)) for i in rotations], dtype=rotations.dtype)
    return rotations.transpose(-1, -2)
