"""Smoke tests of the speed benchmark's parts (the benchmark itself is a command, not a test)."""

from __future__ import annotations

import logging
import time

import pytest

from cryogen.bench.speed import make_volume, run_stage, throughput, tiles_for, train_rate
from cryogen.model.nets import NetConfig


def test_throughput_parts_are_positive():
    t = throughput("cpu", NetConfig(), map_steps=1, tile=16, batch=1, repeats=1)
    assert t["g_tile_s"] > 0 and t["map_step_tile_s"] > 0
    # the default's step runs g once per flip: it costs more than one pass of g
    assert t["denoiser_step_tile_s"] > t["g_tile_s"]
    assert 0 < t["coarse_fill_tile_s"] < t["denoiser_step_tile_s"]  # g over the flips on 1/8 of the voxels


def test_training_rate_keeps_chunks_warnings_about_its_random_volume_out(caplog):
    """The rate is measured on a random field, which chunk rightly warns about (no signal, no
    wedge); those warnings are not the user's business in a speed table, and the level is restored."""
    logger = logging.getLogger("cryogen.qc.warnings")
    before = logger.level
    with caplog.at_level(logging.WARNING):
        assert train_rate("cpu", steps=1) > 0
    assert not [r for r in caplog.records if r.name == "cryogen.qc.warnings"]
    assert logger.level == before


def test_tiles_for_covers_the_volume():
    assert tiles_for((48, 48, 48)) == 1  # with its 8-voxel margin beyond each face, one 64^3 tile
    assert tiles_for((48, 96, 96)) == 4  # stride 48 from -8: two tiles per axis
    assert tiles_for((64, 64, 64)) == 8


def test_stage_runs_as_its_own_process_and_reports_peak_memory(tmp_path):
    make_volume(tmp_path / "v.mrc", (8, 32, 32))
    wall, rss = run_stage(["info", str(tmp_path / "v.mrc")], threads=1)
    assert wall > 0 and 10 < rss < 2000
    with pytest.raises(RuntimeError, match="info"):
        run_stage(["info", str(tmp_path / "missing.mrc")], threads=1)


def test_phase_timings_add_up(tmp_path):
    """The profile behind "where the time goes": every phase measured, none negative, together no
    longer than the call that measured them; the partial store removed."""
    from cryogen.bench.speed import reconstruct_phases, train_phases
    from cryogen.method.config import TrainConfig
    from cryogen.method.loop import train
    from cryogen.model.imaging import Wedge
    from cryogen.tiling import chunk

    make_volume(tmp_path / "v.mrc", (32, 64, 64))
    chunk(
        tmp_path / "v.mrc",
        tmp_path / "t.zarr",
        tile=32,
        overlap=8,
        wedge=Wedge(-60, 60),
        progress=False,
        check_geometry=False,
    )
    train([tmp_path / "t.zarr"], tmp_path / "p.pt", TrainConfig(steps=1), device="cpu", progress=False)
    start = time.perf_counter()
    r = reconstruct_phases(tmp_path / "t.zarr", tmp_path / "p.pt", tmp_path / "r.zarr", "cpu")
    wall = time.perf_counter() - start
    assert set(r) == {"read", "compute", "write"} and all(v >= 0 for v in r.values())
    assert sum(r.values()) <= wall
    assert not (tmp_path / ".r.zarr.partial").exists() and not (tmp_path / "r.zarr").exists()
    start = time.perf_counter()
    t = train_phases(tmp_path / "t.zarr", "cpu", steps=2)
    wall = time.perf_counter() - start
    assert set(t) == {"draw", "step", "checkpoint", "steps", "every"}
    assert t["steps"] == 2 and t["every"] == TrainConfig().checkpoint_every
    assert min(t["draw"], t["step"], t["checkpoint"]) >= 0 and t["draw"] + t["step"] + t["checkpoint"] <= wall


@pytest.mark.integration
def test_full_size_runs_the_stages_end_to_end_and_cleans_up(tmp_path):
    from cryogen.bench.speed import full_size
    from cryogen.method.config import TrainConfig
    from cryogen.method.loop import train
    from cryogen.model.imaging import Wedge
    from cryogen.tiling import chunk

    make_volume(tmp_path / "v.mrc", (32, 64, 64))
    chunk(tmp_path / "v.mrc", tmp_path / "t.zarr", wedge=Wedge(-60, 60), progress=False, check_geometry=False)
    train([tmp_path / "t.zarr"], tmp_path / "p.pt", TrainConfig(steps=1), device="cpu", progress=False)
    rows = full_size(tmp_path, tmp_path / "p.pt", "cpu", threads=1, shape=(32, 64, 64))
    assert [r["figure"].split()[1] for r in rows] == ["chunk", "reconstruct", "stitch", "chunk"]
    assert all(float(r["value"]) > 0 for r in rows)
    left = sorted(p.name for p in (tmp_path / "full").iterdir())
    assert left == ["in.mrc"]  # the tiles, the restored tiles and the output are removed
