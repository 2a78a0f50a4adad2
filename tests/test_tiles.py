"""Tiles and stitching: every voxel covered, exact round trips, no seams, flat memory."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from cryogen.errors import CryogenError
from cryogen.io.mrc import read_mrc
from cryogen.io.store import open_store
from cryogen.model.imaging import Wedge
from cryogen.tiling import TileGrid, axis_starts, axis_weights, chunk, grid_margin, owned_ranges, stitch

AWKWARD = [(96, 128, 80), (61, 77, 101), (20, 130, 70), (5, 33, 200), (64, 64, 64), (65, 49, 112), (1 + 48 * 2, 17, 64)]


@pytest.mark.parametrize("n", [1, 5, 47, 48, 49, 56, 63, 64, 65, 100, 112, 113, 257])
@pytest.mark.parametrize("tile,overlap", [(64, 16), (32, 8), (16, 0)])
def test_grid_covers_every_voxel_and_weights_sum_to_one(n, tile, overlap):
    margin = grid_margin(overlap)
    starts = axis_starts(n, tile, overlap, margin)
    covered = np.zeros(n, dtype=int)
    for s in starts:
        covered[max(s, 0) : min(s + tile, n)] += 1
    assert (covered >= 1).all()
    assert list(starts) == sorted(set(starts))
    if n + 2 * margin > tile:  # the volume's faces lie `margin` voxels inside the outermost tiles
        assert starts[0] == -margin and starts[-1] == n + margin - tile
    ranges = owned_ranges(n, tile, starts)  # a partition of [0, n), each range inside its tile
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (lo, hi), (lo2, _), s in zip(ranges, [*ranges[1:], (n, n)], starts, strict=False):
        assert lo < hi == lo2 and s <= lo and hi <= s + tile
    total = np.zeros(n)
    for s, w in zip(starts, axis_weights(n, tile, overlap, starts), strict=False):
        lo, hi = max(s, 0), min(s + tile, n)
        total[lo:hi] += w[lo - s : hi - s]
        assert (w[: lo - s] == 0).all() and (w[hi - s :] == 0).all()
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)


def test_weights_are_smooth_across_overlaps():
    n, tile, overlap = 200, 64, 16
    starts = axis_starts(n, tile, overlap)
    for s, w in zip(starts, axis_weights(n, tile, overlap, starts), strict=False):
        assert np.abs(np.diff(w[max(0, -s) :])).max() < 0.15  # no jumps: a cross-fade over the overlap


@pytest.mark.parametrize("shape", AWKWARD)
def test_chunk_stitch_round_trip(tmp_path, write_volume, shape):
    src = write_volume(shape=shape, voxel_size=13.7, origin=(1.5, -2.0, 30.0))
    store = tmp_path / "t.zarr"
    meta = chunk(src, store, tile=32, overlap=8, wedge=Wedge(-54, 62), progress=False)
    assert meta.source_shape == shape
    out = tmp_path / "out.mrc"
    stitch(store, out, progress=False, block_voxels=20_000)  # small blocks exercise the block logic
    x, _ = read_mrc(src)
    y, info = read_mrc(out)
    assert y.shape == x.shape
    assert np.abs(y - x).max() <= 1e-5 * np.abs(x).max()
    assert info.voxel_size == pytest.approx((13.7, 13.7, 13.7), rel=1e-6)
    assert info.origin == pytest.approx((1.5, -2.0, 30.0))


def test_default_tile_size_round_trip(tmp_path, write_volume):
    src = write_volume(shape=(70, 150, 101))
    chunk(src, tmp_path / "t.zarr", progress=False)
    stitch(tmp_path / "t.zarr", tmp_path / "o.mrc", progress=False)
    x, _ = read_mrc(src)
    y, _ = read_mrc(tmp_path / "o.mrc")
    assert np.abs(y - x).max() <= 1e-5 * np.abs(x).max()


def test_constant_added_to_every_tile_gives_no_seams(tmp_path, write_volume):
    src = write_volume(shape=(40, 90, 75))
    store = tmp_path / "t.zarr"
    chunk(src, store, tile=32, overlap=8, progress=False)
    group = zarr.open_group(str(store), mode="r+")
    group["tiles"][:] = group["tiles"][:] + 3.25
    stitch(store, tmp_path / "o.mrc", progress=False)
    x, _ = read_mrc(src)
    y, _ = read_mrc(tmp_path / "o.mrc")
    np.testing.assert_allclose(y, x + 3.25, atol=1e-5 * 3.25 + 1e-5)


def test_neighbours_that_disagree_are_cross_faded(tmp_path, write_volume):
    # each column of tiles along x gets its own constant: the stitched volume changes gradually,
    # never by the full step at once
    src = write_volume(shape=(32, 32, 120))
    store = tmp_path / "t.zarr"
    meta = chunk(src, store, tile=32, overlap=16, progress=False)
    group = zarr.open_group(str(store), mode="r+")
    tiles = group["tiles"][:]
    gx = meta.grid_shape[2]
    for i in range(meta.n_tiles):
        tiles[i] = (i % gx) * 10.0
    group["tiles"][:] = tiles
    stitch(store, tmp_path / "o.mrc", progress=False)
    y, _ = read_mrc(tmp_path / "o.mrc")
    profile = y[16, 16]
    assert np.abs(np.diff(profile)).max() < 10.0 / 4  # a step of 10 spread over the 16-voxel overlap
    # at the faces the outermost tile all but alone (its neighbour's outermost voxel weighs ~0.4 %)
    assert profile[0] == pytest.approx(0.0, abs=0.1) and profile[-1] == pytest.approx(10.0 * (gx - 1), abs=0.1)


@pytest.mark.parametrize("shape", [(64, 128, 128), (40, 90, 75), (9, 40, 40)])
def test_tile_faces_barely_reach_the_volume(tmp_path, write_volume, shape):
    # g is least trusted at a tile's outermost voxels (trained on patches whose faces across the
    # tilt axis lie outside the compared cylinder); garbage there must not reach the stitched
    # volume, neither at seams between tiles nor at the volume's own faces (a speckled border)
    src = write_volume(shape=shape)
    store = tmp_path / "t.zarr"
    chunk(src, store, tile=32, overlap=8, progress=False)
    group = zarr.open_group(str(store), mode="r+")
    tiles = group["tiles"][:]
    face = np.zeros((32, 32, 32), bool)
    for axis in range(3):
        face[(slice(None),) * axis + (slice(0, 2),)] = True
        face[(slice(None),) * axis + (slice(30, 32),)] = True
    tiles[:, face] += 1.0  # a unit error on the two outermost voxels of every face of every tile
    group["tiles"][:] = tiles
    stitch(store, tmp_path / "o.mrc", progress=False)
    x, _ = read_mrc(src)
    y, _ = read_mrc(tmp_path / "o.mrc")
    # where three seams cross, a voxel lies in the face band of 7 of its 8 tiles; their normalised
    # sin^2 weights at offset 1 of an 8-voxel ramp add up to ~0.23; at a volume face without the
    # margin the error would be the whole 1.0
    assert np.abs(y - x).max() < 0.3
    assert np.abs(y - x)[[0, -1]].max() < 0.3 and np.abs(y - x)[:, :, [0, -1]].max() < 0.3


def test_thinner_than_a_tile_is_padded_not_refused(tmp_path, write_volume):
    src = write_volume(shape=(9, 40, 40))
    meta = chunk(src, tmp_path / "t.zarr", tile=32, overlap=8, progress=False)
    assert meta.starts[0] == (-11,) and meta.starts[1][0] == -grid_margin(8)
    group, _m = open_store(tmp_path / "t.zarr")
    tile0 = group["tiles"][0]
    x, _ = read_mrc(src)
    np.testing.assert_array_equal(tile0[11:20, 4:32, 4:32], x[:, :28, :28])
    assert np.isfinite(tile0).all() and np.abs(tile0[:11]).sum() > 0  # mirrored, not zeros


def test_store_records_geometry_and_stats(tmp_path, write_volume):
    data = np.random.default_rng(3).normal(5.0, 2.0, (30, 50, 60)).astype(np.float32)
    src = write_volume(data=data, voxel_size=4.2)
    chunk(src, tmp_path / "t.zarr", tile=16, overlap=4, wedge=Wedge(-50, 65, "x"), progress=False)
    _, meta = open_store(tmp_path / "t.zarr")
    assert meta.wedge == Wedge(-50, 65, "x")
    assert meta.voxel_size == pytest.approx((4.2, 4.2, 4.2))
    assert meta.tile == 16 and meta.overlap == 4
    assert meta.stats["mean"] == pytest.approx(float(data.mean(dtype=np.float64)), rel=1e-6)
    assert meta.stats["std"] == pytest.approx(float(data.std(dtype=np.float64)), rel=1e-6)
    assert meta.stats["min"] == float(data.min()) and meta.stats["max"] == float(data.max())


def test_bad_grid_parameters():
    with pytest.raises(CryogenError):
        TileGrid((10, 10, 10), 4, 0)
    with pytest.raises(CryogenError):
        TileGrid((10, 10, 10), 32, 20)


def test_nan_voxel_leaves_no_store(tmp_path, write_volume):
    data = np.ones((20, 20, 20), np.float32)
    data[13, 2, 3] = np.nan
    src = write_volume(data=data)
    with pytest.raises(CryogenError, match="NaN voxels \\(first at z=13"):
        chunk(src, tmp_path / "t.zarr", tile=16, overlap=4, progress=False)
    assert list(tmp_path.iterdir()) == [src]
