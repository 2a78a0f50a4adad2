"""The real-data benchmark's parts that need no training run: D's separation read off the
training curves, TIFF input, and the tube figure (the run itself is a benchmark, not a test)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from test_isotropy import tube

from cryogen.bench.real import d_separation, plot_tube_sections, read_volume
from cryogen.errors import CryogenError
from cryogen.qc.isotropy import filament_isotropy


def _curves(path, accuracies):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss_d", "d_acc_real", "d_acc_fake"])
        w.writeheader()
        for step, (real, fake) in enumerate(accuracies, start=1):
            w.writerow({"step": step, "loss_d": 0.1, "d_acc_real": real, "d_acc_fake": fake})
    return path


def test_d_separation_counts_perfect_steps_after_300(tmp_path):
    # the first 300 steps are perfect but do not count; after them, every other step is
    acc = [(1.0, 1.0)] * 300 + [(1.0, 1.0), (1.0, 0.75)] * 50
    fraction, steps = d_separation(_curves(tmp_path / "c.csv", acc))
    assert fraction == pytest.approx(0.5) and steps == 400
    assert d_separation(_curves(tmp_path / "short.csv", acc[:200])) == (None, 200)


def test_read_volume_tiff_and_errors(tmp_path):
    import tifffile

    data = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    tifffile.imwrite(tmp_path / "v.tif", data, photometric="minisblack")
    volume, voxel = read_volume(tmp_path / "v.tif")
    assert volume.dtype == np.float32 and np.array_equal(volume, data) and voxel is None
    with pytest.raises(CryogenError, match="no such file"):
        read_volume(tmp_path / "missing.tif")


def test_tube_figure(tmp_path):
    volume = tube()
    result = filament_isotropy(volume, radius=10.0)
    plot_tube_sections([("a", result), ("b", result)], 4.0, tmp_path / "tube.png")
    assert (tmp_path / "tube.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def noisy_tube_options(tmp_path, **options):
    """RealOptions for a short CPU run on the test tube with noise, written to tmp_path."""
    from cryogen.bench.real import RealOptions
    from cryogen.io.mrc import write_mrc

    rng = np.random.default_rng(0)
    write_mrc(tmp_path / "tube.mrc", tube() + 0.3 * rng.standard_normal(tube().shape).astype(np.float32), 11.0)
    return RealOptions(
        input=tmp_path / "tube.mrc",
        workdir=tmp_path / "work",
        voxel_size=11.0,
        tilt_range=(-60.0, 60.0),
        tile=32,
        overlap=8,
        device="cpu",
        **options,
    )


@pytest.mark.integration
def test_real_benchmark_learning_curve_measures_every_kept_prior(tmp_path):
    """A short run keeps its prior every 2 steps and the learning curve restores and measures
    each: one row per kept prior, in step order, finite, with its CSV and PNG."""
    from cryogen.bench.real import run_real_benchmark

    rows = run_real_benchmark(noisy_tube_options(tmp_path, steps=4, curve_every=2))
    assert rows[1]["train_steps"] == 4
    with open(tmp_path / "work" / "learning_curve.csv", newline="") as f:
        curve = list(csv.DictReader(f))
    assert [int(r["step"]) for r in curve] == [2, 4]
    assert all(np.isfinite(float(r[k])) for r in curve for k in ("tube_ratio", "wedge_fill", "consistency"))
    assert (tmp_path / "work" / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "work" / "run").exists()  # the kept priors and tiles are cleaned up


def test_real_benchmark_with_a_defocus_measures_the_deconvolved_input_too(tmp_path):
    """With a CTF deconvolution the rows are the input, the deconvolved input (what was restored)
    and the result, whose consistency and training steps are its own."""
    from cryogen.bench.real import run_real_benchmark
    from cryogen.deconvolve import Deconvolution
    from cryogen.sim.ctf import CTF

    rows = run_real_benchmark(noisy_tube_options(tmp_path, steps=2, deconvolution=Deconvolution(CTF(defocus_um=3.0))))
    assert [r["volume"] for r in rows] == ["input", "input, deconvolved", "restored"]
    assert rows[1]["consistency"] == 1.0 and rows[0]["consistency"] is None
    assert rows[2]["train_steps"] == 2 and 0 < rows[2]["consistency"] <= 1
    assert -1 <= rows[2]["consistency_min"] <= rows[2]["consistency"]
    assert rows[1]["tube_top_bottom"] != pytest.approx(rows[0]["tube_top_bottom"])
    assert (tmp_path / "work" / "input_deconvolved.mrc").exists()
    # the table's measures are the whole volume's (the figure's title shows the same), against what was restored
    from cryogen.io.mrc import read_mrc
    from cryogen.model.imaging import Wedge
    from cryogen.qc.isotropy import data_consistency, wedge_fill

    restored, info = read_mrc(tmp_path / "work" / "restored.mrc")
    deconvolved = read_mrc(tmp_path / "work" / "input_deconvolved.mrc")[0]
    wedge = Wedge(-60.0, 60.0)
    assert rows[2]["wedge_fill"] == pytest.approx(wedge_fill(restored, wedge), rel=1e-5)
    assert rows[1]["wedge_fill"] == pytest.approx(wedge_fill(deconvolved, wedge), rel=1e-5)
    assert rows[2]["consistency"] == pytest.approx(
        data_consistency(restored, deconvolved, wedge, info.isotropic_voxel_size).mean, rel=1e-5
    )


def test_real_benchmark_keeps_its_run_when_asked(tmp_path):
    """With keep_run the tiles and the prior stay in WORKDIR/run, and restoring them again gives the
    benchmark's own result (by default the folder is removed: the learning-curve test above)."""
    from cryogen.bench.real import run_real_benchmark
    from cryogen.io.mrc import read_mrc
    from cryogen.restore.reconstruct import reconstruct
    from cryogen.tiling import stitch

    options = noisy_tube_options(tmp_path, steps=2, keep_run=True)
    run_real_benchmark(options)
    run = tmp_path / "work" / "run"
    assert (run / "prior.pt").exists() and (run / "tiles.zarr").exists()
    again = tmp_path / "again.zarr"
    reconstruct(run / "tiles.zarr", run / "prior.pt", again, device="cpu", seed=options.seed, progress=False)
    stitch(again, tmp_path / "again.mrc", progress=False)
    restored, _ = read_mrc(tmp_path / "work" / "restored.mrc")
    np.testing.assert_allclose(read_mrc(tmp_path / "again.mrc")[0], restored, rtol=1e-5, atol=1e-5)
