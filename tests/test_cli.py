"""The command line: each bad input gets one line naming the file and the problem, a non-zero
exit, no traceback, and leaves no output behind."""

from __future__ import annotations

import json
import subprocess
import sys

import mrcfile
import numpy as np
import pytest

from cryogen.cli.main import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err  # progress bars may precede it
    assert "Traceback" not in err
    for needle in needles:
        assert str(needle) in errors[0], (needle, errors[0])


def only(tmp_path, *names):
    return sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_chunk_stitch_info_happy_path(tmp_path, capsys, write_volume):
    src = write_volume(shape=(30, 70, 50), voxel_size=11.0)
    code, out, err = run(
        capsys, "chunk", src, tmp_path / "t.zarr", "--tile", 32, "--overlap", 8, "--tilt-range", -54, 62
    )
    assert code == 0, err
    assert "tiles" in out
    code, out, _ = run(capsys, "info", tmp_path / "t.zarr", "--json")
    info = json.loads(out)
    assert info["shape_zyx"] == [30, 70, 50]
    assert info["tilt"] == {"tilt_min": -54.0, "tilt_max": 62.0, "tilt_axis": "y"}
    assert info["voxel_size_zyx_angstrom"] == [11.0, 11.0, 11.0]
    code, out, err = run(capsys, "stitch", tmp_path / "t.zarr", tmp_path / "o.mrc")
    assert code == 0, err
    code, out, _ = run(capsys, "info", tmp_path / "o.mrc")
    assert code == 0 and "(30, 70, 50)" not in out and "[30, 70, 50]" in out and "11.0" in out


def test_help_is_readable():
    for verb in ["simulate", "evaluate", "chunk", "stitch", "info"]:
        res = subprocess.run([sys.executable, "-m", "cryogen.cli", verb, "--help"], capture_output=True, text=True)
        assert res.returncode == 0 and "usage: cryogen " + verb in res.stdout


def test_missing_file(tmp_path, capsys):
    code, _, err = run(capsys, "chunk", tmp_path / "missing.mrc", tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, "missing.mrc", "not found")
    assert only(tmp_path)


def test_empty_file(tmp_path, capsys):
    (tmp_path / "e.mrc").write_bytes(b"")
    code, _, err = run(capsys, "chunk", tmp_path / "e.mrc", tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, "e.mrc", "empty")
    assert only(tmp_path, "e.mrc")


def test_not_an_mrc(tmp_path, capsys):
    (tmp_path / "notes.mrc").write_text("hello " * 400)
    code, _, err = run(capsys, "info", tmp_path / "notes.mrc")
    assert_one_line_error(code, err, "notes.mrc", "not a readable MRC")


def test_truncated(tmp_path, capsys, write_volume):
    src = write_volume(shape=(20, 30, 40))
    src.write_bytes(src.read_bytes()[:-1000])
    code, _, err = run(capsys, "chunk", src, tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, src.name, "truncated")
    assert only(tmp_path, src.name)


def test_two_dimensional(tmp_path, capsys):
    path = tmp_path / "img.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.zeros((30, 40), np.float32))
    code, _, err = run(capsys, "chunk", path, tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, "img.mrc", "2-D image")
    assert only(tmp_path, "img.mrc")


def test_image_stack(tmp_path, capsys):
    path = tmp_path / "stack.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.random.default_rng(0).random((5, 30, 40)).astype(np.float32))
        m.set_image_stack()
    code, _, err = run(capsys, "chunk", path, tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, "stack.mrc", "stack of 5 2-D images")


def test_complex_mode(tmp_path, capsys):
    path = tmp_path / "c.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.zeros((4, 5, 6), np.complex64))
    code, _, err = run(capsys, "info", path)
    assert_one_line_error(code, err, "c.mrc", "complex")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf(tmp_path, capsys, write_volume, bad):
    data = np.ones((20, 30, 40), np.float32)
    data[17, 3, 4] = bad
    src = write_volume(data=data)
    code, _, err = run(capsys, "chunk", src, tmp_path / "t.zarr", "--tilt-range", -60, 60, "--tile", 16, "--overlap", 4)
    assert_one_line_error(code, err, src.name, "NaN" if np.isnan(bad) else "Inf", "z=17")
    assert only(tmp_path, src.name)


@pytest.mark.parametrize(
    "lo,hi,msg", [(60, -60, "must be below"), (30, 30, "must be below"), (-95, 60, "beyond"), (-60, 100, "beyond")]
)
def test_bad_tilt_range(tmp_path, capsys, write_volume, lo, hi, msg):
    src = write_volume()
    code, _, err = run(capsys, "chunk", src, tmp_path / "t.zarr", "--tilt-range", lo, hi)
    assert_one_line_error(code, err, "tilt range", msg)
    assert only(tmp_path, src.name)


def test_zero_voxel_size_needs_override(tmp_path, capsys, write_volume):
    src = write_volume(voxel_size=0.0)
    code, _, err = run(capsys, "chunk", src, tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, src.name, "voxel size")
    assert only(tmp_path, src.name)
    code, _, err = run(capsys, "chunk", src, tmp_path / "t.zarr", "--tilt-range", -60, 60, "--voxel-size", 5)
    assert code == 0, err


def test_constant_volume(tmp_path, capsys, write_volume):
    src = write_volume(data=np.full((20, 20, 20), 2.0, np.float32))
    code, _, err = run(capsys, "chunk", src, tmp_path / "t.zarr", "--tilt-range", -60, 60, "--tile", 16, "--overlap", 4)
    assert_one_line_error(code, err, src.name, "constant")
    assert only(tmp_path, src.name)


def test_foreign_zarr_store(tmp_path, capsys):
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_array("x", shape=(3,), dtype="f4")
    code, _, err = run(capsys, "stitch", tmp_path / "other.zarr", tmp_path / "o.mrc")
    assert_one_line_error(code, err, "other.zarr", "not a CryoGEN tile store")
    assert only(tmp_path, "other.zarr")


def test_read_only_output_folder(tmp_path, capsys, write_volume):
    import os

    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    src = write_volume()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = run(capsys, "chunk", src, ro / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, "ro")


def test_output_folder_that_cannot_be_made(tmp_path, capsys, write_volume):
    src = write_volume()
    (tmp_path / "afile").write_text("x")
    code, _, err = run(capsys, "chunk", src, tmp_path / "afile" / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, "afile")


def test_console_script_prints_no_traceback(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "cryogen.cli", "stitch", str(tmp_path / "none.zarr"), str(tmp_path / "o.mrc")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "none.zarr" in res.stderr and "Traceback" not in res.stderr
