"""TIFF stacks into MRC (`cryogen convert`, `io.tiff`): voxels and voxel size carried exactly, one
page at a time, and every bad input a one-line error with no output left; chunk names the fix
when handed a TIFF."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from test_cli import assert_one_line_error, only

from cryogen.io.mrc import read_mrc
from cryogen.io.tiff import convert_tiff


def write_imagej(path, data, nm_per_voxel=None):
    """A TIFF as Fiji writes it: one page per z plane, the voxel size as ImageJ's unit and resolution."""
    if nm_per_voxel is None:
        tifffile.imwrite(path, data, photometric="minisblack")
    else:
        res = 1.0 / nm_per_voxel
        tifffile.imwrite(
            path, data, imagej=True, resolution=(res, res), metadata={"unit": "nm", "spacing": nm_per_voxel}
        )
    return path


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_a_stack_becomes_the_same_voxels_with_imagejs_voxel_size(tmp_path, run_cli, dtype):
    data = (np.random.default_rng(0).random((7, 12, 9)) * 100).astype(dtype)
    src = write_imagej(tmp_path / "t.tif", data, nm_per_voxel=1.052)
    code, out, err = run_cli("convert", src, tmp_path / "t.mrc")
    assert code == 0, err
    assert "10.52" in out
    vol, info = read_mrc(tmp_path / "t.mrc")
    assert vol.dtype == np.float32 and np.array_equal(vol, data.astype(np.float32))
    assert info.voxel_size == pytest.approx((10.52, 10.52, 10.52), rel=1e-5)
    assert only(tmp_path, "t.tif", "t.mrc")


def test_the_voxel_size_given_wins_and_is_needed_without_metadata(tmp_path, run_cli):
    data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    src = write_imagej(tmp_path / "plain.tiff", data)
    code, _, err = run_cli("convert", src, tmp_path / "p.mrc")
    assert_one_line_error(code, err, "plain.tiff", "--voxel-size")
    assert only(tmp_path, "plain.tiff")
    assert convert_tiff(src, tmp_path / "p.mrc", voxel_size=7.0, progress=False) == 7.0
    vol, info = read_mrc(tmp_path / "p.mrc")
    assert info.voxel_size == (7.0, 7.0, 7.0) and np.array_equal(vol, data)


def test_a_stack_in_one_page_is_read_too(tmp_path):
    data = np.random.default_rng(1).random((3, 6, 5)).astype(np.float32)
    src = tmp_path / "planar.tif"
    tifffile.imwrite(src, data, photometric="rgb", planarconfig="separate")  # 3 planes as one page's samples
    with tifffile.TiffFile(src) as tif:
        assert len(tif.series[0].pages) == 1
    convert_tiff(src, tmp_path / "p.mrc", voxel_size=5.0, progress=False)
    assert np.array_equal(read_mrc(tmp_path / "p.mrc")[0], data)


def test_bad_stacks_are_one_line_errors_and_leave_nothing(tmp_path, run_cli):
    flat = write_imagej(tmp_path / "flat.tif", np.ones((4, 5), np.float32), nm_per_voxel=1.0)
    code, _, err = run_cli("convert", flat, tmp_path / "o.mrc")
    assert_one_line_error(code, err, "flat.tif", "3-D")
    nan = np.ones((5, 6, 7), np.float32)
    nan[3, 2, 1] = np.nan
    src = write_imagej(tmp_path / "nan.tif", nan, nm_per_voxel=1.0)
    code, _, err = run_cli("convert", src, tmp_path / "o.mrc")
    assert_one_line_error(code, err, "nan.tif", "NaN", "z=3")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all" * 10)
    code, _, err = run_cli("convert", tmp_path / "junk.tif", tmp_path / "o.mrc")
    assert_one_line_error(code, err, "junk.tif", "not a readable TIFF")
    code, _, err = run_cli("convert", src, tmp_path / "o.mrc", "--voxel-size", 0)
    assert_one_line_error(code, err, "--voxel-size must be a positive number")
    assert only(tmp_path, "flat.tif", "nan.tif", "junk.tif")


def test_chunk_handed_a_tiff_says_to_convert_it(tmp_path, run_cli):
    src = write_imagej(tmp_path / "tomo.tif", np.ones((8, 8, 8), np.float32), nm_per_voxel=1.0)
    code, _, err = run_cli("chunk", src, tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, "tomo.tif", "cryogen convert")
    assert only(tmp_path, "tomo.tif")


def test_run_takes_a_tiff_and_leaves_only_its_output(tmp_path, run_cli):
    """`cryogen run IN.tif`: converted into a hidden MRC beside the output, restored with ImageJ's
    voxel size, and the conversion removed."""
    obs = tmp_path / "obs.mrc"
    assert run_cli("simulate", obs, "--shape", 16, 32, 32, "--seed", 2)[0] == 0
    src = write_imagej(tmp_path / "obs.tif", read_mrc(obs)[0], nm_per_voxel=0.8)
    obs.unlink()
    common = ("--tilt-range", -60, 60, "--steps", 2, "--tile", 16, "--overlap", 4, "--patch", 16, "--device", "cpu")
    code, out, err = run_cli("run", src, tmp_path / "r.mrc", *common)
    assert code == 0, err
    assert "wedge fill" in out
    assert read_mrc(tmp_path / "r.mrc")[1].voxel_size == pytest.approx((8.0, 8.0, 8.0), rel=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".png") and "curves" not in p.name) == [
        "obs.tif",
        "r.mrc",
    ]
