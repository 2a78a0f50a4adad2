"""Tiles drawn by their structure: chunk records each tile's content, and training draws the
tiles of a thick tomogram's vacuum less often, while a tomogram that is specimen throughout is
drawn exactly as before (`cryogen.model.content`)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import zarr

from cryogen.io.mrc import write_mrc
from cryogen.io.store import TILE_ARRAY, open_store, read_tiles, zarr_array
from cryogen.method.patches import PatchSampler, open_sources
from cryogen.model.content import FLOOR, tile_content
from cryogen.model.imaging import Wedge
from cryogen.sim.phantom import VACUUM, make_phantom
from cryogen.tiling import chunk

WEDGE = Wedge(-60, 60)
TILE, OVERLAP = 32, 8


def _chunked(tmp_path, volume: np.ndarray, name: str, tile: int = TILE, overlap: int = OVERLAP):
    mrc = tmp_path / f"{name}.mrc"
    write_mrc(mrc, volume, 10.0)
    store = tmp_path / f"{name}.zarr"
    chunk(mrc, store, tile=tile, overlap=overlap, wedge=WEDGE, progress=False, check_geometry=False, beads=False)
    return store


@pytest.fixture
def thick(tmp_path):
    """A 24-plane specimen in the middle of 120 planes of vacuum, all of it noisy; and the planes
    each tile spans."""
    rng = np.random.default_rng(3)
    volume = np.zeros((120, 48, 48), np.float32)
    volume[48:72] = make_phantom((24, 48, 48), rng) - np.float32(VACUUM)
    volume += 0.5 * rng.standard_normal(volume.shape).astype(np.float32)
    store = _chunked(tmp_path, volume, "thick")
    _, meta = open_store(store)
    _, gy, gx = meta.grid_shape
    spans = [(meta.starts[0][i // (gy * gx)], meta.starts[0][i // (gy * gx)] + TILE) for i in range(meta.n_tiles)]
    return store, spans


def test_chunk_records_the_content_of_every_tile_it_writes(thick):
    store, _ = thick
    group, meta = open_store(store)
    array = zarr_array(group, TILE_ARRAY, store)
    assert meta.content is not None and len(meta.content) == meta.n_tiles
    for i in range(meta.n_tiles):
        assert meta.content[i] == pytest.approx(tile_content(read_tiles(array, i, i + 1, store)[0]), rel=1e-6)


def test_a_thick_tomograms_vacuum_is_drawn_less_often_than_its_specimen(thick):
    store, spans = thick
    sampler = PatchSampler(open_sources([store]), patch=16)
    weights = sampler._weights[0]
    assert weights is not None
    empty = [i for i, (z0, z1) in enumerate(spans) if z1 <= 48 or z0 >= 72]
    full = [i for i, (z0, z1) in enumerate(spans) if z0 <= 48 and z1 >= 72]  # the whole specimen
    assert empty and full
    assert all(float(weights[i]) < 0.2 for i in empty), weights
    assert all(float(weights[i]) == 1.0 for i in full), weights
    assert min(float(w) for w in weights) >= FLOOR
    # the draws follow the weights: the vacuum's share of them falls from its share of the tiles
    drawn: Counter[int] = Counter()
    real = sampler._tile

    def tile(s: int, i: int) -> np.ndarray:
        drawn[i] += 1
        return real(s, i)

    sampler._tile = tile  # type: ignore[method-assign]
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        sampler.sample(4, gen)
    share = sum(drawn[i] for i in empty) / sum(drawn.values())
    expected = float(weights[empty].sum() / weights.sum())
    assert len(empty) / len(spans) >= 0.4 and share < 0.15
    assert abs(share - expected) < 0.05


def test_a_tomogram_of_specimen_throughout_draws_exactly_as_before(tmp_path):
    """No weights, and the very patches the uniform draw gave (so the benchmarks' phantoms and
    the crops train as they did); a store chunked before the content was recorded also draws
    uniformly."""
    rng = np.random.default_rng(4)
    volume = make_phantom((40, 64, 64), rng)[4:36]  # the slab's middle: specimen in every plane
    volume += 0.3 * rng.standard_normal(volume.shape).astype(np.float32)
    store = _chunked(tmp_path, volume, "full")
    sources = open_sources([store])
    sampler = PatchSampler(sources, patch=16)
    assert sampler._weights == [None]
    gen, ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(20):
        x, _ = sampler.sample(2, gen)
        torch.randint(1, (1,), generator=ref)  # the source
        for b in range(2):
            i = int(torch.randint(sources[0].meta.n_tiles, (1,), generator=ref))
            z, y, xx = (int(v) for v in torch.randint(TILE - 16 + 1, (3,), generator=ref))
            expected = (sampler._tile(0, i))[z : z + 16, y : y + 16, xx : xx + 16]
            assert torch.equal(x[b], torch.from_numpy(expected))


def test_a_store_without_content_draws_uniformly(thick):
    store, _ = thick
    group = zarr.open_group(str(store), mode="r+")
    attrs = group.attrs.asdict()
    del attrs["cryogen"]["content"]
    group.attrs.update(attrs)
    assert open_store(store)[1].content is None
    assert PatchSampler(open_sources([store]), patch=16)._weights == [None]


@pytest.mark.parametrize(("shape", "tile"), [((48, 56, 56), 32), ((16, 28, 28), 16)])
def test_a_volume_of_noise_alone_draws_uniformly(tmp_path, shape, tile):
    """Its tiles differ by the noise's chance alone (and, on small tiles, by their mirrored
    faces): none is told empty."""
    volume = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    store = _chunked(tmp_path, volume, "noise", tile, tile // 4)
    assert PatchSampler(open_sources([store]), patch=8)._weights == [None]
