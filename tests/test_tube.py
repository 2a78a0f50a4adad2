"""The real crop's simulated twin (cryogen.sim.tube) and `benchmark --tube`, which restores it as
`benchmark --real` restores the crop and scores it against its truth too."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryogen.errors import CryogenError
from cryogen.qc.cues import PROBES
from cryogen.qc.isotropy import filament_isotropy
from cryogen.sim.tube import TUBE_ANGLE, TUBE_EFFECTS, TUBE_SHAPE, TUBE_VOXEL, simulate_tube, tube_effects, tube_phantom

RADIUS, WALL = 110.0 / TUBE_VOXEL, 40.0 / TUBE_VOXEL


def test_effects_by_name_all_and_unknown():
    assert tube_effects(["all"]) == tuple(TUBE_EFFECTS)
    assert tube_effects(["lattice", "ctf"]) == ("ctf", "lattice")  # one order, whatever the order asked
    assert tube_effects([]) == ()
    with pytest.raises(CryogenError, match=r"unknown tube effect.*bogus"):
        tube_effects(["ctf", "bogus"])


def test_phantom_is_round_tubes_and_the_switches_change_it():
    """The truth's tube is round (top/bottom as strong as the sides, within the wall's sampling),
    normalised, reproducible; the lattice and the crowding each change it."""
    plain = tube_phantom()
    assert plain.shape == TUBE_SHAPE and plain.dtype == np.float32
    assert abs(float(plain.mean())) < 1e-5 and abs(float(plain.std()) - 1) < 1e-4
    assert np.array_equal(plain, tube_phantom())
    assert 0.9 < filament_isotropy(plain, RADIUS, TUBE_ANGLE, WALL).ratio < 1.2
    for kw in ({"lattice": True}, {"crowded": True}):
        assert not np.allclose(tube_phantom(**kw), plain)


def test_the_wedge_erases_the_tubes_top_and_bottom_and_effects_switch_alone():
    """Through the tilt series the tube loses its top and bottom (its ratio falls well below the
    truth's); the asymmetric range is the crop's; each effect changes the observation alone, and
    the phantom stays the same unless the effect is the scene's."""
    base = simulate_tube([])
    assert base.wedge.tilt_min == -60 and base.wedge.tilt_max == 60
    assert filament_isotropy(base.observation, RADIUS, TUBE_ANGLE, WALL).ratio < 0.6
    for effect in TUBE_EFFECTS:
        s = simulate_tube([effect])
        assert not np.allclose(s.observation, base.observation), effect
        assert np.array_equal(s.truth, base.truth) == (effect not in ("crowding", "lattice")), effect
    assert (simulate_tube(["asymmetric"]).wedge.tilt_min, simulate_tube(["asymmetric"]).wedge.tilt_max) == (-66, 57)
    assert simulate_tube(["low-snr"]).sigma > base.sigma


@pytest.mark.integration
def test_tube_benchmark_scores_every_row_against_the_truth(tmp_path, run_cli):
    """`benchmark --tube` runs the real-data benchmark on the twin: a truth row (round, nothing
    scored against itself), then input and result, each with its cc and wedge recovery against
    the truth; the input's wedge recovery is ~0 (its wedge is empty), and the figures and D's cues are written."""
    code, out, err = run_cli(
        "benchmark",
        "--tube",
        "ctf",
        "--steps",
        2,
        "--workdir",
        tmp_path,
        "--device",
        "cpu",
        "--json",
        tmp_path / "t.json",
    )
    assert code == 0, err
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [r["volume"] for r in rows] == ["truth (ctf)", "input", "restored"]
    truth, observed, restored = rows
    assert truth["tube_ratio"] > 0.9 > observed["tube_ratio"] and truth["cc"] is None
    for row in (observed, restored):
        assert all(np.isfinite(row[k]) for k in ("cc", "measured_recovery", "wedge_recovery_no_z_profile"))
    assert abs(observed["wedge_recovery_no_z_profile"]) < 0.15 and restored["train_steps"] == 2
    for name in ("real_slices.png", "real_tube.png", "restored.mrc", "input.mrc"):
        assert (tmp_path / "tube" / name).exists()
    assert not (tmp_path / "tube" / "tube.mrc").exists()  # the observation is written once, as the input
    assert "truth (ctf)" in out
    # and what D told real from simulated tiles by (cryogen.qc.cues), written and printed
    cues = json.loads((tmp_path / "tube" / "d_cues.json").read_text())
    assert set(cues["judged_real"]) == set(PROBES) and all(0 <= v <= 1 for v in cues["judged_real"].values())
    assert f"D judges real: real {cues['judged_real']['real']:.2f}, real, flipped" in out
    assert cues["verdict"] in out
