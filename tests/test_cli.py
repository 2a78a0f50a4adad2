"""The command line: each bad input gets one line naming the file and the problem, a non-zero
exit, no traceback, and leaves no output behind."""

from __future__ import annotations

import json
import subprocess
import sys

import mrcfile
import numpy as np
import pytest


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


def test_chunk_stitch_info_happy_path(tmp_path, run_cli, write_volume):
    src = write_volume(shape=(30, 70, 50), voxel_size=11.0)
    code, out, err = run_cli("chunk", src, tmp_path / "t.zarr", "--tile", 32, "--overlap", 8, "--tilt-range", -54, 62)
    assert code == 0, err
    assert "tiles" in out
    code, out, _ = run_cli("info", tmp_path / "t.zarr", "--json")
    info = json.loads(out)
    assert info["shape_zyx"] == [30, 70, 50]
    assert info["tilt"] == {"tilt_min": -54.0, "tilt_max": 62.0, "tilt_axis": "y"}
    assert info["voxel_size_zyx_angstrom"] == [11.0, 11.0, 11.0]
    code, out, err = run_cli("stitch", tmp_path / "t.zarr", tmp_path / "o.mrc")
    assert code == 0, err
    code, out, _ = run_cli("info", tmp_path / "o.mrc")
    assert code == 0 and "(30, 70, 50)" not in out and "[30, 70, 50]" in out and "11.0" in out


def test_help_is_readable():
    for verb in ["simulate", "evaluate", "chunk", "stitch", "info"]:
        res = subprocess.run([sys.executable, "-m", "cryogen.cli", verb, "--help"], capture_output=True, text=True)
        assert res.returncode == 0 and "usage: cryogen " + verb in res.stdout


def test_missing_file(tmp_path, run_cli):
    code, _, err = run_cli("chunk", tmp_path / "missing.mrc", tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, "missing.mrc", "not found")
    assert only(tmp_path)


def test_empty_file(tmp_path, run_cli):
    (tmp_path / "e.mrc").write_bytes(b"")
    code, _, err = run_cli("chunk", tmp_path / "e.mrc", tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, "e.mrc", "empty")
    assert only(tmp_path, "e.mrc")


def test_not_an_mrc(tmp_path, run_cli):
    (tmp_path / "notes.mrc").write_text("hello " * 400)
    code, _, err = run_cli("info", tmp_path / "notes.mrc")
    assert_one_line_error(code, err, "notes.mrc", "not a readable MRC")


def test_truncated(tmp_path, run_cli, write_volume):
    src = write_volume(shape=(20, 30, 40))
    src.write_bytes(src.read_bytes()[:-1000])
    code, _, err = run_cli("chunk", src, tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, src.name, "truncated")
    assert only(tmp_path, src.name)


def test_two_dimensional(tmp_path, run_cli):
    path = tmp_path / "img.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.zeros((30, 40), np.float32))
    code, _, err = run_cli("chunk", path, tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, "img.mrc", "2-D image")
    assert only(tmp_path, "img.mrc")


def test_image_stack(tmp_path, run_cli):
    path = tmp_path / "stack.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.random.default_rng(0).random((5, 30, 40)).astype(np.float32))
        m.set_image_stack()
    code, _, err = run_cli("chunk", path, tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, "stack.mrc", "stack of 5 2-D images")


def test_complex_mode(tmp_path, run_cli):
    path = tmp_path / "c.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.zeros((4, 5, 6), np.complex64))
    code, _, err = run_cli("info", path)
    assert_one_line_error(code, err, "c.mrc", "complex")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf(tmp_path, run_cli, write_volume, bad):
    data = np.ones((20, 30, 40), np.float32)
    data[17, 3, 4] = bad
    src = write_volume(data=data)
    code, _, err = run_cli("chunk", src, tmp_path / "t.zarr", "--tilt-range", -60, 60, "--tile", 16, "--overlap", 4)
    assert_one_line_error(code, err, src.name, "NaN" if np.isnan(bad) else "Inf", "z=17")
    assert only(tmp_path, src.name)


@pytest.mark.parametrize(
    "lo,hi,msg", [(60, -60, "must be below"), (30, 30, "must be below"), (-95, 60, "beyond"), (-60, 100, "beyond")]
)
def test_bad_tilt_range(tmp_path, run_cli, write_volume, lo, hi, msg):
    src = write_volume()
    code, _, err = run_cli("chunk", src, tmp_path / "t.zarr", "--tilt-range", lo, hi)
    assert_one_line_error(code, err, "tilt range", msg)
    assert only(tmp_path, src.name)


@pytest.mark.parametrize("cutoff", [-0.01, 0.3])
def test_coarse_cutoff_outside_zero_to_a_quarter_is_one_line(tmp_path, run_cli, cutoff):
    code, _, err = run_cli(
        "reconstruct",
        tmp_path / "t.zarr",
        "--prior",
        tmp_path / "p.pt",
        "--out",
        tmp_path / "r.zarr",
        "--coarse-cutoff",
        cutoff,
    )
    assert_one_line_error(code, err, "--coarse-cutoff", "between 0 and 0.25")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flips", [0, 9])
def test_flips_outside_one_to_eight_are_one_line(tmp_path, run_cli, flips):
    code, _, err = run_cli(
        "reconstruct", tmp_path / "t.zarr", "--prior", tmp_path / "p.pt", "--out", tmp_path / "r.zarr", "--flips", flips
    )
    assert_one_line_error(code, err, "--flips", "between 1 and 8")
    code, _, err = run_cli("benchmark", "--workdir", tmp_path / "bench", "--flips", flips)
    assert_one_line_error(code, err, "--flips", "between 1 and 8")
    assert not any(tmp_path.iterdir())


def test_zero_voxel_size_needs_override(tmp_path, run_cli, write_volume):
    src = write_volume(voxel_size=0.0)
    code, _, err = run_cli("chunk", src, tmp_path / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, src.name, "voxel size")
    assert only(tmp_path, src.name)
    code, _, err = run_cli("chunk", src, tmp_path / "t.zarr", "--tilt-range", -60, 60, "--voxel-size", 5)
    assert code == 0, err


def test_constant_volume(tmp_path, run_cli, write_volume):
    src = write_volume(data=np.full((20, 20, 20), 2.0, np.float32))
    code, _, err = run_cli("chunk", src, tmp_path / "t.zarr", "--tilt-range", -60, 60, "--tile", 16, "--overlap", 4)
    assert_one_line_error(code, err, src.name, "constant")
    assert only(tmp_path, src.name)


def test_foreign_zarr_store(tmp_path, run_cli):
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_array("x", shape=(3,), dtype="f4")
    code, _, err = run_cli("stitch", tmp_path / "other.zarr", tmp_path / "o.mrc")
    assert_one_line_error(code, err, "other.zarr", "not a CryoGEN tile store")
    assert only(tmp_path, "other.zarr")


def test_read_only_output_folder(tmp_path, run_cli, write_volume, monkeypatch):
    import errno
    import os

    src = write_volume()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root ignores folder permissions: refuse what the folder's mode refuses others
        mkdir = os.mkdir

        def refuse(path, *args, **kwargs):
            if str(path).startswith(str(ro)):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", refuse)
    code, _, err = run_cli("chunk", src, ro / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, ro / "t.zarr", "read-only")
    assert not list(ro.iterdir())


def test_output_folder_that_cannot_be_made(tmp_path, run_cli, write_volume):
    src = write_volume()
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli("chunk", src, tmp_path / "afile" / "t.zarr", "--tilt-range", -60, 60)
    assert_one_line_error(code, err, "afile")


def test_console_script_prints_no_traceback(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "cryogen.cli", "stitch", str(tmp_path / "none.zarr"), str(tmp_path / "o.mrc")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "none.zarr" in res.stderr and "Traceback" not in res.stderr


def test_verbs_that_run_no_network_do_not_import_torch():
    """chunk, stitch and info start fast: parsing them reads no default from a module that imports torch."""
    code = (
        "import sys; from cryogen.cli.main import build_parser; p = build_parser()\n"
        "for argv in (['chunk', 'a.mrc', 'b.zarr', '--tilt-range', '-60', '60'], ['stitch', 'a', 'b'], ['info', 'a']):\n"
        "    p.parse_args(argv)\n"
        "print('torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr


def test_defaults_are_the_library_defaults():
    from cryogen.bench.quality import QualityOptions
    from cryogen.bench.speed import SpeedOptions
    from cryogen.cli.main import build_parser
    from cryogen.method.config import TrainConfig
    from cryogen.method.solver import SolveConfig
    from cryogen.model.imaging import Wedge

    parse = build_parser().parse_args
    train, solve, wedge = TrainConfig(), SolveConfig(), Wedge()
    args = parse(["run", "a.mrc", "b.mrc", "--tilt-range", "auto"])
    assert (args.batch, args.patch, args.seed) == (train.batch, train.patch, train.seed)
    assert (args.map_steps, args.samples, args.prior_weight) == (solve.map_steps, solve.samples, solve.prior_weight)
    assert (args.tile, args.overlap, args.tilt_axis) == (64, 16, wedge.tilt_axis)
    assert tuple(parse(["evaluate", "a", "b"]).tilt_range) == (wedge.tilt_min, wedge.tilt_max)
    args = parse(["benchmark"])
    quality, speed = QualityOptions(), SpeedOptions()
    assert (tuple(args.shape), tuple(args.seeds), args.map_steps) == (quality.shape, quality.seeds, quality.map_steps)
    assert (args.train_steps, args.workdir) == (speed.train_steps, str(speed.workdir))


def test_simulate_tilt_series_model_writes_halves_and_records_the_geometry(tmp_path, run_cli):
    import mrcfile

    out = tmp_path / "obs.mrc"
    code, stdout, _ = run_cli(
        "simulate", out, "--truth", tmp_path / "t.mrc", "--shape", 16, 32, 32, "--model", "tilt-series",
        "--tilt-range", -45, 45, "--tilt-step", 5, "--defocus", 2, "--halves", "--seed", 3,
    )  # fmt: skip
    assert code == 0, stdout
    with (
        mrcfile.open(out) as m,
        mrcfile.open(tmp_path / "obs_even.mrc") as e,
        mrcfile.open(tmp_path / "obs_odd.mrc") as o,
    ):
        assert m.data.shape == (16, 32, 32)
        np.testing.assert_allclose(m.data, (e.data + o.data) / 2, atol=1e-5)
        labels = [bytes(lab).decode(errors="ignore") for lab in m.header.label[: m.header.nlabl]]
    assert any("tilt -45 45 axis y" in lab and "model tilt-series" in lab for lab in labels)
    code, _, err = run_cli("simulate", tmp_path / "bad.mrc", "--model", "tilt-series", "--tilt-step", 0)
    assert code != 0 and "tilt step must be positive" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.mrc").exists()


def test_simulate_dose_weighting_and_misalignment_reach_the_tilt_series(tmp_path, run_cli):
    """--dose-weighting and --misalign each change the tomogram (same seed, same truth); dose
    weighting without a dose is a one-line error and writes nothing."""
    common = ("--shape", 16, 32, 32, "--model", "tilt-series", "--dose", 3, "--seed", 1)
    volumes = {}
    for name, extra in (("plain", ()), ("weighted", ("--dose-weighting",)), ("shifted", ("--misalign", 1.5))):
        code, stdout, _ = run_cli("simulate", tmp_path / f"{name}.mrc", *common, *extra)
        assert code == 0, stdout
        volumes[name] = mrcfile.read(tmp_path / f"{name}.mrc")
    assert not np.allclose(volumes["weighted"], volumes["plain"]) and not np.allclose(
        volumes["shifted"], volumes["plain"]
    )
    code, _, err = run_cli("simulate", tmp_path / "bad.mrc", "--model", "tilt-series", "--dose-weighting")
    assert_one_line_error(code, err, "dose weighting needs a dose")
    assert not (tmp_path / "bad.mrc").exists()


def test_simulate_beads_reach_both_models_and_leave_the_noise_level(tmp_path, run_cli):
    """--beads adds gold to the truth of either forward model without changing the noise sigma
    (set by the specimen without them); a negative count is a one-line error that writes nothing."""
    for model in ("ideal", "tilt-series"):
        sigmas, truths = [], []
        for beads in (0, 2):
            out, truth = tmp_path / f"{model}{beads}.mrc", tmp_path / f"{model}{beads}_t.mrc"
            code, stdout, err = run_cli(
                "simulate", out, "--truth", truth, "--shape", 32, 64, 64, "--model", model, "--beads", beads,
                "--seed", 4,
            )  # fmt: skip
            assert code == 0, err
            sigmas.append(float(stdout.split("noise sigma")[1]))
            truths.append(mrcfile.read(truth))
        assert sigmas[0] == pytest.approx(sigmas[1], rel=1e-6)
        assert truths[0].max() < 1.5 < 5.0 < truths[1].max()
    code, _, err = run_cli("simulate", tmp_path / "bad.mrc", "--beads", -1)
    assert_one_line_error(code, err, "beads must be an integer from 0")
    assert not (tmp_path / "bad.mrc").exists()


def test_run_measures_the_noise_from_halves(tmp_path, run_cli, write_volume):
    """`cryogen run --halves EVEN ODD` hands the halves to chunk: mismatched ones are refused with
    a one-line error naming the half, matching ones restore."""
    obs = tmp_path / "obs.mrc"
    assert run_cli("simulate", obs, "--shape", 16, 32, 32, "--halves", "--seed", 2)[0] == 0
    even, odd = tmp_path / "obs_even.mrc", tmp_path / "obs_odd.mrc"
    small = write_volume(shape=(16, 32, 16), name="small.mrc")
    common = ("--tilt-range", -60, 60, "--steps", 2, "--tile", 16, "--overlap", 4, "--patch", 16, "--device", "cpu")
    code, _, err = run_cli("run", obs, tmp_path / "bad.mrc", "--halves", even, small, *common)
    assert code != 0 and "small.mrc" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.mrc").exists()
    code, out, err = run_cli("run", obs, tmp_path / "r.mrc", "--halves", even, odd, *common)
    assert code == 0, err
    assert (tmp_path / "r.mrc").exists()
    assert "wedge fill" in out and "consistency with the data" in out  # the truth-free measures, at once


# ----------------------------------------------------------------------------- --tilt-file


def test_chunk_with_a_tilt_file_is_chunk_with_its_range(tmp_path, run_cli, write_volume, capsys):
    """--tilt-file gives the store what --tilt-range with the file's lowest and highest angle gives."""
    import zarr

    src = write_volume(shape=(20, 30, 40))
    (tmp_path / "TS_01.tlt").write_text("\n".join(f"{a:.2f}" for a in (0, 3, -3, 6, -6, 62, -54)) + "\n")
    common = ("--tile", 16, "--overlap", 4, "--tilt-axis", "x")
    code, _, err = run_cli("chunk", src, tmp_path / "file.zarr", "--tilt-file", tmp_path / "TS_01.tlt", *common)
    assert code == 0, err
    assert f"tilt range -54 to 62 degrees from the 7 angles of {tmp_path / 'TS_01.tlt'}" in err
    code, _, err = run_cli("chunk", src, tmp_path / "range.zarr", "--tilt-range", -54, 62, *common)
    assert code == 0, err
    attrs = [zarr.open_group(str(tmp_path / f"{n}.zarr"), mode="r").attrs.asdict() for n in ("file", "range")]
    assert attrs[0] == attrs[1] and attrs[0]["cryogen"]["wedge"]["tilt_axis"] == "x"


@pytest.mark.parametrize("verb", ["chunk", "run"])
def test_tilt_range_and_tilt_file_both_or_neither(tmp_path, run_cli, write_volume, capsys, verb):
    src = write_volume()
    (tmp_path / "a.tlt").write_text("-60\n60\n")
    out = tmp_path / ("t.zarr" if verb == "chunk" else "r.mrc")
    for extra, needle in (
        (
            ("--tilt-range", -60, 60, "--tilt-file", tmp_path / "a.tlt"),
            "--tilt-file: not allowed with argument --tilt-range",
        ),
        ((), "one of the arguments --tilt-range --tilt-file is required"),
    ):
        with pytest.raises(SystemExit) as exc:
            run_cli(verb, src, out, *extra)
        assert_one_line_error(exc.value.code, capsys.readouterr().err, f"cryogen {verb}: error:", needle)
        assert only(tmp_path, src.name, "a.tlt")


def test_a_bad_tilt_file_is_one_line_naming_file_and_line(tmp_path, run_cli, write_volume):
    src = write_volume()
    bad = tmp_path / "TS_01.mrc.mdoc"
    bad.write_text("[ZValue = 0]\nTiltAngle = -60\n\n[ZValue = 1]\nTiltAngle = 120\n")
    code, _, err = run_cli("chunk", src, tmp_path / "t.zarr", "--tilt-file", bad)
    assert_one_line_error(code, err, f"{bad}: line 5: tilt angle 120 is beyond +-90 degrees")
    assert only(tmp_path, src.name, bad.name)


def test_run_and_report_take_a_tilt_file(tmp_path):
    from cryogen.cli.common import wedge_of
    from cryogen.cli.main import build_parser
    from cryogen.model.imaging import Wedge

    aln = tmp_path / "TS_01.aln"
    aln.write_text("# AreTomo Alignment\n# SEC ROT TILT\n 0 85 -50.5\n 1 85 58\n# Local Alignment\n")
    parse = build_parser().parse_args
    args = parse(["run", "a.mrc", "b.mrc", "--tilt-file", str(aln), "--tilt-axis", "x"])
    assert wedge_of(args, args.input) == Wedge(-50.5, 58, "x")
    args = parse(["report", "a.mrc", "b.mrc", "--slices", "s.png", "--spectra", "p.png", "--tilt-file", str(aln)])
    assert wedge_of(args, args.before) == Wedge(-50.5, 58, "y")


def test_chunk_warns_when_the_tilt_file_disagrees_with_the_spectrum(tmp_path, run_cli):
    """The file's range becomes a Wedge, so chunk's geometry check compares it with the missing wedge as it
    does a typed range: data tilted -45..62 with a file of -60..60 gets the warning, its true file none."""
    from cryogen.io.mrc import write_mrc
    from cryogen.model.imaging import Wedge
    from cryogen.sim.simulate import simulate

    src = tmp_path / "asym.mrc"
    write_mrc(src, simulate((32, 48, 48), Wedge(-45, 62, "y"), snr=0.3, seed=3).observation, 10.0)
    (tmp_path / "off.tlt").write_text("\n".join(str(a) for a in range(-60, 61, 3)))
    (tmp_path / "true.tlt").write_text("\n".join(str(a) for a in (*range(-45, 61, 3), 62)))
    code, _, err = run_cli("chunk", src, tmp_path / "off.zarr", "--tilt-file", tmp_path / "off.tlt", "--tile", 32)
    assert code == 0 and "warning: " in err and "not the configured -60 to 60" in err, err
    assert "check the tilt file" in err, err
    code, _, err = run_cli("chunk", src, tmp_path / "ok.zarr", "--tilt-file", tmp_path / "true.tlt", "--tile", 32)
    assert code == 0 and "warning" not in err, err
