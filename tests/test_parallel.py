"""cryogen.restore.parallel: Dask reconstruction (a LocalCluster, or an existing cluster by its
scheduler address) equals the serial path bit for bit, loads the prior once per worker, and
resumes a killed serial run. A tiny prior and 9 tiles, but Dask clusters of worker processes
take half a minute to start and stop: marked `workflow`, with the Snakemake tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from cryogen.io.mrc import write_mrc
from cryogen.method.config import TrainConfig
from cryogen.method.loop import train
from cryogen.method.solver import SolveConfig
from cryogen.model.imaging import Wedge
from cryogen.model.nets import NetConfig
from cryogen.restore.parallel import reconstruct_parallel
from cryogen.restore.reconstruct import reconstruct
from cryogen.sim.simulate import simulate
from cryogen.tiling import chunk

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def store_and_prior(tmp_path_factory):
    d = tmp_path_factory.mktemp("dask")
    sim = simulate((32, 64, 64), Wedge(-60, 60), snr=0.5, seed=4, voxel_size=10.0)  # 18 tiles of 32^3 (2 x 3 x 3)
    write_mrc(d / "obs.mrc", sim.observation, 10.0)
    chunk(d / "obs.mrc", d / "tiles.zarr", tile=32, overlap=8, wedge=Wedge(-60, 60), progress=False)
    cfg = TrainConfig(steps=2, batch=2, patch=16, net=NetConfig(g_channels=4, g_depth=2, d_channels=4, d_layers=3))
    train([d / "tiles.zarr"], d / "prior.pt", cfg, device="cpu", progress=False)
    return d / "tiles.zarr", d / "prior.pt"


@pytest.fixture
def one_torch_thread():
    """torch's CPU sums depend on its thread count: compare runs made with the same (1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(g[name][:]) for name in g.array_keys() if name != "done"}


def test_dask_reconstruction_equals_serial(store_and_prior, tmp_path):
    """A LocalCluster of 2 worker processes gives the serial path's tiles bit for bit (same torch
    thread count per process: 1), and the std map too."""
    tiles, prior = store_and_prior
    cfg = SolveConfig(map_steps=2, samples=1, energy="discriminator")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reconstruct(tiles, prior, tmp_path / "serial.zarr", cfg, device="cpu", batch=2, seed=5, progress=False)
    finally:
        torch.set_num_threads(threads)
    out = reconstruct_parallel(
        tiles,
        prior,
        tmp_path / "dask.zarr",
        cfg,
        device="cpu",
        batch=2,
        seed=5,
        workers=2,
        memory_mb=2000,
        progress=False,
    )
    assert out == (tmp_path / "dask.zarr").resolve() and not (tmp_path / ".dask.zarr.partial").exists()
    serial, dask = _arrays(tmp_path / "serial.zarr"), _arrays(tmp_path / "dask.zarr")
    assert sorted(serial) == sorted(dask) == ["std", "tiles"]
    for name in serial:
        assert np.array_equal(serial[name], dask[name]), name
    # a multi-threaded serial run differs only by float rounding (torch's thread-dependent sums)
    reconstruct(tiles, prior, tmp_path / "serial_mt.zarr", cfg, device="cpu", batch=2, seed=5, progress=False)
    np.testing.assert_allclose(_arrays(tmp_path / "serial_mt.zarr")["tiles"], dask["tiles"], rtol=0, atol=1e-4)


def test_dask_existing_cluster_loads_prior_once_per_worker(store_and_prior, tmp_path, monkeypatch, one_torch_thread):
    """On an existing cluster (scheduler address), each worker builds one TileRestorer (loads the
    prior once) for all its batches of a pass, and the result equals the serial path's."""
    from distributed import LocalCluster

    import cryogen.restore.parallel as parallel

    built = []

    class Counting(parallel.TileRestorer):
        def __init__(self, *args, **kwargs):
            built.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(parallel, "TileRestorer", Counting)
    tiles, prior = store_and_prior
    cfg = SolveConfig(map_steps=1)
    # in-process workers (threads), so that the counting class is the one they use
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        reconstruct_parallel(
            tiles,
            prior,
            tmp_path / "ext.zarr",
            cfg,
            device="cpu",
            batch=1,
            seed=0,
            scheduler_address=cluster.scheduler_address,
            progress=False,
        )
    # 9 batches, 2 workers: one restorer (one prior load) per worker and pass (the coarse level
    # for the context fill, then the tiles)
    assert sorted(args[-1] for args in built) == ["coarse", "coarse", "g", "g"]
    reconstruct(tiles, prior, tmp_path / "serial.zarr", cfg, device="cpu", batch=1, seed=0, progress=False)
    assert np.array_equal(_arrays(tmp_path / "ext.zarr")["tiles"], _arrays(tmp_path / "serial.zarr")["tiles"])


def test_dask_resumes_a_killed_serial_run(store_and_prior, tmp_path, one_torch_thread):
    tiles, prior = store_and_prior
    cfg = SolveConfig(map_steps=1)
    partial = reconstruct(
        tiles, prior, tmp_path / "r.zarr", cfg, device="cpu", batch=2, seed=1, progress=False, max_batches=2
    )
    assert partial.name == ".r.zarr.partial"
    reconstruct_parallel(
        tiles, prior, tmp_path / "r.zarr", cfg, device="cpu", batch=2, seed=1, workers=2, progress=False
    )
    reconstruct(tiles, prior, tmp_path / "full.zarr", cfg, device="cpu", batch=2, seed=1, progress=False)
    assert np.array_equal(_arrays(tmp_path / "r.zarr")["tiles"], _arrays(tmp_path / "full.zarr")["tiles"])


def test_one_batch_is_restored_in_process_without_a_cluster(store_and_prior, tmp_path, monkeypatch, one_torch_thread):
    """A tomogram whose tiles fit one batch starts no Dask cluster (~6 s of a small tomogram's job)
    and gives the serial result."""
    import cryogen.restore.parallel as parallel

    def no_cluster(*args, **kwargs):
        raise AssertionError("a LocalCluster was started for one batch")

    tiles, prior = store_and_prior
    cfg = SolveConfig(map_steps=1)
    reconstruct(tiles, prior, tmp_path / "serial.zarr", cfg, device="cpu", batch=18, seed=5, progress=False)
    monkeypatch.setattr(parallel, "LocalCluster", no_cluster)
    reconstruct_parallel(
        tiles, prior, tmp_path / "one.zarr", cfg, device="cpu", batch=18, seed=5, workers=2, progress=False
    )
    assert np.array_equal(_arrays(tmp_path / "serial.zarr")["tiles"], _arrays(tmp_path / "one.zarr")["tiles"])
