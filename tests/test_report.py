"""The report's truth-free measures (`qc.figures.truth_free_measures`): what a user of real data
judges a restoration by. A volume whose measured region is the input's and whose missing wedge
holds the truth must score full consistency and a filled wedge; the input itself an empty one;
and only the central crop is read."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from cryogen.io.mrc import write_mrc
from cryogen.model.imaging import Wedge, apply_wedge_np
from cryogen.qc.figures import truth_free_measures
from cryogen.qc.isotropy import data_consistency, wedge_fill

WEDGE = Wedge(-60, 60, "y")


def blobs(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth random structure with power at every orientation (what the wedge erases and a fill restores)."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape), 1.5).astype(np.float32)


@pytest.fixture
def pair(tmp_path):
    truth = blobs((40, 48, 48))
    before, after = tmp_path / "before.mrc", tmp_path / "after.mrc"
    write_mrc(before, apply_wedge_np(truth, WEDGE).astype(np.float32), 10.0)
    write_mrc(after, truth, 10.0)
    return before, after


def test_filled_wedge_scores_full_consistency_and_a_fill(pair):
    before, after = pair
    m = truth_free_measures(before, after, WEDGE)
    assert m["crop_zyx"] == [40, 48, 48]
    assert m["consistency"] == pytest.approx(1.0, abs=1e-6)  # A(after) is the input exactly
    assert m["consistency_min"] == pytest.approx(1.0, abs=1e-6)
    # isotropic structure fills the wedge as the measured region (1); the wedged input only by the
    # crop taper's leakage
    assert m["wedge_fill"]["before"] < 0.15 and m["wedge_fill"]["after"] == pytest.approx(1.0, abs=0.1)


def test_a_result_that_departs_from_the_data_loses_consistency(pair, tmp_path):
    before, _ = pair
    other = tmp_path / "other.mrc"
    write_mrc(other, blobs((40, 48, 48), seed=1), 10.0)  # unrelated structure
    assert truth_free_measures(before, other, WEDGE)["consistency"] < 0.2


def test_only_the_central_crop_is_measured(tmp_path):
    truth = blobs((36, 80, 72), seed=2)
    before, after = tmp_path / "b.mrc", tmp_path / "a.mrc"
    observed = apply_wedge_np(truth, WEDGE).astype(np.float32) + 0.3 * blobs(truth.shape, seed=3)
    write_mrc(before, observed, 10.0)
    write_mrc(after, truth, 10.0)
    m = truth_free_measures(before, after, WEDGE, crop=32)
    assert m["crop_zyx"] == [32, 32, 32]
    box = (slice(2, 34), slice(24, 56), slice(20, 52))  # centred: (n - 32) // 2 on each axis
    assert m["consistency"] == pytest.approx(data_consistency(truth[box], observed[box], WEDGE, 10.0).mean, abs=1e-5)
    assert m["wedge_fill"]["after"] == pytest.approx(wedge_fill(truth[box], WEDGE), abs=1e-5)


def test_report_prints_and_writes_the_measures(pair, tmp_path, run_cli):
    before, after = pair
    summary = tmp_path / "summary.json"
    code, out, err = run_cli(
        "report", before, after, "--slices", tmp_path / "s.png", "--spectra", tmp_path / "p.png",
        "--summary", summary, "--tilt-range", "-60", "60",
    )  # fmt: skip
    assert code == 0, err
    assert "wedge fill" in out and "consistency with the data 1.000" in out and "central 40 x 48 x 48" in out
    measures = json.loads(summary.read_text())["measures"]
    assert measures["consistency"] == pytest.approx(1.0, abs=1e-6) and measures["wedge_fill"]["after"] > 0.9
