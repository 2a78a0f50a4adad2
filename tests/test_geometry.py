"""The orientation check: the missing wedge in the power spectrum tells the tilt axis and the beam
direction, so chunk warns when they are not the configured ones (and only then)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cryogen.cli.main import main
from cryogen.io.mrc import MrcReader, read_central_crop, write_mrc
from cryogen.model.imaging import Wedge
from cryogen.qc.geometry import Geometry, check_geometry, tilt_range, warn_geometry, wedge_scores
from cryogen.sim.simulate import simulate
from cryogen.tiling import chunk

SHAPE = (32, 48, 48)


@pytest.fixture(scope="module")
def tomograms() -> dict[str, np.ndarray]:
    """Simulated observations with a known tilt axis (beam along z), and one asymmetric range."""
    return {
        "y": simulate(SHAPE, Wedge(-60, 60, "y"), snr=0.3, seed=1).observation,
        "x": simulate(SHAPE, Wedge(-60, 60, "x"), snr=0.3, seed=2).observation,
        "asym": simulate(SHAPE, Wedge(-45, 62, "y"), snr=0.3, seed=3).observation,
    }


def _write(tmp_path, name: str, data: np.ndarray):
    path = tmp_path / name
    write_mrc(path, np.ascontiguousarray(data), 10.0)
    return path


@pytest.mark.parametrize("axis", ["y", "x"])
def test_correct_geometry_is_best_and_not_reported(tomograms, axis):
    result = wedge_scores(tomograms[axis], Wedge(-60, 60, axis))
    assert result.best == Geometry("z", axis) == result.configured
    assert not result.mismatch and result.advice("t.mrc") is None
    assert result.scores[result.configured] < 0.3  # the wedge really is empty


@pytest.mark.parametrize("axis,other", [("y", "x"), ("x", "y")])
def test_other_tilt_axis_is_detected(tomograms, axis, other):
    result = wedge_scores(tomograms[axis], Wedge(-60, 60, other))
    assert result.best == Geometry("z", axis) and result.mismatch
    message = result.advice("t.mrc")
    assert message.startswith("t.mrc: ") and f"tilt axis is {axis}" in message and f"tilt_axis {axis}" in message


def test_volume_saved_without_rotx_is_detected(tmp_path, tomograms):
    # IMOD's tilt output before rotx: the beam along y, the tilt axis along z
    path = _write(tmp_path, "full.rec", np.swapaxes(tomograms["y"], 0, 1))
    result = check_geometry(path, Wedge(-60, 60, "y"))
    assert result.best == Geometry("y", "z") and result.mismatch
    message = result.advice(path)
    assert str(path) in message and "rotx" in message and "not z" in message
    assert "tilt_axis" not in message  # after rotx the tilt axis is y again, as configured


def test_beam_along_x_and_tilt_axis_x_after_rotation(tmp_path, tomograms):
    # tilt axis x, beam along y: after rotx the tilt axis is still x, so the advice must say so
    result = wedge_scores(np.swapaxes(tomograms["x"], 0, 1), Wedge(-60, 60, "y"))
    assert result.best == Geometry("y", "x") and "tilt_axis x" in result.advice()
    result = wedge_scores(np.swapaxes(tomograms["y"], 0, 2), Wedge(-60, 60, "y"))
    assert result.best == Geometry("x", "y") and "flipxz" in result.advice()


def test_asymmetric_range_on_swapped_axes(tomograms):
    assert not wedge_scores(tomograms["asym"], Wedge(-45, 62, "y")).mismatch
    result = wedge_scores(np.swapaxes(tomograms["asym"], 0, 1)[:, ::-1], Wedge(-45, 62, "y"))
    assert result.best.beam == "y" and result.mismatch


def test_pure_noise_is_not_reported():
    noise = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    assert not wedge_scores(noise, Wedge(-60, 60, "y")).mismatch


def test_only_a_central_crop_is_read(tmp_path, tomograms, monkeypatch):
    data = tomograms["y"]
    path = _write(tmp_path, "t.mrc", data)
    with MrcReader(path) as reader:
        crop = read_central_crop(reader, crop=20)
    np.testing.assert_array_equal(crop, data[6:26, 14:34, 14:34])
    monkeypatch.setattr(MrcReader, "read_all", lambda self: pytest.fail("read the whole volume"))
    result = check_geometry(path, Wedge(-60, 60, "y"), crop=24)  # the crop alone tells the axes
    assert result is not None and result.best == Geometry("z", "y") == result.configured and not result.mismatch
    result = check_geometry(path, Wedge(-60, 60, "x"), crop=24)
    assert result is not None and result.best == Geometry("z", "y") and result.mismatch
    assert check_geometry(path, Wedge(-60, 60, "y"), crop=8) is None  # too small to tell: no verdict


def test_tiny_constant_or_bad_volumes_give_no_verdict(tmp_path):
    assert check_geometry(_write(tmp_path, "thin.mrc", np.random.default_rng(0).random((8, 40, 40))), Wedge()) is None
    assert check_geometry(_write(tmp_path, "flat.mrc", np.ones((20, 20, 20))), Wedge()) is None
    nan = np.random.default_rng(0).random((20, 20, 20))
    nan[10, 10, 10] = np.nan
    assert check_geometry(_write(tmp_path, "nan.mrc", nan), Wedge()) is None


def _geometry_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cryogen.qc.geometry" and r.levelno == logging.WARNING]


def test_chunk_warns_once_on_the_wrong_axis_and_not_on_the_right_one(tmp_path, tomograms, caplog):
    path = _write(tmp_path, "t.mrc", tomograms["y"])
    with caplog.at_level(logging.WARNING, logger="cryogen"):
        chunk(path, tmp_path / "ok.zarr", tile=32, overlap=8, wedge=Wedge(-60, 60, "y"), progress=False)
        assert _geometry_warnings(caplog) == []
        chunk(path, tmp_path / "bad.zarr", tile=32, overlap=8, wedge=Wedge(-60, 60, "x"), progress=False)
    warnings = _geometry_warnings(caplog)
    assert len(warnings) == 1 and str(path) in warnings[0] and "tilt_axis y" in warnings[0]
    assert "\n" not in warnings[0]
    assert (tmp_path / "bad.zarr").exists()  # a warning, not an error


def test_cli_chunk_prints_the_warning(tmp_path, tomograms, capsys):
    path = _write(tmp_path, "full.rec", np.swapaxes(tomograms["y"], 0, 1))
    code = main(
        ["chunk", str(path), str(tmp_path / "t.zarr"), "--tilt-range", "-60", "60", "--tile", "32", "--overlap", "8"]
    )
    err = capsys.readouterr().err
    assert code == 0
    assert any("full.rec" in line and "rotx" in line for line in err.splitlines()), err


def test_warn_geometry_returns_the_scores(tmp_path, tomograms):
    result = warn_geometry(_write(tmp_path, "t.mrc", tomograms["x"]), Wedge(-60, 60, "x"))
    assert result is not None and len(result.scores) == 6 and result.best == Geometry("z", "x")
    with pytest.raises(ValueError):
        Geometry("z", "z")


@pytest.mark.parametrize(
    "name,wedge", [("y", Wedge(-60, 60, "y")), ("x", Wedge(-60, 60, "x")), ("asym", Wedge(-45, 62, "y"))]
)
def test_tilt_range_is_read_from_the_spectrum(tomograms, name, wedge):
    lo, hi = tilt_range(tomograms[name], wedge.tilt_axis)
    assert lo == pytest.approx(wedge.tilt_min, abs=1.5) and hi == pytest.approx(wedge.tilt_max, abs=1.5)


def test_tilt_range_of_a_dose_weighted_tilt_series():
    """Dose weighting, as processing pipelines apply it, weighs the last images taken (the high
    tilts of a dose-symmetric series) down at high frequency, so the measured power falls steadily
    with tilt; the edge is still read where the wedge begins (half a 3-degree step beyond the last
    tilt), not where the power has fallen halfway from its level near 0 degrees (+-30-38 here)."""
    from cryogen.sim.tilt_series import Dose, TiltScheme, simulate_tilt_series

    sim = simulate_tilt_series((32, 64, 64), TiltScheme(-60, 60, 3), 1.0, 0, 10.0, dose=Dose(3.0), dose_weighting=True)
    lo, hi = tilt_range(sim.observation, "y")
    assert lo == pytest.approx(-61.5, abs=1.5) and hi == pytest.approx(61.5, abs=1.5)


def test_no_tilt_range_without_a_wedge():
    rng = np.random.default_rng(0)
    assert tilt_range(rng.standard_normal(SHAPE).astype(np.float32), "y") is None  # white noise: no wedge at all


def test_chunk_warns_when_the_tilt_range_is_off(tmp_path, tomograms, caplog):
    """Data tilted -45..62 chunked as +-60: one line with the range to pass; none when it is right."""
    path = _write(tmp_path, "t.mrc", tomograms["asym"])
    with caplog.at_level(logging.WARNING, logger="cryogen"):
        chunk(path, tmp_path / "ok.zarr", tile=32, overlap=8, wedge=Wedge(-45, 62, "y"), progress=False)
        chunk(
            path, tmp_path / "near.zarr", tile=32, overlap=8, wedge=Wedge(-47, 60, "y"), progress=False
        )  # within 4 degrees
        assert _geometry_warnings(caplog) == []
        chunk(path, tmp_path / "off.zarr", tile=32, overlap=8, wedge=Wedge(-60, 60, "y"), progress=False)
    (warning,) = _geometry_warnings(caplog)
    assert str(path) in warning and "not the configured -60 to 60" in warning
    lo, hi = (float(v) for v in warning.split("tilt_range ")[1].split()[:2])
    assert lo == pytest.approx(-45, abs=1.5) and hi == pytest.approx(62, abs=1.5)


def test_tilt_range_of_the_real_crop():
    """The real microtubule crop (../shared/real; skipped without it): tilt axis y, and a wedge
    measured from about -66 to 57 degrees, not the +-60 one might assume."""
    from pathlib import Path

    tif = Path(__file__).resolve().parents[2] / "shared" / "real" / "14pf_MT.tif"
    if not tif.exists():
        pytest.skip(f"{tif} is not here")
    import tifffile

    volume = tifffile.imread(tif).astype(np.float32)
    assert volume.shape == (44, 136, 84)
    check = wedge_scores(volume, Wedge(-60, 60, "y"))
    assert check.best == Geometry("z", "y") and not check.mismatch
    lo, hi = check.tilt_range
    assert lo == pytest.approx(-66, abs=2) and hi == pytest.approx(57, abs=2)
    assert check.range_mismatch and "tilt_range" in check.advice("crop.mrc")


def test_cli_chunk_reads_the_tilt_range_when_asked(tmp_path, tomograms, capsys):
    """--tilt-range auto: the store gets the range the spectrum shows; without a clear wedge (or
    with a malformed range) one error line and no output."""
    from cryogen.io.store import open_store

    path = _write(tmp_path, "t.mrc", tomograms["asym"])
    code = main(
        ["chunk", str(path), str(tmp_path / "t.zarr"), "--tilt-range", "auto", "--tile", "32", "--overlap", "8"]
    )
    err = capsys.readouterr().err
    assert code == 0 and "tilt range read off the missing wedge" in err, err
    wedge = open_store(tmp_path / "t.zarr")[1].wedge
    assert wedge.tilt_min == pytest.approx(-45, abs=1.5) and wedge.tilt_max == pytest.approx(62, abs=1.5)
    noise = _write(tmp_path, "noise.mrc", np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32))
    for args, needle in (
        ([str(noise), "--tilt-range", "auto"], "cannot read the tilt range off the missing wedge"),
        ([str(path), "--tilt-range", "5"], "--tilt-range takes MIN MAX in degrees, or auto, not '5'"),
        ([str(path), "--tilt-range", "-60", "sixty"], "not '-60 sixty'"),
        (
            [str(path), "--tilt-range", "auto", "--tilt-axis", "x"],
            "cannot read the tilt range about x: looks like the tilt axis is y",
        ),
    ):
        code = main(["chunk", args[0], str(tmp_path / "bad.zarr"), *args[1:], "--tile", "32", "--overlap", "8"])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if "error" in ln]
        assert code != 0 and len(lines) == 1 and needle in lines[0], err
        assert not (tmp_path / "bad.zarr").exists()


def test_advice_names_the_setting_as_the_front_end_spells_it(tomograms, tmp_path, run_cli):
    """The library names parameters (a Python caller passes tilt_axis=...); the CLI names flags."""
    from cryogen.errors import setting, settings_named_as_flags

    result = wedge_scores(tomograms["y"], Wedge(-60, 60, "x"))
    assert "tilt_axis y" in result.advice("t.mrc")
    with settings_named_as_flags():
        assert setting("tilt_axis") == "--tilt-axis" and "--tilt-axis y" in result.advice("t.mrc")
    assert setting("tilt_axis") == "tilt_axis"  # only inside the block
    path = _write(tmp_path, "t.mrc", tomograms["y"])
    code, _, err = run_cli(
        "chunk", path, tmp_path / "t.zarr", "--tilt-range", -60, 60, "--tilt-axis", "x", "--tile", 32
    )
    assert code == 0 and "--tilt-axis y" in err
