"""How much structure each tile holds, and how often training draws it.

Real tomograms are thick: vacuum or bare ice above and below the specimen, often half the planes
or more. Drawn uniformly, training spends that share of its steps on patches with nothing to
fill, and within a time budget the fill is learned from fewer of the patches that teach it (on
phantoms with vacuum over half or two thirds of their planes, g(y) filled 0.04-0.05 more of the
wedge with the weights below, and the default's result gained 0.02-0.05 cc: quality log,
2026-12-07).

A tile's content is the variance of its means over 4 x 4 x 4 blocks: the binning keeps the
structure's low frequencies, which carry most of its power, and averages the noise down (a
block mean of white noise has 1/64 of its variance). Chunk records it for every tile as it writes
them; training compares it with what the tomogram's noise model alone would give, so a tile of
bare ice counts as empty whatever its noise level (though the slab's own missing-wedge streaks
cross the vacuum and give it some content). A tomogram that is specimen throughout (the
benchmarks' phantoms, a crop) gets no weights at all: it trains exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .imaging import Wedge
from .noise import NoiseModel

#: the block edge of the binning, in voxels
BIN = 4
#: a tile counts fully once its structure is FULL_SHARE of the structured tiles' (the PERCENTILE-th
#: percentile over the tomogram's tiles: the specimen's even where up to 90 % of the tiles are
#: vacuum), and proportionally less below it
PERCENTILE = 90
FULL_SHARE = 0.2
#: the least weight: empty tiles are still drawn now and then, as g must restore them flat
FLOOR = 0.05
#: weights are used only where some tile is below this (near empty): a tomogram that is specimen
#: throughout, with a few weaker tiles (at SNR 0.25 on the benchmark's phantoms: down to 0.63),
#: is drawn uniformly, as before
EMPTY = 0.25
#: the PERCENTILE-th tile's structure must be at least this many times the noise's own content:
#: below it the tiles differ by the noise alone (a volume of noise, or a specimen too faint at
#: this scale), and none is told empty. Noise alone reaches ~1.1x on 16^3 tiles of a 16-plane
#: volume (64 blocks a tile, most of it mirrored, which doubles a block mean's variance), 0.02x on
#: 64^3 tiles; the thick phantoms' specimen ~30x
MIN_STRUCTURE = 2.0
#: noise draws (tiles) behind the noise model's own content
NOISE_DRAWS = 8


def tile_content(tile: np.ndarray) -> float:
    """The variance of the tile's means over BIN-voxel blocks (edges beyond a multiple of BIN
    left out; tiles are at least 8 a side), in the data's units squared, accumulated in float64
    without a float64 copy of the tile."""
    n = [s // BIN * BIN for s in tile.shape]
    t = tile[: n[0], : n[1], : n[2]].reshape(n[0] // BIN, BIN, n[1] // BIN, BIN, n[2] // BIN, BIN)
    return float(t.mean(axis=(1, 3, 5), dtype=np.float64).var())


def noise_content(noise: NoiseModel, tile: int, wedge: Wedge) -> float:
    """`tile_content` of the noise model's own draws on a tile (a fixed seed: the same every
    time, and the training's random stream is not touched)."""
    import torch  # here, not at the top: chunk imports this module, and importing cryogen must not load torch

    gen = torch.Generator().manual_seed(0)
    draws = noise.sample((NOISE_DRAWS, tile, tile, tile), wedge, gen).numpy()
    return float(np.mean([tile_content(d) for d in draws]))


def draw_weights(
    content: Sequence[float] | None, scale: float, noise: NoiseModel, tile: int, wedge: Wedge
) -> np.ndarray | None:
    """Each tile's relative chance of being drawn, or None where no tile is near empty (and for
    stores chunked before the content was recorded): then tiles are drawn uniformly.

    `content` in the data's units, `scale` the std the tiles are divided by, `noise` in those
    normalised units. A tile's structure is its content less the noise's; it counts fully from
    FULL_SHARE of the PERCENTILE-th percentile, and never below FLOOR; where that percentile is
    within MIN_STRUCTURE of the noise's own content, the tiles differ by noise only: None."""
    if not content:
        return None
    floor = noise_content(noise, tile, wedge)
    excess = np.maximum(np.asarray(content, dtype=np.float64) / scale**2 - floor, 0.0)
    structured = float(np.percentile(excess, PERCENTILE))
    if not structured >= MIN_STRUCTURE * floor or structured <= 0:
        return None
    full = FULL_SHARE * structured
    weights = np.clip(excess / full, FLOOR, 1.0)
    return weights if bool(np.any(weights < EMPTY)) else None
