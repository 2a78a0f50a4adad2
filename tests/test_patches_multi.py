"""One prior trained on many tomograms: patches come from every tile store, each tomogram equally
often whatever its size (see `PatchSampler`), and the stores are read lazily, one tile at a time
when drawn, never whole."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

import cryogen.method.patches as patches
from cryogen.io.mrc import write_mrc
from cryogen.method.config import TrainConfig
from cryogen.model.imaging import Wedge
from cryogen.tiling import chunk

TILE = 16
# 16^3 tiles with overlap 4 (a margin of 2 beyond every face): 1, 4 and 12 tiles
SHAPES = {"small": (12, 12, 12), "middle": (12, 24, 24), "large": (12, 36, 48)}


@pytest.fixture
def stores(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name, shape in SHAPES.items():
        mrc = tmp_path / f"{name}.mrc"
        write_mrc(mrc, rng.standard_normal(shape).astype(np.float32), 10.0)
        paths[name] = tmp_path / f"{name}.zarr"
        chunk(mrc, paths[name], tile=TILE, overlap=4, wedge=Wedge(-60, 60), progress=False, check_geometry=False)
    return paths


@pytest.fixture
def reads(monkeypatch):
    """Every read of tiles by the training data code: (store, start, stop)."""
    log: list[tuple[str, int, int]] = []
    real = patches.read_tiles

    def counting(array, start, stop, path):
        log.append((str(path), start, stop))
        return real(array, start, stop, path)

    monkeypatch.setattr(patches, "read_tiles", counting)
    return log


def test_every_tomogram_is_drawn_equally_often_and_every_tile_of_each(stores, reads):
    sources = patches.open_sources(list(stores.values()))
    assert [s.meta.n_tiles for s in sources] == [1, 4, 12]
    assert reads == []  # opening reads no tile: chunk stored each noise model
    sampler = patches.PatchSampler(sources, patch=8, cache_tiles=3)
    gen = torch.Generator().manual_seed(1)
    batches: Counter[str] = Counter()
    n = 900
    for _ in range(n):
        x, source = sampler.sample(2, gen)
        assert x.shape == (2, 8, 8, 8)
        batches[source.path.stem] += 1
    # uniform over tomograms: n/3 each (binomial sd 14); weighting by size would give 53 / 212 / 635
    for name in SHAPES:
        assert abs(batches[name] - n / 3) < 4 * np.sqrt(n * (1 / 3) * (2 / 3)), batches
    # within a tomogram, every tile is drawn
    drawn = {(path, start) for path, start, _ in reads}
    for name, path in stores.items():
        n_tiles = next(s.meta.n_tiles for s in sources if s.path == path)
        assert {i for p, i in drawn if p == str(path)} == set(range(n_tiles)), name
    # lazily: one tile per read, and the cache is bounded, so tiles evicted are read again
    assert all(stop - start == 1 for _, start, stop in reads)
    assert len(reads) > len(drawn)
    assert len(sampler._cache) <= 3


def test_a_store_without_a_noise_model_reads_one_tile_to_estimate_it(stores, reads):
    import zarr

    group = zarr.open_group(str(stores["large"]), mode="r+")
    attrs = group.attrs.asdict()
    attrs["cryogen"]["noise"] = {}
    group.attrs.update(attrs)
    sources = patches.open_sources([stores["large"]])
    assert reads == [(str(stores["large"]), 0, 1)]
    assert sources[0].noise.sigma > 0


@pytest.mark.integration
def test_training_on_several_tomograms_reads_every_one(stores, reads, tmp_path):
    from cryogen.method.loop import train

    cfg = TrainConfig(steps=12, batch=1, patch=16, seed=3)
    train(list(stores.values()), tmp_path / "p.pt", cfg, device="cpu", progress=False)
    per_store = Counter(path for path, _, _ in reads)
    assert set(per_store) == {str(p) for p in stores.values()}, per_store
    assert all(stop - start == 1 for _, start, stop in reads)
