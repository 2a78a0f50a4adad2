"""Training data: random patches of observed tiles from one or many tile stores, normalised per
tomogram, with each tomogram's noise model expressed in the same normalised units."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import zarr

from ..errors import CryogenError, setting
from ..io.store import COARSE_LEVEL, TILE_ARRAY, TileMeta, open_store, read_tiles, zarr_array
from ..model.content import draw_weights
from ..model.noise import NoiseModel
from ..model.noise_estimate import estimate_from_data

log = logging.getLogger(__name__)


@dataclass
class Source:
    """One tomogram's tiles, normalisation and noise model (sigma in normalised units)."""

    path: Path
    meta: TileMeta
    array: zarr.Array  # (n_tiles, T, T, T), the store's tiles
    mean: float
    std: float
    noise: NoiseModel


def normalised_noise(meta: TileMeta, tiles: np.ndarray) -> NoiseModel:
    """The store's noise model (from chunk) in units of the tomogram's std; estimated from
    `tiles`, (n, T, T, T), when the store has none."""
    if meta.noise:
        model = NoiseModel.from_dict(meta.noise)
    else:
        model = estimate_from_data(tiles[0], meta.wedge)  # one contiguous tile: no seams in its spectrum
    return model.scaled(1.0 / meta.stats["std"])


def open_sources(paths: list[str | Path]) -> list[Source]:
    if not paths:
        raise CryogenError("no tile stores given")
    sources = []
    for p in paths:
        group, meta = open_store(p)
        array = zarr_array(group, TILE_ARRAY, p)
        # no tile is read here where chunk stored the noise model; else one, to estimate it
        probe = np.zeros((0,), np.float32) if meta.noise else read_tiles(array, 0, 1, p)
        noise = normalised_noise(meta, probe)
        sources.append(Source(Path(p), meta, array, meta.stats["mean"], meta.stats["std"], noise))
    tiles = {s.meta.tile for s in sources}
    if len(tiles) > 1:
        raise CryogenError(
            f"tile stores have different tile sizes {sorted(tiles)}; chunk them with one {setting('tile')}"
        )
    return sources


class Sampler(Protocol):
    """What a training step draws its batches from (`PatchSampler`, or a wrapper that times it)."""

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, Source]: ...


class PatchSampler:
    """Draws batches of random patches; all randomness comes from the given torch generator, so
    a run resumed with the saved generator state draws the same patches.

    Each batch comes from one tomogram, drawn uniformly: every tomogram of a prior's group is
    seen equally often whatever its size, so a few large ones do not drown the others; within it,
    tiles are drawn by their structure where some hold little (vacuum or bare ice above and below
    the specimen: `cryogen.model.content`), else uniformly, and patch corners uniformly. Tiles
    are read one at a time, when drawn, and the recently used ones are cached, a fixed number of
    them, so memory does not grow with the dataset or the number of tomograms: decompressing a
    tile from Zarr costs about a millisecond, far less than a step."""

    def __init__(self, sources: list[Source], patch: int, cache_tiles: int = 48) -> None:
        self.sources = sources
        self.patch = patch
        self.tile = sources[0].meta.tile
        if patch > self.tile:
            raise CryogenError(f"patch size {patch} is larger than the tile size {self.tile}")
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_tiles
        self._weights = [_weights(src, self.tile) for src in sources]

    def _tile(self, s: int, i: int) -> np.ndarray:
        key = (s, i)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        src = self.sources[s]
        tile = (read_tiles(src.array, i, i + 1, src.path)[0] - src.mean) / src.std
        self._cache[key] = tile
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return tile

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, Source]:
        """(batch, P, P, P) normalised patches, all from one tomogram (so one wedge and one noise
        model per batch), and that tomogram's source."""
        out = np.empty((batch, self.patch, self.patch, self.patch), dtype=np.float32)
        span = self.tile - self.patch + 1
        s = int(torch.randint(len(self.sources), (1,), generator=generator))
        weights = self._weights[s]
        for b in range(batch):
            if weights is None:
                i = int(torch.randint(self.sources[s].meta.n_tiles, (1,), generator=generator))
            else:
                i = int(torch.multinomial(weights, 1, generator=generator))
            z, y, x = (int(v) for v in torch.randint(span, (3,), generator=generator))
            out[b] = self._tile(s, i)[z : z + self.patch, y : y + self.patch, x : x + self.patch]
        return torch.from_numpy(out), self.sources[s]


def _weights(src: Source, tile: int) -> torch.Tensor | None:
    """The source's tile weights (`draw_weights`), logged where some tiles are drawn less often."""
    weights = draw_weights(src.meta.content, src.std, src.noise, tile, src.meta.wedge)
    if weights is None:
        return None
    log.info(
        "%s%s: %d of %d tiles hold little structure (vacuum or bare ice?): training draws them less often",
        Path(src.meta.source).name,
        " (coarse level)" if src.path.name == COARSE_LEVEL else "",
        int(np.sum(weights < 0.5)),
        len(weights),
    )
    return torch.from_numpy(weights)
