"""Parallel-beam projection and weighted back-projection of a specimen slab about one tilt axis.

Owns the geometry of the tilt-series forward model: with the tilt axis along y, every y-plane
(z, x) is an independent 2-D Radon problem, so the projector of all tilts is one sparse matrix
(rows: tilt x detector pixel, columns: z x x voxels) applied to all y-planes at once. The specimen
is a slab, finite in z and laterally periodic in x: a tilted beam that leaves the box at one side
re-enters at the other, as in a real specimen that extends beyond the field of view. This avoids
the box-edge streaks of a finite-box projector and the truncated projections of a real detector
alike. Weights are distance-driven (De Man & Basu): the exact overlap, along x, of each voxel of
a z-plane with the pre-image of each detector pixel, so the line integral is right at every tilt
(the path length 1/cos(tilt) is in the weights) and the back-projection is the exact transpose.

Conventions follow `cryogen.model.imaging`: at tilt t the detector coordinate is
u = (x - xc) cos t + (z - zc) sin t + uc, so tilt t measures the Fourier line at angle
atan2(kz, kx) = t, as `Wedge` assumes.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
import scipy.sparse as sp

from ..errors import CryogenError

__all__ = ["MAX_TILT", "RECON_FILTERS", "SlabProjector", "wbp_filter", "weighted_backprojection"]

MAX_TILT = 89.0  # degrees: at 90 the beam runs along the slab and the ray never leaves it
RECON_FILTERS = ("ramp", "sirt")


class SlabProjector:
    """Projector for tilts about y of a (z, y, x) volume onto (tilt, y, u) images.

    `centre` = (zc, xc, uc): the rotation centre in voxels and where it falls on the detector
    (default: the middles of the volume and of an `nu`-pixel detector, nu = nx by default).
    `periodic=False` makes the specimen a finite box instead (zero outside x in [0, nx)): with a
    detector wide enough for the box's diagonal, the complete-data geometry of textbook tomography.
    """

    def __init__(
        self,
        nz: int,
        nx: int,
        angles_deg: np.ndarray,
        nu: int | None = None,
        centre: tuple[float, float, float] | None = None,
        periodic: bool = True,
    ) -> None:
        self.nz, self.nx, self.nu = int(nz), int(nx), int(nx if nu is None else nu)
        self.angles = np.asarray(angles_deg, dtype=np.float64)
        if np.any(np.abs(self.angles) > MAX_TILT):
            raise CryogenError(f"tilts must stay within +-{MAX_TILT:g} degrees (the beam would run along the slab)")
        zc, xc, uc = ((self.nz - 1) / 2, (self.nx - 1) / 2, (self.nu - 1) / 2) if centre is None else centre
        z = np.arange(self.nz, dtype=np.float64)[:, None, None]
        j = np.arange(self.nu, dtype=np.float64)[None, :, None]
        rows, cols, vals = [], [], []
        for t, tilt in enumerate(np.radians(self.angles)):
            c, s = math.cos(tilt), math.sin(tilt)
            lo = (j - 0.5 - uc - (z - zc) * s) / c + xc  # x where the edges of pixel j cross plane z
            hi = lo + 1.0 / c
            k = np.floor(lo + 0.5) + np.arange(math.ceil(1.0 / c) + 1)  # voxels the pre-image may touch
            w = np.minimum(hi, k + 0.5) - np.maximum(lo, k - 0.5)  # overlap: sums to the path 1/cos
            keep = (w > 0) if periodic else (w > 0) & (k >= 0) & (k < self.nx)
            rows.append((t * self.nu + np.broadcast_to(j, w.shape)[keep]).astype(np.int64))
            cols.append((np.broadcast_to(z, w.shape)[keep] * self.nx + k[keep] % self.nx).astype(np.int64))
            vals.append(w[keep].astype(np.float32))
        shape = (len(self.angles) * self.nu, self.nz * self.nx)
        coo = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
        self.matrix = coo.tocsr()  # duplicates (rays wrapping more than once) are summed
        self.matrix_t = self.matrix.T.tocsr()

    def forward(self, volume: np.ndarray) -> np.ndarray:
        """Line integrals (voxel units) of a (z, y, x) volume: float32 (tilt, y, u)."""
        nz, ny, nx = volume.shape
        if (nz, nx) != (self.nz, self.nx):
            raise CryogenError(
                f"volume shape {volume.shape} does not match the projector's (z, x) = {(self.nz, self.nx)}"
            )
        cols = np.ascontiguousarray(volume.transpose(0, 2, 1), dtype=np.float32).reshape(nz * nx, ny)
        proj = self.matrix @ cols
        return np.ascontiguousarray(proj.reshape(len(self.angles), self.nu, ny).transpose(0, 2, 1))

    def adjoint(self, images: np.ndarray) -> np.ndarray:
        """The exact transpose of `forward`: (tilt, y, u) images back into a float32 (z, y, x) volume."""
        n_t, ny, nu = images.shape
        if (n_t, nu) != (len(self.angles), self.nu):
            raise CryogenError(
                f"images shape {images.shape} does not match {len(self.angles)} tilts of {self.nu} pixels"
            )
        rows = np.ascontiguousarray(images.transpose(0, 2, 1), dtype=np.float32).reshape(n_t * nu, ny)
        vol = self.matrix_t @ rows
        return np.ascontiguousarray(vol.reshape(self.nz, self.nx, ny).transpose(0, 2, 1))


def wbp_filter(length: int, kind: str = "ramp", thickness: float = 1.0, iterations: int = 15) -> np.ndarray:
    """Radial weighting for a detector row zero-extended to `length`: (length // 2 + 1,) rfft layout.

    'ramp' is the band-limited ramp |k| sampled in real space (Kak & Slaney), so its DC gain is
    small but not zero. 'sirt' is the SIRT-equivalent filter of Zeng (2012), as IMOD's and tomo3d's
    "SIRT-like" option: ramp * (1 - (1 - a / ramp)^iterations), where a = 1 / (pi * thickness) is
    what SIRT's row and column normalisations make of A^T A ~ 1 / (Δθ |k|) for rays of length
    `thickness` voxels. Few iterations keep the low frequencies only; many approach the ramp.
    """
    if kind not in RECON_FILTERS:
        raise CryogenError(f"reconstruction filter must be one of {', '.join(RECON_FILTERS)}, not {kind!r}")
    n = np.arange(length)
    n = np.minimum(n, length - n)  # circular distance: a symmetric kernel
    h = np.zeros(length)
    odd = n % 2 == 1
    h[0] = 0.25
    h[odd] = -1.0 / (np.pi * n[odd]) ** 2
    ramp = np.abs(scipy.fft.rfft(h))
    if kind == "ramp":
        return ramp
    alpha = 1.0 / (np.pi * max(float(thickness), 1.0))
    ratio = np.minimum(alpha / np.maximum(ramp, 1e-12), 1.0)  # where ratio >= 1 SIRT has converged
    return ramp * (1.0 - (1.0 - ratio) ** int(iterations))


def weighted_backprojection(
    images: np.ndarray,
    projector: SlabProjector,
    step_deg: float,
    kind: str = "ramp",
    iterations: int = 15,
) -> np.ndarray:
    """Filtered back-projection of (tilt, y, u) images: a float32 (z, y, x) volume.

    Each row is extended by its edge values (as reconstruction programs taper, so the truncated
    detector edge does not ring), filtered along u, and back-projected with the weight of its
    angular interval, `step_deg` in radians; for tilts covering 180 degrees this inverts `forward`.
    """
    n_u = images.shape[-1]
    length = scipy.fft.next_fast_len(2 * n_u, real=True)
    left = (length - n_u) // 2
    padded = np.pad(images, ((0, 0), (0, 0), (left, length - n_u - left)), mode="edge")
    weight = wbp_filter(length, kind, thickness=projector.nz, iterations=iterations) * math.radians(step_deg)
    spectrum = scipy.fft.rfft(padded, axis=-1, workers=2)
    spectrum *= weight.astype(np.complex64)
    filtered = scipy.fft.irfft(spectrum, n=length, axis=-1, workers=2)[..., left : left + n_u]
    return projector.adjoint(filtered.astype(np.float32, copy=False))
