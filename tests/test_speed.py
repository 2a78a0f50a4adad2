"""Smoke tests of the speed benchmark's parts (the benchmark itself is a command, not a test)."""

from __future__ import annotations

import pytest

from cryogen.nets import NetConfig
from cryogen.speed import make_volume, run_stage, throughput, tiles_for


def test_throughput_parts_are_positive():
    t = throughput("cpu", NetConfig(), map_steps=1, tile=16, batch=1, repeats=1)
    assert t["g_tile_s"] > 0 and t["map_step_tile_s"] > 0


def test_tiles_for_covers_the_volume():
    assert tiles_for((64, 64, 64)) == 1
    assert tiles_for((64, 112, 112)) == 4  # stride 48: two tiles per axis


def test_stage_runs_as_its_own_process_and_reports_peak_memory(tmp_path):
    make_volume(tmp_path / "v.mrc", (8, 32, 32))
    wall, rss = run_stage(["info", str(tmp_path / "v.mrc")], threads=1)
    assert wall > 0 and 10 < rss < 2000
    with pytest.raises(RuntimeError, match="info"):
        run_stage(["info", str(tmp_path / "missing.mrc")], threads=1)
