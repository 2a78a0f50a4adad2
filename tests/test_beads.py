"""Gold fiducials: found where there are some and nowhere else, their streaks subtracted (checked
against the same tomogram made without them, same noise), recorded by chunk and drawn back round
by stitch, for either tilt axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import center_of_mass, label

from cryogen.beads import BeadModel, find_beads, model_beads, subtract_beads
from cryogen.io.mrc import MrcReader, read_mrc, write_mrc
from cryogen.io.store import open_store
from cryogen.model.imaging import Wedge
from cryogen.sim.phantom import GOLD
from cryogen.sim.simulate import simulate
from cryogen.sim.tilt_series import TiltScheme, simulate_tilt_series
from cryogen.tiling import chunk, stitch

SHAPE = (48, 96, 96)
REAL = Path(__file__).resolve().parents[2] / "shared" / "real" / "14pf_MT.tif"


def _pair(tmp_path: Path, axis: str = "y", seed: int = 3, sign: float = 1.0):
    """The same tilt-series tomogram with two beads and without (same noise level and draw);
    `sign` -1: with inverted contrast (dense is dark), as many reconstructions are written."""
    scheme = TiltScheme(-60, 60, axis=axis)
    gold = simulate_tilt_series(SHAPE, scheme, 0.5, seed, beads=2)
    bare = simulate_tilt_series(SHAPE, scheme, 0.5, seed)
    gold.observation *= np.float32(sign)
    bare.observation *= np.float32(sign)
    write_mrc(tmp_path / "gold.mrc", gold.observation, 10.0)
    write_mrc(tmp_path / "bare.mrc", bare.observation, 10.0)
    return gold, bare, Wedge(-60, 60, axis)


def _true_beads(truth: np.ndarray) -> list[np.ndarray]:
    labels, count = label(truth > GOLD / 2)
    return [np.array(center_of_mass(labels == k)) for k in range(1, count + 1)]


@pytest.mark.parametrize(("axis", "sign"), [("y", 1.0), ("x", 1.0), ("y", -1.0)])
def test_beads_found_where_they_are_and_their_streaks_subtracted(tmp_path, axis, sign):
    gold, bare, wedge = _pair(tmp_path, axis, sign=sign)
    true = _true_beads(gold.truth)
    model = model_beads(tmp_path / "gold.mrc", wedge, 10.0)
    assert len(model.beads) == len(true) == 2
    for bead in model.beads:
        err = min(np.linalg.norm(bead.center - c) for c in true)
        assert err < 1.0, (bead, true)
        assert 3.5 < bead.radius < 6.5  # 10 nm at 10 A per voxel
        assert np.sign(bead.peak) == sign
    subtract_beads(tmp_path / "gold.mrc", tmp_path / "sub.mrc", model, (10.0,) * 3, progress=False)
    sub = read_mrc(tmp_path / "sub.mrc")[0].astype(np.float64)
    ref = bare.observation.astype(np.float64)
    before = gold.observation - ref
    after = sub - ref
    before -= np.median(before)
    after -= np.median(after)
    ax = 1 if axis == "y" else 2
    for c in true:  # the bead's plane normal to the tilt axis holds its streaks
        plane = [slice(None)] * 3
        plane[ax] = slice(max(int(c[ax]) - 6, 0), int(c[ax]) + 7)
        p = tuple(plane)
        # 0.2-0.55 on these small periodic phantoms (0.22-0.25 on 96 x 192 x 192); unsubtracted: 1
        assert np.sqrt((after[p] ** 2).mean()) < 0.6 * np.sqrt((before[p] ** 2).mean())


def test_no_beads_found_in_tomograms_without_them(tmp_path):
    bare = simulate_tilt_series(SHAPE, TiltScheme(-60, 60), 0.5, 3)
    ideal = simulate((48, 96, 96), Wedge(-60, 60), 0.3, 4)
    for name, vol in (("ts", bare.observation), ("ideal", ideal.observation), ("truth", bare.truth)):
        write_mrc(tmp_path / f"{name}.mrc", vol, 10.0)
        with MrcReader(tmp_path / f"{name}.mrc") as reader:
            assert find_beads(reader, 10.0) == [], name
    if REAL.exists():  # the real microtubule crop has no fiducial
        from cryogen.bench.real import read_volume

        vol, _ = read_volume(REAL)
        write_mrc(tmp_path / "real.mrc", vol.astype(np.float32), 10.52)
        with MrcReader(tmp_path / "real.mrc") as reader:
            assert find_beads(reader, 10.52) == []


def test_chunk_records_the_beads_and_stitch_draws_them_back_round(tmp_path):
    gold, bare, wedge = _pair(tmp_path)
    meta = chunk(tmp_path / "gold.mrc", tmp_path / "g.zarr", tile=32, overlap=8, wedge=wedge, progress=False)
    plain = chunk(
        tmp_path / "gold.mrc", tmp_path / "p.zarr", tile=32, overlap=8, wedge=wedge, progress=False, beads=False
    )
    none = chunk(tmp_path / "bare.mrc", tmp_path / "b.zarr", tile=32, overlap=8, wedge=wedge, progress=False)
    assert plain.beads is None and none.beads is None and len(meta.beads["beads"]) == 2
    assert "transfer" not in meta.beads  # the store keeps what stitch needs, not the whole transfer
    assert BeadModel.from_dict(open_store(tmp_path / "g.zarr")[1].beads).beads[0].radius > 0
    # the tiles themselves, stitched: the input less the streaks, plus round beads
    stitch(tmp_path / "g.zarr", tmp_path / "g.mrc", progress=False)
    stitch(tmp_path / "p.zarr", tmp_path / "p.mrc", progress=False)
    out, plain_out = read_mrc(tmp_path / "g.mrc")[0], read_mrc(tmp_path / "p.mrc")[0]
    np.testing.assert_allclose(plain_out, gold.observation, atol=1e-4)  # no beads asked: the round trip
    for c in _true_beads(gold.truth):
        z, y, x = np.round(c).astype(int)
        assert out[z, y, x] > 0.7 * gold.observation[z, y, x]  # the bead is back at its place
        # its section along the beam is as wide as across it: round, not smeared along z
        along = (out[:, y, x] > out[z, y, x] / 2).sum()
        across = (out[z, y, :] > out[z, y, x] / 2).sum()
        assert along <= 1.5 * across
        # and away from it, in its plane, the streaks are weaker: closer to the bead-free tomogram
        # (0.72 here, where the small periodic phantom wraps them round; unsubtracted: 1)
        far = (slice(None), slice(y - 3, y + 4), slice(None))
        mask = np.ones(out[far].shape, bool)
        mask[max(z - 12, 0) : z + 13, :, max(x - 12, 0) : x + 13] = False
        ref = bare.observation[far][mask]
        assert (
            np.abs(out[far][mask] - ref - np.median(out[far][mask] - ref)).mean()
            < 0.8 * np.abs(gold.observation[far][mask] - ref - np.median(gold.observation[far][mask] - ref)).mean()
        )


def test_bead_model_round_trips_and_no_beads_changes_nothing(tmp_path):
    bare = simulate_tilt_series(SHAPE, TiltScheme(-60, 60), 0.5, 3)
    write_mrc(tmp_path / "bare.mrc", bare.observation, 10.0)
    model = model_beads(tmp_path / "bare.mrc", Wedge(-60, 60), 10.0)
    assert model.beads == [] and model.transfer == []
    subtract_beads(tmp_path / "bare.mrc", tmp_path / "same.mrc", model, (10.0,) * 3, progress=False)
    np.testing.assert_array_equal(read_mrc(tmp_path / "same.mrc")[0], bare.observation)
    back = BeadModel.from_dict(model.as_dict())
    assert back.beads == [] and back.tilt_axis == "y"


def test_small_blocks_find_and_subtract_the_same(tmp_path, monkeypatch):
    """Streaming in blocks of z planes and y rows: blocks smaller than a bead's reach find each
    bead once, where whole-volume blocks find it, and subtract the same."""
    import cryogen.beads as beads_module

    _pair(tmp_path)
    model = model_beads(tmp_path / "gold.mrc", Wedge(-60, 60), 10.0)
    subtract_beads(tmp_path / "gold.mrc", tmp_path / "a.mrc", model, (10.0,) * 3, progress=False)
    monkeypatch.setattr(beads_module, "BLOCK", 4)  # blocks of 4 planes and rows (2 planes when subtracting)
    small = model_beads(tmp_path / "gold.mrc", Wedge(-60, 60), 10.0)
    assert [b.center.round(3).tolist() for b in small.beads] == [b.center.round(3).tolist() for b in model.beads]
    subtract_beads(tmp_path / "gold.mrc", tmp_path / "b.mrc", small, (10.0,) * 3, progress=False)
    np.testing.assert_allclose(read_mrc(tmp_path / "b.mrc")[0], read_mrc(tmp_path / "a.mrc")[0], atol=1e-5)


def test_chunk_with_halves_and_with_a_defocus_subtracts_the_beads(tmp_path):
    """With halves, each half loses its beads too (its own transfer), and the noise measured from
    them is the bead-free tomogram's; with a defocus, beads are found on the deconvolved volume."""
    from cryogen.deconvolve import Deconvolution
    from cryogen.sim.ctf import CTF

    scheme, wedge = TiltScheme(-60, 60), Wedge(-60, 60)
    sims = {}
    for name, beads in (("gold", 2), ("bare", 0)):
        sim = simulate_tilt_series(SHAPE, scheme, 0.5, 3, halves=True, ctf=CTF(3.0), beads=beads)
        for part in ("observation", "even", "odd"):
            write_mrc(tmp_path / f"{name}_{part}.mrc", getattr(sim, part), 10.0)
        sims[name] = sim
    metas = {}
    for name in ("gold", "bare"):
        halves = (tmp_path / f"{name}_even.mrc", tmp_path / f"{name}_odd.mrc")
        metas[name] = chunk(
            tmp_path / f"{name}_observation.mrc", tmp_path / f"{name}.zarr", 32, 8, wedge, progress=False, halves=halves
        )
    assert len(metas["gold"].beads["beads"]) == 2 and metas["bare"].beads is None
    # the halves' difference holds no bead: the noise level is the bead-free tomogram's
    assert metas["gold"].noise["sigma"] == pytest.approx(metas["bare"].noise["sigma"], rel=0.1)
    deconv = chunk(
        tmp_path / "gold_observation.mrc",
        tmp_path / "d.zarr",
        32,
        8,
        wedge,
        progress=False,
        deconvolution=Deconvolution(CTF(3.0)),
    )
    assert deconv.deconvolution is not None and len(deconv.beads["beads"]) == 2


@pytest.mark.parametrize("apart", [6, 8, 10])
def test_beads_in_a_cluster_are_never_merged_into_one_between_them(tmp_path, apart):
    """Two beads `apart` voxels between centres (10 nm each: 10 touch, less overlap) and a lone
    one: each found is one of the true beads (to 1.5 voxels), none is a sphere between the pair
    (which would invent a bead there: their merged section is not round); the lone one is found."""
    base = simulate_tilt_series(SHAPE, TiltScheme(-60, 60), 0.5, 3).truth
    truth = base - base.min()
    zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    true = [np.array(c, float) for c in ((24, 30, 40), (24, 30, 40 + apart), (24, 70, 60))]
    for c in true:
        d = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        truth = np.maximum(truth, GOLD * np.clip(5.5 - d, 0, 1).astype(np.float32))
    sim = simulate_tilt_series(SHAPE, TiltScheme(-60, 60), 0.5, 3, phantom=truth)
    write_mrc(tmp_path / "pair.mrc", sim.observation, 10.0)
    with MrcReader(tmp_path / "pair.mrc") as reader:
        found = find_beads(reader, 10.0)
    assert all(min(np.linalg.norm(b.center - c) for c in true) < 1.5 for b in found), found
    assert any(np.linalg.norm(b.center - true[2]) < 1.5 for b in found)
