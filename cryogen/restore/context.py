"""The context fill: the two-scale fill's low band taken from the whole coarse level restored.

The coarse network fills the missing wedge's low frequencies best (README, Quality: the coarse
network), but run on one tile binned 2x it sees 32^3 voxels, mirrored at the tile's faces, so each
tile's estimate of its slowest variation (where the specimen's slab starts and ends, its slow
tilt) rests on that tile alone. Instead, `reconstruct` first restores the store's coarse level
(the prepared tomogram binned 2x, tiled alike) with the coarse network, blends it into one binned
volume (the `stitch` blending), and each tile's fill is that volume's region, upsampled: every
tile then sees its neighbours, and neighbouring tiles get one continuous low band (README,
Quality: the context fill). The volume lives in the job's partial store while it runs (`partial.CONTEXT`, an MRC file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CryogenError
from ..io.mrc import MrcReader
from ..io.store import TileMeta


def tile_start(meta: TileMeta, index: int) -> tuple[int, int, int]:
    """Where tile `index` of a store starts along z, y and x (tiles are stored x fastest, then y)."""
    _, gy, gx = meta.grid_shape
    iz, rest = divmod(index, gy * gx)
    iy, ix = divmod(rest, gx)
    return meta.starts[0][iz], meta.starts[1][iy], meta.starts[2][ix]


def tile_inside(meta: TileMeta, index: int) -> tuple[tuple[int, int], ...]:
    """The part of tile `index` inside the volume: (start, stop) along z, y and x in the volume's
    voxels (the rest of the tile is the chunk's mirrored padding)."""
    starts = tile_start(meta, index)
    return tuple((max(s, 0), min(s + meta.tile, n)) for s, n in zip(starts, meta.source_shape, strict=True))


class ContextVolume:
    """The fills of a full-size store's tiles from its restored, blended coarse level at `path`:
    each tile's region of the binned volume upsampled 2x (trilinear, as `coarse_fill` upsamples),
    mirrored beyond the volume's faces as chunk mirrors the tiles, and normalised by the full-size
    store's statistics (`meta`). Reads only the binned planes and rows a tile needs."""

    def __init__(self, path: Path, meta: TileMeta) -> None:
        self.meta, self.path = meta, path
        with MrcReader(path) as reader:
            binned = tuple(int(n) for n in reader.info.shape)
        self.shape = binned
        expected = tuple((n + 1) // 2 for n in meta.source_shape)
        if binned != expected:
            raise CryogenError(f"context volume is {binned}, not the store's {meta.source_shape} binned 2x", path)

    def tiles(self, idx: list[int]) -> torch.Tensor:
        """The fills of tiles `idx`, (B, T, T, T), in the full-size store's normalised units."""
        with MrcReader(self.path) as reader:
            return torch.stack([self._tile(reader, i) for i in idx])

    def _tile(self, reader: MrcReader, index: int) -> torch.Tensor:
        meta, t = self.meta, self.meta.tile
        starts, inside = tile_start(meta, index), tile_inside(meta, index)
        # the binned voxels the upsampled ones in `inside` interpolate between (one more each side)
        lo = [max(0, i0 // 2 - 1) for i0, _ in inside]
        hi = [min(nb, i1 // 2 + 2) for (_, i1), nb in zip(inside, self.shape, strict=True)]
        region = reader.read_block(lo[0], hi[0], lo[1], hi[1])[:, :, lo[2] : hi[2]].astype(np.float32)
        up = F.interpolate(torch.from_numpy(region)[None, None], scale_factor=2, mode="trilinear", align_corners=False)
        crop = tuple(slice(i0 - 2 * b, i1 - 2 * b) for (i0, i1), b in zip(inside, lo, strict=True))
        fill = up[0, 0][crop].numpy()
        pad = [(i0 - s, s + t - i1) for (i0, i1), s in zip(inside, starts, strict=True)]
        fill = np.pad(fill, pad, mode="symmetric")  # as chunk pads tiles beyond the volume
        return (torch.from_numpy(fill) - meta.stats["mean"]) / meta.stats["std"]
