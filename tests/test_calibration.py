"""Calibration of an uncertainty map against a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from cryogen.qc.calibration import calibration


def _case(seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((16, 32, 32))
    std = rng.uniform(0.1, 1.0, truth.shape)  # varies from voxel to voxel
    estimate = truth + std * rng.standard_normal(truth.shape)
    return estimate, std, truth


def test_a_calibrated_std_covers_68_and_95_percent_and_tracks_the_error():
    c = calibration(*_case())
    assert c["within_1sd"] == pytest.approx(0.683, abs=0.01)
    assert c["within_2sd"] == pytest.approx(0.954, abs=0.01)
    assert c["err_std_corr"] > 0.3


def test_over_and_under_confidence_show():
    estimate, std, truth = _case(1)
    assert calibration(estimate, std / 3, truth)["within_1sd"] < 0.35  # overconfident
    assert calibration(estimate, std * 3, truth)["within_2sd"] > 0.99  # underconfident
    shuffled = np.random.default_rng(2).permutation(std.ravel()).reshape(std.shape)
    assert abs(calibration(estimate, shuffled, truth)["err_std_corr"]) < 0.05  # std unrelated to error


def test_the_z_profile_is_not_counted_as_error():
    estimate, std, truth = _case(3)
    shifted = estimate + np.arange(16)[:, None, None] * 5.0  # a plane-wise offset: the kz axis only
    assert calibration(shifted, std, truth) == pytest.approx(calibration(estimate, std, truth))


def test_shape_mismatch_is_refused():
    estimate, std, truth = _case()
    with pytest.raises(ValueError, match="shape"):
        calibration(estimate, std[:8], truth)
