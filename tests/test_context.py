"""The context fill: reconstruct restores the store's coarse level with the coarse network first,
blends it into one binned volume in the partial store, and takes each tile's low wedge band from
that volume's region, upsampled (`cryogen.restore.context`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr

import cryogen.restore.reconstruct as reconstruct_module
from cryogen.io.mrc import read_mrc, write_mrc
from cryogen.io.store import TILE_ARRAY, open_store
from cryogen.method.config import TrainConfig
from cryogen.method.loop import train
from cryogen.method.solver import SolveConfig
from cryogen.model.imaging import FFT_DIMS, Wedge, mask_tensor, radius_tensor
from cryogen.model.nets import NetConfig
from cryogen.restore.context import ContextVolume, tile_inside, tile_start
from cryogen.restore.partial import CONTEXT
from cryogen.restore.reconstruct import TileRestorer, prepare, reconstruct
from cryogen.sim.simulate import simulate
from cryogen.tiling import chunk, stitch

WEDGE = Wedge(-60, 60)
TINY = TrainConfig(
    steps=3, batch=2, patch=16, checkpoint_every=1, net=NetConfig(g_channels=4, g_depth=2, d_channels=4, d_layers=3)
)


def _chunk(mrc, store, tile=24, overlap=8):
    chunk(mrc, store, tile=tile, overlap=overlap, wedge=WEDGE, progress=False, check_geometry=False, beads=False)
    return store


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small observation chunked with its coarse level, and a tiny prior with a coarse network."""
    d = tmp_path_factory.mktemp("context")
    sim = simulate((24, 48, 40), WEDGE, snr=1.0, seed=5, voxel_size=10.0)
    write_mrc(d / "obs.mrc", sim.observation, 10.0)
    store = _chunk(d / "obs.mrc", d / "tiles.zarr")
    train([store], d / "prior.pt", TINY, device="cpu", progress=False)
    return d, store, d / "prior.pt"


def test_a_tiles_fill_is_its_region_of_the_whole_volume_upsampled_and_mirrored_as_chunk_mirrors(tmp_path):
    """Each tile's fill equals the whole binned volume upsampled 2x (trilinear, as coarse_fill
    upsamples), cut at the tile and mirrored beyond the volume's faces like the tile's data, in the
    store's normalised units: odd edges, negative starts and a tile wider than the volume included."""
    rng = np.random.default_rng(1)
    write_mrc(tmp_path / "v.mrc", rng.normal(size=(11, 37, 30)).astype(np.float32), 10.0)
    store = _chunk(tmp_path / "v.mrc", tmp_path / "v.zarr", tile=16, overlap=4)
    meta = open_store(store)[1]
    binned = rng.normal(size=tuple((n + 1) // 2 for n in meta.source_shape)).astype(np.float32)
    write_mrc(tmp_path / "b.mrc", binned, 20.0)  # its tiles blended back: the volume itself
    stitch(_chunk(tmp_path / "b.mrc", tmp_path / "b.zarr", tile=16, overlap=4), tmp_path / "ctx.mrc", progress=False)
    np.testing.assert_allclose(read_mrc(tmp_path / "ctx.mrc")[0], binned, atol=1e-5)
    up = F.interpolate(torch.from_numpy(binned)[None, None], scale_factor=2, mode="trilinear", align_corners=False)
    whole = up[0, 0].numpy()[: meta.source_shape[0], : meta.source_shape[1], : meta.source_shape[2]]
    context = ContextVolume(tmp_path / "ctx.mrc", meta)
    assert min(s for starts in meta.starts for s in starts) < 0 and meta.source_shape[0] < meta.tile
    for index in range(meta.n_tiles):
        starts, inside = tile_start(meta, index), tile_inside(meta, index)
        part = whole[tuple(slice(a, b) for a, b in inside)]
        pad = [(a - s, s + meta.tile - b) for (a, b), s in zip(inside, starts, strict=True)]
        expected = (np.pad(part, pad, mode="symmetric") - meta.stats["mean"]) / meta.stats["std"]
        np.testing.assert_allclose(context.tiles([index])[0].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(context.tiles([0, 2])[1].numpy(), context.tiles([2])[0].numpy())


def test_reconstruct_takes_the_low_wedge_band_from_the_restored_coarse_level(trained, tmp_path):
    """prepare() restores the coarse level into the partial store; the tiles' missing wedge below
    the cutoff is then the context volume's, the rest g's; off, or finished, no context is left."""
    _, store, prior = trained
    cfg = SolveConfig(map_steps=0)
    partial, _ = prepare(store, prior, tmp_path / "out.zarr", cfg, 4, 0, "cpu")
    assert (partial / CONTEXT).is_file() and not (partial / "coarse").exists()
    restorer = TileRestorer(store, prior, partial, cfg, device="cpu")
    assert restorer.context is not None
    y = restorer.load([0, 1])
    mean, std = restorer.meta.stats["mean"], restorer.meta.stats["std"]
    got = (torch.from_numpy(restorer.compute([0, 1], y)[TILE_ARRAY]) - mean) / std
    low = (1 - mask_tensor(y.shape, WEDGE)).bool() & (radius_tensor(y.shape) < cfg.coarse_cutoff)
    assert bool(low.any())
    spectrum = torch.fft.rfftn(got, dim=FFT_DIMS)
    fill = torch.fft.rfftn(restorer.context.tiles([0, 1]), dim=FFT_DIMS)
    np.testing.assert_allclose(spectrum[..., low].numpy(), fill[..., low].numpy(), atol=1e-3)
    off = replace(cfg, context_fill=False)
    partial_off, _ = prepare(store, prior, tmp_path / "off.zarr", off, 4, 0, "cpu")
    assert not (partial_off / CONTEXT).exists()
    assert TileRestorer(store, prior, partial_off, off, device="cpu").context is None
    out = reconstruct(store, prior, tmp_path / "out.zarr", cfg, device="cpu", progress=False)
    assert not (out / CONTEXT).exists() and not partial.exists()
    np.testing.assert_allclose(np.asarray(zarr.open_group(str(out))[TILE_ARRAY][0:2]), got * std + mean, atol=1e-5)


def test_the_coarse_pass_restores_only_each_tiles_inside_and_runs_once(trained, tmp_path, monkeypatch):
    """The coarse network sees each coarse tile's part inside the volume (not the chunk's mirrored
    copies of a thin slab), padded only to what it needs; a resumed job does not restore it again."""
    _, store, prior = trained
    seen: list[tuple[int, ...]] = []

    class Recording(torch.nn.Module):
        multiple = 4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape[-3:]))
            return x

    level = store / "coarse"
    cfg = SolveConfig(map_steps=0, flips=1, wedge_wiener=False)
    partial, _ = prepare(level, prior, tmp_path / "c.zarr", cfg, 4, 0, "cpu", network="coarse")
    restorer = TileRestorer(level, prior, partial, cfg, device="cpu", network="coarse")
    restorer.g = Recording()
    meta = restorer.meta
    idx = list(range(meta.n_tiles))
    y = restorer.load(idx)
    got = torch.from_numpy(restorer.compute(idx, y)[TILE_ARRAY])
    for b, index in enumerate(idx):
        part = tuple(
            slice(a - s, z - s) for (a, z), s in zip(tile_inside(meta, index), tile_start(meta, index), strict=True)
        )
        shape = tuple(p.stop - p.start for p in part)
        assert seen[b] == tuple(n + (-n) % 4 for n in shape)
        assert any(n < meta.tile for n in shape)  # the level is thinner than a tile
        inside = y[b][part] * meta.stats["std"] + meta.stats["mean"]
        np.testing.assert_allclose(got[b][part].numpy(), inside.numpy(), atol=1e-5)
        outside = torch.ones(got[b].shape, dtype=torch.bool)
        outside[part] = False
        assert float((got[b][outside] - meta.stats["mean"]).abs().max()) < 1e-6  # zero, normalised

    calls = []
    original = reconstruct_module.reconstruct
    monkeypatch.setattr(reconstruct_module, "reconstruct", lambda *a, **k: calls.append(a) or original(*a, **k))
    full = SolveConfig(map_steps=0)
    prepare(store, prior, tmp_path / "f.zarr", full, 4, 0, "cpu")
    prepare(store, prior, tmp_path / "f.zarr", full, 4, 0, "cpu")
    assert len(calls) == 1
