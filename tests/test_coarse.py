"""The coarse network: chunk adds a coarse level to each tile store (the prepared tomogram binned
2x, chunked alike), training steps a second g on it beside g, and reconstruct's two-scale fill
takes the wedge's low frequencies from it; priors and stores from before fall back to g."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

import cryogen.io.binning as binning
from cryogen.io.binning import bin2, bin_mrc
from cryogen.io.mrc import read_mrc, write_mrc
from cryogen.io.store import TILE_ARRAY, coarse_level, open_store, zarr_array
from cryogen.method.config import TrainConfig
from cryogen.method.loop import train
from cryogen.method.solver import COARSE_CUTOFF_G, CoarseInput, SolveConfig, TwoScaleDenoiser
from cryogen.model.imaging import Wedge, mask_tensor, radius_tensor
from cryogen.model.nets import NetConfig
from cryogen.restore.reconstruct import TileRestorer, load_prior, prepare
from cryogen.sim.simulate import simulate
from cryogen.tiling import chunk

WEDGE = Wedge(-60, 60)
TINY = TrainConfig(
    steps=3, batch=2, patch=16, checkpoint_every=1, net=NetConfig(g_channels=4, g_depth=2, d_channels=4, d_layers=3)
)


def _chunk(mrc, store, **kw):
    chunk(mrc, store, tile=24, overlap=8, wedge=WEDGE, progress=False, check_geometry=False, beads=False, **kw)
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A small tilt-series-like observation chunked with and without its coarse level."""
    d = tmp_path_factory.mktemp("coarse")
    sim = simulate((24, 48, 40), WEDGE, snr=1.0, seed=5, voxel_size=10.0)
    write_mrc(d / "obs.mrc", sim.observation, 10.0)
    return d, _chunk(d / "obs.mrc", d / "with.zarr"), _chunk(d / "obs.mrc", d / "without.zarr", coarse=False)


def test_bin_mrc_streams_the_block_means_of_the_whole_volume(tmp_path, monkeypatch):
    """Streamed in blocks of 4 planes, odd edges included, the binned file is bin2 of the whole
    volume, with twice the voxel size."""
    monkeypatch.setattr(binning, "BIN_BLOCK", 4)
    data = np.random.default_rng(0).standard_normal((11, 9, 7)).astype(np.float32)
    write_mrc(tmp_path / "v.mrc", data, 7.5)
    assert bin_mrc(tmp_path / "v.mrc", tmp_path / "b.mrc", (7.5, 7.5, 7.5)) == (6, 5, 4)
    binned, info = read_mrc(tmp_path / "b.mrc")
    np.testing.assert_array_equal(binned, bin2(data))
    assert info.voxel_size == pytest.approx((15.0, 15.0, 15.0))
    assert binned[-1, -1, -1] == data[-1, -1, -1]  # the last block holds one voxel: its mean is that voxel


def test_chunk_writes_the_binned_volume_as_the_coarse_level(stores, tmp_path):
    """The coarse level is exactly the store chunk makes of the binned volume (tiles, statistics,
    noise model), at twice the voxel size; `coarse=False` writes none."""
    d, with_level, without = stores
    level = coarse_level(with_level)
    assert level is not None and coarse_level(without) is None
    observation, _ = read_mrc(d / "obs.mrc")
    write_mrc(tmp_path / "binned.mrc", bin2(observation), 20.0)
    direct = _chunk(tmp_path / "binned.mrc", tmp_path / "direct.zarr", coarse=False)
    (group, meta), (dgroup, dmeta) = open_store(level), open_store(direct)
    assert meta.source_shape == (12, 24, 20) and meta.voxel_size == pytest.approx((20.0, 20.0, 20.0))
    assert meta.source == str(d / "obs.mrc")  # named for the tomogram it comes from
    np.testing.assert_array_equal(zarr_array(group, TILE_ARRAY, level)[:], zarr_array(dgroup, TILE_ARRAY, direct)[:])
    assert meta.stats == dmeta.stats and meta.noise == dmeta.noise and meta.noise is not None
    # the full-size store is the one it was without the level
    np.testing.assert_array_equal(
        zarr_array(open_store(with_level)[0], TILE_ARRAY, with_level)[:],
        zarr_array(open_store(without)[0], TILE_ARRAY, without)[:],
    )


def test_a_volume_too_thin_to_bin_gets_no_coarse_level(tmp_path, caplog):
    write_mrc(tmp_path / "thin.mrc", np.random.default_rng(1).standard_normal((12, 40, 40)).astype(np.float32), 10.0)
    with caplog.at_level(logging.INFO):
        store = _chunk(tmp_path / "thin.mrc", tmp_path / "thin.zarr")
    assert coarse_level(store) is None and "too thin for a coarse level" in caplog.text
    open_store(store)  # the store itself is whole


def test_training_steps_the_coarse_network_beside_g_and_resumes_it_exactly(stores, tmp_path):
    _, with_level, _ = stores
    full = train([with_level], tmp_path / "full.pt", replace(TINY, steps=4), device="cpu", progress=False)
    assert all(np.isfinite(h["loss_coarse"]) for h in full["history"])
    start = train([with_level], tmp_path / "start.pt", replace(TINY, steps=0), device="cpu", progress=False)
    assert any(not torch.equal(full["g_coarse_ema"][k], start["g_coarse_ema"][k]) for k in start["g_coarse_ema"])
    train([with_level], tmp_path / "cut.pt", replace(TINY, steps=2), device="cpu", progress=False)
    resumed = train(
        [with_level], tmp_path / "cut.pt", replace(TINY, steps=4), device="cpu", resume=True, progress=False
    )
    for key in ("g_ema", "g_coarse_ema"):
        assert all(torch.equal(full[key][k], resumed[key][k]) for k in full[key]), key
    assert [h["loss_coarse"] for h in full["history"]] == [h["loss_coarse"] for h in resumed["history"]]


def test_a_store_without_a_coarse_level_trains_g_alone_and_says_so(stores, tmp_path, caplog):
    _, _, without = stores
    with caplog.at_level(logging.WARNING):
        ck = train([without], tmp_path / "p.pt", TINY, device="cpu", progress=False)
    assert "no coarse level in without.zarr" in caplog.text
    assert "g_coarse_ema" not in ck and ck["train"]["coarse"] is False
    assert all("loss_coarse" not in h for h in ck["history"])
    assert load_prior(tmp_path / "p.pt", torch.device("cpu")).coarse is None


def test_the_two_scale_fill_uses_the_coarse_network_where_prior_and_store_have_it(stores, tmp_path, caplog):
    """With both, the fill's network is the coarse one at the configured band; a prior without it,
    or a store without a coarse level, falls back to g below COARSE_CUTOFF_G, with a warning."""
    _, with_level, without = stores
    train([with_level], tmp_path / "c.pt", TINY, device="cpu", progress=False)
    train([with_level], tmp_path / "g.pt", replace(TINY, coarse=False), device="cpu", progress=False)
    cfg = SolveConfig(map_steps=0)
    cases = [(with_level, "c.pt", True), (with_level, "g.pt", False), (without, "c.pt", False)]
    for i, (store, prior, uses_coarse) in enumerate(cases):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            partial, _ = prepare(store, tmp_path / prior, tmp_path / f"out{i}.zarr", cfg, 4, 0)
        restorer = TileRestorer(store, tmp_path / prior, partial, cfg, device="cpu")
        assert isinstance(restorer.fill_net, CoarseInput) == uses_coarse
        assert restorer.fill_cutoff == (cfg.coarse_cutoff if uses_coarse else COARSE_CUTOFF_G)
        assert ("the two-scale fill uses g below" in caplog.text) != uses_coarse
        # the MAP steps' denoiser is two-scale where the fill is, else g itself
        assert isinstance(restorer.denoiser, TwoScaleDenoiser) == uses_coarse
        assert (restorer.denoiser is restorer.g) != uses_coarse
    for off in (replace(cfg, denoiser_coarse_cutoff=0.0), replace(cfg, coarse_cutoff=0.0)):
        plain = TileRestorer(with_level, tmp_path / "c.pt", partial, off, device="cpu")
        assert plain.denoiser is plain.g


def test_the_two_scale_denoiser_is_g_but_for_the_low_wedge_band_which_the_coarse_network_fills():
    """Only the missing wedge below the cutoff differs from g(x), and there it is the coarse
    network's estimate from x binned 2x (upsampled): the MAP step keeps the coarse fill's band."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 16, 16)

    def g(t):
        return 0.5 * t

    def coarse(t):
        return torch.zeros_like(t) + 3.0

    out = TwoScaleDenoiser(g, coarse, WEDGE, 0.2)(x)  # type: ignore[arg-type]
    band = (1.0 - mask_tensor(x.shape, WEDGE, x.device)) * (radius_tensor(x.shape, x.device) < 0.2)
    diff = torch.fft.rfftn(out - g(x), dim=(-3, -2, -1))  # the masks' rfft layout
    assert float(diff.abs()[..., band == 0].max()) < 1e-4 * float(diff.abs().max())
    assert float(diff.abs()[..., band > 0].max()) > 1.0
    same = TwoScaleDenoiser(g, coarse, WEDGE, 0.0)(x)  # type: ignore[arg-type]
    torch.testing.assert_close(same, g(x))


def test_coarse_input_carries_the_tiles_between_the_two_stores_units(stores):
    """A tile binned from the full-size store's normalised units, carried into the coarse level's,
    is the coarse level's own normalisation of the same binned voxels; the output goes back."""
    _, with_level, _ = stores
    full, coarse = open_store(with_level)[1].stats, open_store(coarse_level(with_level))[1].stats
    raw = torch.randn(1, 8, 8, 8) * 3.0 + 0.5
    seen = {}

    def net(t):
        seen["in"] = t
        return t

    wrapped = CoarseInput(net, full, coarse)  # type: ignore[arg-type]
    out = wrapped((raw - full["mean"]) / full["std"])
    torch.testing.assert_close(seen["in"], (raw - coarse["mean"]) / coarse["std"])
    torch.testing.assert_close(out, (raw - full["mean"]) / full["std"])


def test_the_networks_see_the_tiles_wedge_through_the_wiener_gains(stores, tmp_path):
    """With g the identity and nothing else on, reconstruct returns what the networks see: the
    tile's measured region unchanged and its wedge times the gains measured on the store's tiles
    (`wedge_signal_gains`), so that its noise holds far less power at high |k|;
    with `wedge_wiener` off, the tile itself."""
    _, store, _ = stores
    train([store], tmp_path / "c.pt", TINY, device="cpu", progress=False)
    seen = {}
    for on in (True, False):
        cfg = SolveConfig(map_steps=0, coarse_cutoff=0.0, flips=1, wedge_wiener=on)
        partial, _ = prepare(store, tmp_path / "c.pt", tmp_path / f"w{on}.zarr", cfg, 4, 0)
        restorer = TileRestorer(store, tmp_path / "c.pt", partial, cfg, device="cpu")
        restorer.g = torch.nn.Identity()
        y = restorer.load([0])
        mean, std = restorer.meta.stats["mean"], restorer.meta.stats["std"]
        seen[on] = (torch.from_numpy(restorer.compute([0], y)[TILE_ARRAY]) - mean) / std
        assert (restorer.wedge_gains is not None) == on
    np.testing.assert_allclose(seen[False].numpy(), y.numpy(), atol=1e-5)
    measured = mask_tensor(y.shape, WEDGE).bool()
    high = ~measured & (radius_tensor(y.shape) > 0.3)
    spec = {on: torch.fft.rfftn(v, dim=(-3, -2, -1)) for on, v in seen.items()}
    np.testing.assert_allclose(spec[True][..., measured].numpy(), spec[False][..., measured].numpy(), atol=1e-3)
    power = {on: float(s[..., high].abs().pow(2).mean()) for on, s in spec.items()}
    assert power[True] < 0.3 * power[False]
