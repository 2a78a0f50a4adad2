"""Binning by 2 x 2 x 2 block means: of an array in memory (`bin2`), and of an MRC volume streamed
plane pair by plane pair into another (`bin_mrc`: the coarse level chunk adds to a tile store)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .mrc import MrcReader, MrcWriter, block_spans, check_finite_block

#: z planes read at a time by `bin_mrc` (even, so every block holds whole pairs)
BIN_BLOCK = 32


def bin2(block: np.ndarray) -> np.ndarray:
    """Mean of 2x2x2 blocks. An odd edge is padded by repeating its last plane, which makes the
    cut block's mean exactly the mean of the voxels it has."""
    pad = [(0, n % 2) for n in block.shape]
    if any(p for _, p in pad):
        block = np.pad(block, pad, mode="edge")
    nz, ny, nx = block.shape
    out = block.reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2).mean(axis=(1, 3, 5), dtype=np.float32)
    return out.astype(np.float32, copy=False)


def bin_mrc(src: str | Path, dst: str | Path, voxel_size: tuple[float, float, float]) -> tuple[int, int, int]:
    """Write `src` binned 2x (`bin2`) to `dst` (atomically), BIN_BLOCK planes in memory at a time,
    with twice `voxel_size` (z, y, x; the source's as the caller resolved it); return its shape."""
    with MrcReader(src) as reader:
        nz, ny, nx = reader.info.shape
        shape = (math.ceil(nz / 2), math.ceil(ny / 2), math.ceil(nx / 2))
        size = tuple(2.0 * v for v in voxel_size)
        with MrcWriter(dst, shape, size, reader.info.origin, reader.info.labels) as writer:  # type: ignore[arg-type]
            for z0, z1 in block_spans(nz, BIN_BLOCK):
                block = reader.read_block(z0, z1)
                check_finite_block(block, reader.path, z0)
                writer.write_block(z0 // 2, 0, bin2(block))
    return shape
