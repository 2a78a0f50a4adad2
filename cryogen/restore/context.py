"""The context fill: the two-scale fill's low band taken from the whole coarse level restored.

The coarse network fills the missing wedge's low frequencies best (README, Quality: the coarse
network), but run on one tile binned 2x it sees 32^3 voxels, mirrored at the tile's faces, so each
tile's estimate of its slowest variation (where the specimen's slab starts and ends, its slow
tilt) rests on that tile alone. Instead, `reconstruct` first restores the store's coarse level
(the prepared tomogram binned 2x, tiled alike) with the coarse network, blends it into one binned
volume (the `stitch` blending), and each tile's fill is that volume's region, upsampled: every
tile then sees its neighbours, and neighbouring tiles get one continuous low band (README,
Quality: the context fill). Both live in the job's partial store while it runs (`partial.CONTEXT`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import zarr

from ..errors import CryogenError
from ..io.store import TileMeta, zarr_array
from ..tiling import blended_blocks

#: the array of the context volume (the group `partial.CONTEXT` in a partial reconstruction
#: store): the coarse level restored and blended, in the data's units, binned 2x
VOLUME = "volume"
#: the context volume's Zarr chunks (binned voxels): a tile's region reads a few of them
CHUNK = 32


def write_context(recon: Path, path: Path) -> None:
    """Blend the restored coarse tiles of reconstruction store `recon` into the binned volume at
    `path` (written under a temporary name, then renamed: a kill leaves no half volume)."""
    meta, _, blocks = blended_blocks(recon)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    chunks = tuple(min(CHUNK, n) for n in meta.source_shape)
    volume = group.create_array(VOLUME, shape=meta.source_shape, chunks=chunks, dtype="float32", fill_value=0.0)
    for z0, y0, block in blocks:
        volume[z0 : z0 + block.shape[0], y0 : y0 + block.shape[1], :] = block
    os.replace(tmp, path)


class ContextVolume:
    """The fills of a full-size store's tiles from its restored, blended coarse level at `path`:
    each tile's region of the binned volume upsampled 2x (trilinear, as `coarse_fill` upsamples),
    mirrored beyond the volume's faces as chunk mirrors the tiles, and normalised by the full-size
    store's statistics (`meta`)."""

    def __init__(self, path: Path, meta: TileMeta) -> None:
        self.meta = meta
        self.volume = zarr_array(zarr.open_group(str(path), mode="r"), VOLUME, path)
        binned = tuple(int(n) for n in self.volume.shape)
        expected = tuple((n + 1) // 2 for n in meta.source_shape)
        if binned != expected:
            raise CryogenError(f"context volume is {binned}, not the store's {meta.source_shape} binned 2x", path)

    def tiles(self, idx: list[int]) -> torch.Tensor:
        """The fills of tiles `idx`, (B, T, T, T), in the full-size store's normalised units."""
        return torch.stack([self.tile(i) for i in idx])

    def tile(self, index: int) -> torch.Tensor:
        meta, t = self.meta, self.meta.tile
        starts, inside = meta.tile_start(index), meta.tile_inside(index)
        # the binned voxels the upsampled ones in `inside` interpolate between (one more each side)
        lo = [max(0, i0 // 2 - 1) for i0, _ in inside]
        hi = [min(nb, i1 // 2 + 2) for (_, i1), nb in zip(inside, self.volume.shape, strict=True)]
        region = np.asarray(self.volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
        up = F.interpolate(torch.from_numpy(region)[None, None], scale_factor=2, mode="trilinear", align_corners=False)
        crop = tuple(slice(i0 - 2 * b, i1 - 2 * b) for (i0, i1), b in zip(inside, lo, strict=True))
        fill = up[0, 0][crop].numpy()
        pad = [(i0 - s, s + t - i1) for (i0, i1), s in zip(inside, starts, strict=True)]
        fill = np.pad(fill, pad, mode="symmetric")  # as chunk pads tiles beyond the volume
        return (torch.from_numpy(fill) - meta.stats["mean"]) / meta.stats["std"]
