"""The no-truth measures of cryogen.qc.isotropy on a synthetic tube (round: ratio ~1; with a
missing wedge: well below 1), and on the real microtubule crop (../shared/real; skipped without it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cryogen.model.imaging import Wedge, apply_wedge_np, frequency_radius
from cryogen.qc.isotropy import data_consistency, filament_axis, filament_isotropy, wedge_fill

SHAPE = (48, 64, 64)
WEDGE = Wedge(-60, 60, "y")
REAL = Path(__file__).resolve().parents[2] / "shared" / "real" / "14pf_MT.tif"


def tube(angle: float = 0.0, outer: float = 12.0, wall: float = 4.0) -> np.ndarray:
    """A hollow cylinder through the centre of a (Z, Y, X) volume, its axis in the XY plane at
    `angle` degrees from y towards x; lightly blurred."""
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]].astype(np.float64)
    cz, cy, cx = ((n - 1) / 2 for n in SHAPE)
    a = np.radians(angle)
    r = np.hypot(z - cz, -(y - cy) * np.sin(a) + (x - cx) * np.cos(a))
    return ndimage.gaussian_filter(((r <= outer) & (r > outer - wall)).astype(np.float32), 0.7)


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return tube()


def test_round_tube_is_isotropic(clean):
    result = filament_isotropy(clean, radius=10.0)
    assert result.ratio == pytest.approx(1.0, abs=0.15)
    assert result.polarity == 1 and result.radius == pytest.approx(10.0, abs=1.0)
    assert result.axis_angle == pytest.approx(0.0, abs=2.0)
    assert result.centre[0] == pytest.approx((SHAPE[0] - 1) / 2, abs=1.0)


def test_missing_wedge_erases_top_and_bottom(clean):
    result = filament_isotropy(apply_wedge_np(clean, WEDGE), radius=10.0)
    assert result.ratio < 0.5 and result.side > 0


def test_rotated_tube_axis_is_estimated():
    volume = tube(angle=30.0)
    assert filament_axis(volume) == pytest.approx(30.0, abs=2.0)
    assert filament_isotropy(volume, radius=10.0).ratio == pytest.approx(1.0, abs=0.15)
    # a dark tube on a bright background reads the same
    assert filament_isotropy(-volume, radius=10.0, axis_angle=30.0).ratio == pytest.approx(1.0, abs=0.15)


def test_data_consistency(clean):
    same = data_consistency(clean, clean, WEDGE, voxel_size=10.0)
    assert same.mean == pytest.approx(1.0) and same.fsc_05 == 0.5
    # what the wedge removes is not data: a result that only adds it is fully consistent
    assert data_consistency(clean, apply_wedge_np(clean, WEDGE), WEDGE).mean == pytest.approx(1.0, abs=1e-4)
    other = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    assert data_consistency(other, clean, WEDGE).mean < 0.2


def test_data_consistency_minimum_finds_an_inverted_band():
    """A result that inverts the data's sign in one band above the mean's (0.28-0.34 cycles/voxel)
    keeps a mean of 1 but shows the band in its minimum; an untouched result's minimum is 1."""
    observed = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    same = data_consistency(observed, observed, WEDGE)
    assert same.minimum == pytest.approx(1.0)
    spectrum = np.fft.rfftn(observed)
    radius = frequency_radius(SHAPE)
    spectrum[(radius >= 0.28) & (radius <= 0.34)] *= -1
    inverted = np.fft.irfftn(spectrum, s=SHAPE).astype(np.float32)
    result = data_consistency(inverted, observed, WEDGE)
    assert result.mean == pytest.approx(1.0, abs=1e-3)
    assert result.minimum < -0.9 and 0.28 <= result.minimum_at <= 0.34


def test_wedge_fill(clean):
    assert wedge_fill(apply_wedge_np(clean, WEDGE), WEDGE) < 0.1
    assert wedge_fill(clean, WEDGE) > 0.5


def test_real_crop():
    """The input's tube is flattened: its top and bottom walls are mostly erased."""
    if not REAL.exists():
        pytest.skip(f"{REAL} is not here")
    import tifffile

    volume = tifffile.imread(REAL).astype(np.float32)
    wedge = Wedge(-66, 57, "y")
    result = filament_isotropy(volume, radius=110 / 10.52, wall=40 / 10.52)
    assert result.polarity == 1 and result.side > 0
    assert result.ratio < 0.8
    assert -25 < result.axis_angle < -10  # about -17: x falls as y grows
    assert wedge_fill(volume, wedge) < 0.2
    assert data_consistency(volume, volume, wedge).mean == pytest.approx(1.0)
