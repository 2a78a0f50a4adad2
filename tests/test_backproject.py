"""cryogen.backproject: an aligned tilt series (MRC stack + tilt file) into a tomogram and its
even/odd halves, streamed slab by slab. On simulated tilt series (the tilt-series forward model
of cryogen.sim): the streamed result equals the in-memory weighted back-projection for any slab
size, the halves are the alternating tilts in angle order, only a slab's rows are read and memory
does not grow with the number of rows, bad inputs give one line and no output, the CLI end to
end, and (marker workflow) a tilt-series row of the sheet planned and run as backproject -> chunk."""

from __future__ import annotations

import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryogen.backproject import TiltStackReader, backproject, default_thickness, half_tilts
from cryogen.errors import CryogenError
from cryogen.io.mrc import MrcReader, read_mrc
from cryogen.sim.phantom import make_phantom
from cryogen.sim.projection import MAX_TILT
from cryogen.sim.tilt_series import TiltScheme, acquire, reconstruct

TILTS = TiltScheme(-60.0, 60.0, 6.0, order="dose-symmetric")


def simulated_series(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Noise-free images (tilt, y, u) of a phantom of `shape` at TILTS' angles (ascending)."""
    vol = make_phantom(shape, np.random.default_rng(seed), 10.0)
    return acquire(vol - vol.mean(), TILTS, 10.0)


def write_series(folder: Path, images: np.ndarray, angles: np.ndarray, name: str = "ts", pixel: float = 10.0):
    """An MRC2014 image stack (space group 0, mz 1, as mrcfile writes stacks) and its IMOD .tlt."""
    stack, tlt = folder / f"{name}.ali", folder / f"{name}.tlt"
    with mrcfile.new(stack, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(images, dtype=np.float32))
        m.set_image_stack()
        m.voxel_size = pixel
    tlt.write_text("".join(f"{a:g}\n" for a in angles))
    return stack, tlt


@pytest.fixture(scope="module")
def series():
    """A 21-tilt series of a 16 x 24 x 32 phantom, stored in acquisition (dose-symmetric) order."""
    images = simulated_series((16, 24, 32))
    acquired = np.argsort(TILTS.acquisition_rank())  # stack index -> index into the ascending angles
    return images, acquired


def stored(tmp_path, series):
    images, acquired = series
    return write_series(tmp_path, images[acquired], TILTS.angles()[acquired])


def test_stack_reader_takes_both_stack_headers(tmp_path, series):
    """MRC2014 stacks (space group 0, mz 1: refused by MrcReader as a tomogram) and IMOD-style ones."""
    images, _ = series
    stack, _ = write_series(tmp_path, images, TILTS.angles())
    with pytest.raises(CryogenError, match="stack of 21 2-D images"):
        MrcReader(stack)
    with TiltStackReader(stack) as r:
        assert r.shape == images.shape and r.info.voxel_size == (10.0, 10.0, 10.0)
        np.testing.assert_array_equal(r.read_block(0, 21, 5, 9), images[:, 5:9])


@pytest.mark.parametrize("slab", [1, 5, 24, 100])
def test_streamed_equals_the_in_memory_reconstruction(tmp_path, series, slab):
    images, _ = series
    stack, tlt = stored(tmp_path, series)
    result = backproject(stack, tlt, tmp_path / "t.mrc", thickness=16, slab=slab, progress=False)
    ref = reconstruct(images, TILTS.angles(), TILTS.step, (16, 24, 32))
    got, info = read_mrc(tmp_path / "t.mrc")
    assert result.shape == got.shape == (16, 24, 32) and info.voxel_size == (10.0, 10.0, 10.0)
    assert result.step == pytest.approx(TILTS.step) and result.angles == tuple(TILTS.angles())
    assert float(np.abs(ref).max()) > 0.1
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))


@pytest.mark.parametrize("slab", [3, 24])
def test_halves_are_the_alternating_tilts_in_angle_order(tmp_path, series, slab):
    images, _ = series
    stack, tlt = stored(tmp_path, series)
    out, even, odd = tmp_path / "t.mrc", tmp_path / "e.mrc", tmp_path / "o.mrc"
    backproject(stack, tlt, out, (even, odd), thickness=16, slab=slab, progress=False)
    angles = TILTS.angles()
    full, e, o = (read_mrc(p)[0] for p in (out, even, odd))
    scale = float(np.abs(full).max())
    for half, picked in ((e, slice(0, None, 2)), (o, slice(1, None, 2))):  # -60, -48, ... and -54, -42, ...
        ref = reconstruct(images[picked], angles[picked], 2 * TILTS.step, (16, 24, 32))
        np.testing.assert_allclose(half, ref, rtol=0, atol=1e-5 * scale)
    ref_full = reconstruct(images, angles, TILTS.step, (16, 24, 32))
    np.testing.assert_allclose(full, ref_full, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose((e + o) / 2, full, rtol=0, atol=1e-6 * scale)
    assert np.linalg.norm(e - o) > 0.05 * np.linalg.norm(full)  # different tilts, different streaks


def test_half_tilts_follow_angles_not_the_stack_order():
    angles = np.array([0.0, 3.0, -3.0, 6.0, -6.0])  # dose-symmetric acquisition
    even, odd = half_tilts(angles)
    assert sorted(angles[even]) == [-6.0, 0.0, 6.0] and sorted(angles[odd]) == [-3.0, 3.0]


def test_binning_averages_pixels_and_scales_the_voxel(tmp_path, series):
    images, acquired = series
    odd_sized = np.concatenate([images, images[:, :1]], axis=1)  # 25 rows: the last is dropped at binning 2
    stack, tlt = write_series(tmp_path, odd_sized[acquired], TILTS.angles()[acquired])
    result = backproject(stack, tlt, tmp_path / "t.mrc", binning=2, thickness=8, slab=5, progress=False)
    binned = images.reshape(21, 12, 2, 16, 2).mean(axis=(2, 4)) / 2
    ref = reconstruct(binned.astype(np.float32), TILTS.angles(), TILTS.step, (8, 12, 16))
    got, info = read_mrc(tmp_path / "t.mrc")
    assert result.shape == (8, 12, 16) and info.voxel_size == (20.0, 20.0, 20.0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))
    assert default_thickness(16) == 4
    backproject(stack, tlt, tmp_path / "d.mrc", binning=2, progress=False)
    assert read_mrc(tmp_path / "d.mrc")[0].shape == (4, 12, 16)


def test_reads_only_the_rows_of_a_slab(tmp_path, series, monkeypatch):
    stack, tlt = stored(tmp_path, series)
    reads = []
    original = TiltStackReader.read_block

    def counted(self, z0, z1, y0=0, y1=None):
        reads.append((z0, z1, y0, y1))
        return original(self, z0, z1, y0, y1)

    monkeypatch.setattr(TiltStackReader, "read_block", counted)
    backproject(stack, tlt, tmp_path / "t.mrc", binning=2, thickness=8, slab=4, progress=False)
    assert all(z0 == 0 and z1 == 21 and y1 - y0 <= 8 for z0, z1, y0, y1 in reads)
    assert [(y0, y1) for *_, y0, y1 in reads] == [(0, 8), (8, 16), (16, 24)]  # every row once, in order


def _peak_bytes(tmp_path: Path, ny: int) -> int:
    images = np.tile(simulated_series((8, 8, 48)), (1, ny // 8, 1))
    stack, tlt = write_series(tmp_path, images, TILTS.angles(), name=f"ny{ny}")
    outs = [tmp_path / f"{n}{ny}.mrc" for n in ("t", "e", "o")]
    tracemalloc.start()
    try:
        backproject(stack, tlt, outs[0], (outs[1], outs[2]), thickness=16, slab=8, progress=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_rows(tmp_path):
    """8 times the rows: the same peak. Holding the stack or the outputs would add ~0.5 MB per 32
    rows here (21 x 32 x 48 pixels in, 3 x 16 x 32 x 48 voxels out), over 5 MB at 256 rows."""
    small, large = _peak_bytes(tmp_path, 32), _peak_bytes(tmp_path, 256)
    whole_large = 4 * 256 * 48 * (21 + 3 * 16)
    assert large < small + 0.05 * whole_large, (small, large)


def _no_outputs(folder: Path, *names: str) -> None:
    left = [p.name for p in folder.iterdir() if p.name in names or ".tmp-" in p.name]
    assert not left, left


@pytest.mark.filterwarnings("ignore:Data array contains NaN values")
def test_bad_inputs_give_one_line_and_no_output(tmp_path, series):
    images, _ = series
    angles = TILTS.angles()
    stack, tlt = write_series(tmp_path, images, angles)
    outs = ("t.mrc", "e.mrc", "o.mrc")

    def fails(match: str, stack=stack, tlt=tlt, **kw) -> None:
        with pytest.raises(CryogenError, match=match) as exc:
            halves = (tmp_path / outs[1], tmp_path / outs[2])
            backproject(stack, tlt, tmp_path / outs[0], halves, **{"thickness": 8, "slab": 4, "progress": False, **kw})
        assert "\n" not in str(exc.value)
        _no_outputs(tmp_path, *outs)

    short = tmp_path / "short.tlt"
    short.write_text("".join(f"{a:g}\n" for a in angles[:-1]))
    fails(rf"^{stack}: 21 images, but the tilt file {short} holds 20 angles$", tlt=short)
    steep = tmp_path / "steep.tlt"
    steep.write_text("".join(f"{a:g}\n" for a in [*angles[:-1], 89.5]))
    fails(rf"^{steep}: tilt angle 89.5 is beyond \+-{MAX_TILT:g} degrees", tlt=steep)
    flat = tmp_path / "flat.mrc"
    with mrcfile.new(flat) as m:
        m.set_data(images[0])
    fails(rf"^{flat}: holds one 24 x 32 image, not a tilt series", stack=flat)
    fails(r"tilt file not found", tlt=tmp_path / "nope.tlt")
    fails(r"binning 40 leaves no pixel of its 24 x 32 images", binning=40)
    fails(r"^thickness must be a positive integer, not 0$", thickness=0)
    fails(r"reconstruction filter must be one of ramp, sirt, not 'wbp'", recon_filter="wbp")
    bad = images.copy()
    bad[3, 22, 7] = np.nan  # in the last slab: earlier slabs were written when it is found
    nan_stack, _ = write_series(tmp_path, bad, angles, name="nan")
    fails(rf"^{nan_stack}: image 3 \(tilt -42\) has NaN pixels \(first at y=22, x=7\)$", stack=nan_stack)
    with pytest.raises(CryogenError, match="none of them the tilt series itself"):
        backproject(stack, tlt, stack, progress=False)
    with pytest.raises(CryogenError, match="must be different files"):
        backproject(stack, tlt, tmp_path / "t.mrc", (tmp_path / "t.mrc", tmp_path / "o.mrc"), progress=False)
    _no_outputs(tmp_path, *outs)


def test_sirt_filter_is_the_shared_one(tmp_path, series):
    images, _ = series
    stack, tlt = stored(tmp_path, series)
    backproject(stack, tlt, tmp_path / "s.mrc", thickness=16, recon_filter="sirt", slab=7, progress=False)
    ref = reconstruct(images, TILTS.angles(), TILTS.step, (16, 24, 32), recon_filter="sirt")
    got = read_mrc(tmp_path / "s.mrc")[0]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))
    ramp = reconstruct(images, TILTS.angles(), TILTS.step, (16, 24, 32))
    assert np.linalg.norm(got / np.linalg.norm(got) - ramp / np.linalg.norm(ramp)) > 0.02


def test_cli_end_to_end(tmp_path, series, run_cli):
    images, _ = series
    stack, tlt = stored(tmp_path, series)
    out, even, odd = tmp_path / "t.mrc", tmp_path / "e.mrc", tmp_path / "o.mrc"
    code, stdout, stderr = run_cli(
        "backproject", stack, "--tilt-file", tlt, "--out", out, "--halves", even, odd, "--thickness", 16, "--slab", 5
    )
    assert code == 0, stderr
    assert stdout.strip() == f"wrote {out}, {even}, {odd}: 16 x 24 x 32 voxels of 10 A from 21 tilts"
    ref = reconstruct(images, TILTS.angles(), TILTS.step, (16, 24, 32))
    np.testing.assert_allclose(read_mrc(out)[0], ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))
    code, stdout, _ = run_cli("info", out)
    assert code == 0 and "-60" in stdout and "60" in stdout

    code, _, stderr = run_cli("backproject", stack, "--tilt-file", tlt, "--out", tmp_path / "x.mrc", "--binning", 0)
    assert code == 1 and stderr.strip() == "cryogen backproject: error: --binning must be a positive integer, not 0"
    assert not (tmp_path / "x.mrc").exists()


def test_backproject_starts_without_torch():
    """Like chunk and stitch, the verb imports no torch (a fast start for a CPU job)."""
    code = (
        "import sys; from cryogen.cli.main import build_parser; import cryogen.backproject\n"
        "build_parser().parse_args(['backproject', 'a.ali', '--tilt-file', 'a.tlt', '--out', 'b.mrc'])\n"
        "print('torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr


# ----------------------------------------------------------------------------- the workflow


@pytest.mark.workflow
def test_sheet_tilt_series_row_runs_backproject_then_chunk(tmp_path):
    """A tilt-series row: backproject makes the tomogram and halves, chunk reads them with --halves;
    a tomogram row beside it is untouched by backproject. Planned (-n), then run up to the tiles."""
    from test_workflow import make_workspace, snakemake, write_tomogram

    ws = make_workspace(tmp_path / "ws")
    (ws / "data").mkdir()
    images = simulated_series((32, 48, 64), seed=3)
    write_series(ws / "data", images, TILTS.angles(), name="a")
    write_tomogram(ws / "data/b.mrc", seed=4)
    (ws / "config/tomograms.tsv").write_text(
        "name\tpath\ttilt_series\ttilt_file\ttilt_min\ttilt_max\tthickness\n"
        "a\t\tdata/a.ali\tdata/a.tlt\t\t\t32\n"
        "b\tdata/b.mrc\t\t\t-60\t60\t\n"
    )
    plan = snakemake(ws, "-n", "-p")
    assert plan.code == 0, plan
    assert plan.jobs["backproject"] == 1 and plan.jobs["chunk"] == 2, plan
    assert ("backproject", "tomogram=a") in plan.ran, plan
    assert (
        "cryogen backproject data/a.ali --tilt-file data/a.tlt --out results/a/tomogram.mrc"
        " --halves results/a/tomogram_even.mrc results/a/tomogram_odd.mrc --binning 1 --thickness 32" in plan.log
    ), plan
    assert (
        "cryogen chunk results/a/tomogram.mrc results/a/tiles.zarr" in plan.log
        and "--tilt-file data/a.tlt --tilt-axis y --halves results/a/tomogram_even.mrc results/a/tomogram_odd.mrc"
        in plan.log
    ), plan

    run = snakemake(ws, "results/a/tiles.zarr")
    assert run.code == 0, run
    assert run.jobs == {"backproject": 1, "chunk": 1}, run
    tomo, info = read_mrc(ws / "results/a/tomogram.mrc")
    assert tomo.shape == (32, 48, 64) and info.voxel_size == (10.0, 10.0, 10.0)
    assert re.search(r'"method":\s*"halves"', (ws / "results/a/tiles.zarr/zarr.json").read_text())  # measured noise
