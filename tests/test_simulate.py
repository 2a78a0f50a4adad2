"""Synthetic phantoms and observations: deterministic, physically sized, slab in vacuum, noise
confined to the measured wedge at the requested SNR, exact and independent half-tomograms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cryogen.errors import CryogenError
from cryogen.model.imaging import Wedge, apply_wedge_np, frequency_radius, wedge_mask
from cryogen.sim.phantom import VACUUM, _make_slab, _membrane_profile, _place_vesicles, _plan_filaments, make_phantom
from cryogen.sim.simulate import Simulation, simulate

SHAPE = (24, 48, 48)
WEDGE = Wedge(-60, 60, "y")


@pytest.fixture(scope="module")
def sim_halves() -> Simulation:
    return simulate(SHAPE, Wedge(-54, 62, "y"), snr=0.5, seed=7, halves=True)


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = simulate(SHAPE, WEDGE, snr=1.0, seed=3)
    b = simulate(SHAPE, WEDGE, snr=1.0, seed=3)
    c = simulate(SHAPE, WEDGE, snr=1.0, seed=4)
    assert np.array_equal(a.truth, b.truth) and np.array_equal(a.observation, b.observation)
    assert a.sigma == b.sigma
    assert not np.allclose(a.truth, c.truth)
    assert not np.allclose(a.observation, c.observation)
    p1 = make_phantom(SHAPE, np.random.default_rng(11))
    p2 = make_phantom(SHAPE, np.random.default_rng(11))
    assert np.array_equal(p1, p2)


def test_dtype_and_shape():
    s = simulate((20, 28, 36), WEDGE, snr=2.0, seed=0)
    for v in (s.truth, s.observation):
        assert v.dtype == np.float32 and v.shape == (20, 28, 36)
        assert np.all(np.isfinite(v))
    assert s.even is None and s.odd is None
    assert s.wedge == WEDGE and isinstance(s.sigma, float) and s.sigma > 0
    assert make_phantom((8, 9, 10), np.random.default_rng(0)).dtype == np.float32


def test_structure_inside_a_slab_with_vacuum_above_and_below():
    truth = make_phantom((40, 64, 64), np.random.default_rng(2))
    top, bottom = truth[:1].mean(), truth[-1:].mean()
    assert abs(top - VACUUM) < 0.02 and abs(bottom - VACUUM) < 0.02
    centre = truth[16:24]
    assert centre.mean() > VACUUM + 0.4  # ice (0) plus denser objects
    assert centre.std() > 0.1 and centre.max() > 0.6  # objects, not bare ice
    # the slab spans most of z: at least 60% of the planes are mostly not vacuum
    plane_means = truth.mean(axis=(1, 2))
    assert np.mean(plane_means > VACUUM / 2) >= 0.55


@pytest.mark.parametrize("snr", [0.25, 1.0, 8.0])
def test_measured_snr_and_sigma(snr):
    s = simulate(SHAPE, WEDGE, snr=snr, seed=1)
    signal = apply_wedge_np(s.truth, WEDGE)
    noise = s.observation.astype(np.float64) - signal
    assert s.sigma == pytest.approx(noise.std(), rel=1e-6)
    assert np.var(signal) / s.sigma**2 == pytest.approx(snr, rel=0.1)


def test_observation_has_no_power_in_the_missing_wedge():
    wedge = Wedge(-45, 50, "x")
    s = simulate(SHAPE, wedge, snr=1.0, seed=5)
    mask = wedge_mask(SHAPE, wedge)
    obs = np.abs(np.fft.rfftn(s.observation.astype(np.float64))) ** 2
    truth = np.abs(np.fft.rfftn(s.truth.astype(np.float64))) ** 2
    assert obs[~mask].sum() < 1e-8 * obs.sum()
    assert truth[~mask].sum() > 1e-3 * truth.sum()  # so the check above means something


def test_halves_average_to_observation_with_independent_noise(sim_halves):
    s = sim_halves
    assert s.even.dtype == np.float32 and s.odd.dtype == np.float32
    assert np.array_equal(s.observation, (s.even + s.odd) / np.float32(2))
    signal = apply_wedge_np(s.truth, s.wedge).astype(np.float64)
    n_e, n_o = s.even - signal, s.odd - signal
    n = s.observation - signal
    assert n.std() == pytest.approx(s.sigma, rel=1e-6)
    assert np.var(n_e) == pytest.approx(2 * s.sigma**2, rel=0.05)
    assert np.var(n_o) == pytest.approx(2 * s.sigma**2, rel=0.05)
    assert abs(np.corrcoef(n_e.ravel(), n_o.ravel())[0, 1]) < 0.05
    assert abs(np.corrcoef((s.even - s.odd).ravel(), n.ravel())[0, 1]) < 0.05
    assert np.var(signal) / s.sigma**2 == pytest.approx(0.5, rel=0.1)


def _thick_fraction(v: np.ndarray) -> float:
    """Fraction of the structure (> 0.3) that survives a 2-voxel erosion: small for thin objects."""
    m = v > 0.3
    return float(ndimage.binary_erosion(m, iterations=2).sum() / m.sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_sizes_follow_the_voxel_size(seed):
    shape = (32, 64, 64)
    fine = make_phantom(shape, np.random.default_rng(seed), voxel_size=10.0)
    coarse = make_phantom(shape, np.random.default_rng(seed), voxel_size=20.0)
    # at 20 A/voxel the same kinds of object span half as many voxels: thinner, less space taken
    assert _thick_fraction(coarse) < 0.6 * _thick_fraction(fine)
    assert (coarse > 0.3).mean() < 0.85 * (fine > 0.3).mean()
    assert coarse.max() > 0.5  # still has objects


def test_membrane_is_a_bilayer_4nm_apart():
    d = np.linspace(-8, 8, 1601, dtype=np.float32)  # voxels at 10 A: nm
    p = _membrane_profile(d, 1.0)
    peaks = d[1:-1][(p[1:-1] > p[:-2]) & (p[1:-1] > p[2:]) & (p[1:-1] > 0.5)]
    assert len(peaks) == 2 and peaks[1] - peaks[0] == pytest.approx(4.0, abs=0.1)
    assert p[np.abs(d).argmin()] < 0.5 * p.max()  # a dip between the leaflets: a double line
    assert 0 < p[0] < 0.3 and p[-1] == pytest.approx(0.0, abs=1e-3)  # lumen denser than ice outside


def test_phantom_is_band_limited():
    v = make_phantom((48, 96, 96), np.random.default_rng(3))
    f = np.abs(np.fft.rfftn(v - v.mean())) ** 2
    assert f[frequency_radius(v.shape) > 0.4].sum() < 0.01 * f.sum()


@pytest.mark.parametrize("seed", [3, 4])
def test_filaments_along_the_beam_in_plane_and_oblique(seed):
    shape, vpn = (48, 96, 96), 1.0
    rng = np.random.default_rng(seed)  # the same draws, in the same order, as make_phantom
    slab = _make_slab(shape, rng)
    fils = _plan_filaments(shape, slab, _place_vesicles(shape, slab, vpn, rng), vpn, rng)
    angle = {}  # angle of the end-to-end direction from the beam (z), degrees
    for f in fils:
        d = f.pts[-1] - f.pts[0]
        angle.setdefault(f.kind, []).append(np.degrees(np.arccos(abs(d[0]) / np.linalg.norm(d))))
    both = np.array(angle["mt"] + angle["actin"])
    assert min(angle["mt"]) < 15  # a microtubule nearly along the beam
    assert np.any(both > 80) and np.any((both > 30) & (both < 75))  # in-plane and oblique ones
    mt = next(f for f in fils if f.kind == "mt" and f.orient == "z")
    assert mt.r_out == pytest.approx(12.5) and mt.r_in == pytest.approx(7.5)
    assert next(f for f in fils if f.kind == "actin").r_out == pytest.approx(3.5)
    # rendered hollow: across the middle of the beam-aligned tube, wall dense and lumen not
    v = make_phantom(shape, np.random.default_rng(seed))
    z, y, x = np.round(mt.pts[len(mt.pts) // 2]).astype(int)
    r = round((mt.r_in + mt.r_out) / 2)
    around = ((r, 0), (-r, 0), (0, r), (0, -r))
    wall = [v[z, y + dy, x + dx] for dy, dx in around if 0 <= y + dy < 96 and 0 <= x + dx < 96]
    assert v[z, y, x] < 0.3 and max(wall) > 0.7


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(shape=(16, 24)),
        dict(shape=(16, 24, 24, 24)),
        dict(shape=(7, 24, 24)),
        dict(shape=(16, 0, 24)),
        dict(shape=(16, -24, 24)),
        dict(shape=(16.5, 24, 24)),
        dict(shape="abc"),
        dict(shape=None),
        dict(snr=0.0),
        dict(snr=-1.0),
        dict(snr=float("nan")),
        dict(snr=float("inf")),
        dict(snr="1"),
        dict(voxel_size=0.0),
        dict(seed=-1),
        dict(seed=1.5),
        dict(wedge=(-60, 60)),
    ],
)
def test_invalid_inputs_raise_cryogen_error(kwargs):
    args = dict(shape=(16, 24, 24), wedge=WEDGE, snr=1.0, seed=0)
    args.update(kwargs)
    with pytest.raises(CryogenError):
        simulate(**args)


def test_make_phantom_rejects_bad_rng_and_voxel_size():
    with pytest.raises(CryogenError):
        make_phantom((16, 24, 24), 0)
    with pytest.raises(CryogenError):
        make_phantom((16, 24, 24), np.random.default_rng(0), voxel_size=float("nan"))


@pytest.mark.parametrize("voxel_size", [10.0, 40.0])
def test_tiny_shape_works_and_is_not_empty(voxel_size):
    s = simulate((16, 24, 24), WEDGE, snr=1.0, seed=0, voxel_size=voxel_size, halves=True)
    assert s.truth.shape == (16, 24, 24) and np.all(np.isfinite(s.observation))
    assert s.truth.max() > 0.5 and (s.truth > 0.3).mean() > 0.005
    assert np.all(np.isfinite(s.even)) and np.all(np.isfinite(s.odd))
