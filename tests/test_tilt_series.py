"""The tilt-series forward model: an exact projector/back-projector pair, WBP that inverts complete
data, the Fourier signature of real tomograms (empty wedge, noise on discrete tilt planes with gaps
at high frequency), Wedge's sign convention, independent halves, CTF, dose, binning, seeds, errors."""

from __future__ import annotations

import numpy as np
import pytest

from cryogen.errors import CryogenError
from cryogen.model.imaging import Wedge, tilt_angle, wedge_mask
from cryogen.sim.ctf import CTF, ctf_curve, dose_attenuation
from cryogen.sim.projection import SlabProjector, wbp_filter, weighted_backprojection
from cryogen.sim.simulate import VACUUM, Simulation, make_phantom
from cryogen.sim.tilt_series import (
    Dose,
    TiltScheme,
    acquire,
    dose_weight,
    misalign,
    reconstruct,
    simulate_tilt_series,
)

SHAPE = (16, 24, 32)


def _cc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def sim_halves() -> Simulation:
    return simulate_tilt_series(SHAPE, TiltScheme(-57, 60, 3), snr=0.5, seed=5, halves=True)


@pytest.mark.parametrize("periodic", [True, False])
def test_projector_adjoint(periodic):
    rng = np.random.default_rng(0)
    proj = SlabProjector(
        12, 20, np.array([-70.0, -33.0, 0.0, 15.0, 61.0]), nu=23, centre=(5.2, 9.0, 11.7), periodic=periodic
    )
    x = rng.standard_normal((12, 7, 20)).astype(np.float32)
    y = rng.standard_normal((5, 7, 23)).astype(np.float32)
    lhs = float(np.vdot(proj.forward(x).astype(np.float64), y))
    rhs = float(np.vdot(x.astype(np.float64), proj.adjoint(y)))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)


def test_projection_of_a_uniform_slab_is_its_path_length():
    angles = np.array([-60.0, 0.0, 37.0])
    images = SlabProjector(10, 16, angles).forward(np.ones((10, 3, 16), np.float32))
    assert np.allclose(images, 10 / np.cos(np.radians(angles))[:, None, None], rtol=1e-5)


def test_full_range_wbp_reconstructs_the_phantom():
    """Complete data (180 degrees, a finite box, a detector covering its diagonal): WBP inverts."""
    nz, ny, nx = 24, 8, 32
    x = make_phantom((nz, ny, nx), np.random.default_rng(1)) - np.float32(VACUUM)
    angles = np.arange(-88.5, 89.0, 3.0)
    proj = SlabProjector(nz, nx, angles, nu=int(np.hypot(nz, nx)) + 2, periodic=False)
    recon = weighted_backprojection(proj.forward(x), proj, 3.0)
    assert _cc(recon, x) > 0.9
    assert abs(float(recon.mean() - x.mean())) < 0.05 * float(x.std())


@pytest.mark.parametrize("axis", ["y", "x"])
def test_limited_range_leaves_the_wedge_empty_on_the_side_wedge_says(axis):
    """±60 sampled, an asymmetric range: the reconstruction's power lies where `Wedge` says."""
    shape = (32, 16, 48) if axis == "y" else (32, 48, 16)
    x = make_phantom(shape, np.random.default_rng(3)) - np.float32(VACUUM)
    ts = TiltScheme(-20, 60, 3, axis=axis)
    power = np.abs(np.fft.rfftn(reconstruct(acquire(x, ts, 10.0), ts.angles(), ts.step, shape, axis=axis))) ** 2
    truth = np.abs(np.fft.rfftn(x)) ** 2
    power.flat[0] = truth.flat[0] = 0.0
    measured = wedge_mask(shape, Wedge(-20, 60, axis))
    mirrored = wedge_mask(shape, Wedge(-60, 20, axis))
    assert power[~measured].sum() < 0.05 * power.sum() < 0.05 * truth[~measured].sum()
    assert power[~mirrored].sum() > 5 * power[~measured].sum()  # a flipped sign convention would fail


def test_noise_is_on_the_tilt_planes_with_gaps_between_them_at_high_frequency():
    """Noise-only reconstruction (phantom = 0): streaky, its power on the planes of the tilts,
    none in the wedge, and gaps between the planes where they no longer overlap."""
    nz, ny, nx = 64, 4, 64
    ts = TiltScheme(-60, 60, 10)
    noise = np.random.default_rng(0).standard_normal((len(ts.angles()), ny, nx)).astype(np.float32)
    power = (np.abs(np.fft.rfftn(reconstruct(noise, ts.angles(), ts.step, (nz, ny, nx)))) ** 2).mean(axis=1)
    kz, kx = np.fft.fftfreq(nz)[:, None], np.fft.rfftfreq(nx)[None, :]
    k, angle = np.hypot(kz, kx), tilt_angle(kz, kx)
    off_plane = np.min(np.abs(angle[..., None] - ts.angles()), axis=-1)  # degrees to the nearest tilt
    on = (off_plane < 1.5) & (k > 0.05)
    between = (np.abs(off_plane - 5) < 1.5) & (np.abs(angle) < 60)
    high, low = (k > 0.3) & (k < 0.5), (k > 0.02) & (k < 0.1)
    assert power[between & high].mean() < 0.15 * power[on & high].mean()  # gaps at high |k|
    assert power[between & low].mean() > 0.4 * power[on & low].mean()  # planes overlap at low |k|
    assert power[(np.abs(angle) > 70) & (k > 0.1)].mean() < 0.01 * power[on].mean()  # empty wedge


def test_halves_are_independent_and_average_to_the_full_reconstruction(sim_halves):
    s = sim_halves
    assert np.array_equal(s.observation, (s.even + s.odd) / np.float32(2))
    ts = TiltScheme(-57, 60, 3)
    a = ts.angles()
    noise = np.random.default_rng(1).standard_normal((len(a), SHAPE[1], SHAPE[2])).astype(np.float32)
    full = reconstruct(noise, a, ts.step, SHAPE)
    even = reconstruct(noise[0::2], a[0::2], 2 * ts.step, SHAPE)
    odd = reconstruct(noise[1::2], a[1::2], 2 * ts.step, SHAPE)
    assert np.allclose((even + odd) / 2, full, atol=1e-4 * float(np.abs(full).max()))
    assert abs(_cc(even, odd)) < 0.1


def test_snr_and_sigma_as_in_the_ideal_model(sim_halves):
    s = sim_halves
    half_noise_var = float(np.var((s.even - s.odd) / 2, dtype=np.float64))  # = var of the observation's noise
    assert half_noise_var == pytest.approx(s.sigma**2, rel=0.1)
    assert float(np.var(s.observation, dtype=np.float64)) / s.sigma**2 - 1 == pytest.approx(0.5, rel=0.25)
    assert s.wedge == Wedge(-57, 60, "y")
    assert _cc(s.observation, s.truth) > 0.15


def test_ctf_phase_flipping_makes_the_transfer_positive():
    k = np.linspace(0, 0.1, 2001)  # 1/A: several Thon rings at 3 µm
    raw = ctf_curve(k, CTF(defocus_um=3.0, phase_flip=False))
    flipped = ctf_curve(k, CTF(defocus_um=3.0))
    assert raw.min() < -0.9 and raw[0] == pytest.approx(0.07)  # amplitude contrast at k = 0
    assert np.all(flipped >= 0) and np.allclose(flipped, np.abs(raw))
    assert dose_attenuation(0.0, 100.0) == 1.0 and dose_attenuation(0.05, 100.0) < dose_attenuation(0.02, 100.0) < 1


def test_dose_order_and_damage():
    sym = TiltScheme(-9, 9, 3).acquisition_rank()
    assert list(sym) == [6, 4, 2, 0, 1, 3, 5]  # taken as 0, +3, -3, +6, -6, +9, -9
    assert list(TiltScheme(-9, 9, 3, order="bidirectional").acquisition_rank()) == [6, 5, 4, 0, 1, 2, 3]
    assert list(TiltScheme(-9, 9, 3, order="sequential").acquisition_rank()) == list(range(7))
    x = make_phantom(SHAPE, np.random.default_rng(2), 5.0) - np.float32(VACUUM)
    ts = TiltScheme(-60, 60, 30, order="sequential")
    clean = acquire(x, ts, 5.0)
    damaged = acquire(x, ts, 5.0, dose=Dose(electrons_per_tilt=30.0))

    def high(img: np.ndarray) -> float:  # power beyond a quarter of a cycle per pixel, edges tapered
        k = np.hypot(np.fft.fftfreq(img.shape[0])[:, None], np.fft.rfftfreq(img.shape[1])[None, :])
        taper = np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
        return float((np.abs(np.fft.rfft2(taper * (img - img.mean()))) ** 2)[k > 0.25].sum())

    kept = [high(damaged[i]) / high(clean[i]) for i in range(len(ts.angles()))]
    assert kept[0] < 0.9 and np.all(np.diff(kept) < 0) and kept[-1] < 0.05  # later in the acquisition, more damage
    factor = Dose(thickness_mfp=0.5).noise_factor(ts)
    assert factor[2] == 1.0 and factor[0] == factor[-1] > 1.2


def test_effects_switch_alone_and_binning_returns_the_requested_shape():
    base = simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 3)
    for kw in ({"ctf": CTF()}, {"dose": Dose()}, {"recon_filter": "sirt"}, {"binning": 2}):
        s = simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 3, **kw)
        for v in (s.truth, s.observation):
            assert v.shape == SHAPE and v.dtype == np.float32 and np.all(np.isfinite(v))
        assert not np.allclose(s.observation, base.observation)
        assert _cc(s.observation, s.truth) > 0.05
    assert np.array_equal(simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 3, ctf=CTF()).truth, base.truth)


def test_dose_weighting_weighs_the_late_images_down_at_high_frequency_only():
    """Each image keeps its low frequencies and loses high ones by its accumulated exposure: the
    first image taken (0 degrees) least, the last (the highest tilt, dose-symmetric) most."""
    ts = TiltScheme(-60, 60, 30)
    images = np.random.default_rng(0).standard_normal((len(ts.angles()), 64, 64)).astype(np.float32)
    weighted = dose_weight(images, ts, Dose(electrons_per_tilt=20.0), 5.0)
    k = np.hypot(np.fft.fftfreq(64)[:, None], np.fft.rfftfreq(64)[None, :])

    def kept(i: int, band: np.ndarray) -> float:
        return float(
            (np.abs(np.fft.rfft2(weighted[i])) ** 2)[band].sum() / (np.abs(np.fft.rfft2(images[i])) ** 2)[band].sum()
        )

    high, low = k > 0.3, (k > 0) & (k < 0.05)
    order = np.argsort(ts.acquisition_rank())  # tilts in the order they were taken
    high_kept = [kept(i, high) for i in order]
    assert np.all(np.diff(high_kept) < 0) and high_kept[-1] < 0.5 * high_kept[0]
    assert min(kept(i, low) for i in order) > 0.8


def test_misalignment_shifts_each_image_by_its_own_amount():
    """A Fourier shift: every image keeps its power spectrum, moves by a different amount, and the
    shifts' spread is the rms asked for."""
    images = np.zeros((40, 32, 32), np.float32)
    images[:, 16, 16] = 1.0
    moved = misalign(images, 2.0, np.random.default_rng(1))
    inner = (slice(None), np.fft.fftfreq(32) != -0.5, slice(0, -1))  # a sub-pixel shift leaves Nyquist real
    assert np.allclose(np.abs(np.fft.rfft2(moved))[inner], np.abs(np.fft.rfft2(images))[inner], atol=1e-5)
    yy, xx = np.mgrid[:32, :32]
    centroids = np.stack([[(m * yy).sum() / m.sum(), (m * xx).sum() / m.sum()] for m in moved]) - 16.0
    assert 1.4 < centroids.std() < 2.6 and len(np.unique(np.round(centroids[:, 0], 3))) == 40
    assert np.array_equal(misalign(images, 0.0, np.random.default_rng(1)), images)


def test_dose_weighting_misalignment_and_a_given_phantom_switch_alone():
    base = simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 3, dose=Dose())
    for kw in ({"dose_weighting": True}, {"misalignment": 1.0}):
        s = simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 3, dose=Dose(), **kw)
        assert np.array_equal(s.truth, base.truth) and not np.allclose(s.observation, base.observation)
        assert _cc(s.observation, s.truth) > 0.05
    phantom = base.truth[::-1].copy()  # any truth of the shape
    given = simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 3, phantom=phantom)
    assert np.array_equal(given.truth, phantom) and _cc(given.observation, phantom) > 0.1
    with pytest.raises(CryogenError, match="dose weighting needs a dose"):
        simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 3, dose_weighting=True)
    with pytest.raises(CryogenError, match="misalignment"):
        simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 3, misalignment=-1.0)
    with pytest.raises(CryogenError, match="given phantom"):
        simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 3, phantom=phantom[:-1])


def test_beads_are_gold_spheres_at_the_ice_surfaces_that_leave_the_rest_and_the_noise_level():
    """Fiducials: N separate ~10 nm spheres of gold density just inside the slab's top or bottom
    surface; the rest of the phantom is the one without them; the noise level is the bead-free
    specimen's, so beads alone change nothing else; a given phantom takes no beads."""
    from scipy.ndimage import label

    from cryogen.sim.phantom import GOLD

    shape = (48, 96, 96)
    bare = simulate_tilt_series(shape, TiltScheme(), 0.5, 7)
    gold = simulate_tilt_series(shape, TiltScheme(), 0.5, 7, beads=3)
    labels, count = label(gold.truth > GOLD / 2)
    assert count == 3
    sizes = np.bincount(labels.ravel())[1:]
    assert np.all(np.abs(sizes - 4 / 3 * np.pi * 5**3) < 0.25 * 4 / 3 * np.pi * 5**3)  # 10 nm at 10 A per voxel
    far = np.ones(shape, bool)
    for k in range(1, 4):
        z, y, x = (c.mean() for c in np.nonzero(labels == k))
        zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
        far &= (zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 > 9**2
        column = bare.truth[:, round(y), round(x)]
        ice = np.nonzero(column > VACUUM / 2)[0]  # the slab in the bead's column
        assert min(abs(z - ice[0]), abs(z - ice[-1])) < 7  # at a surface, not in the middle
    np.testing.assert_allclose(gold.truth[far], bare.truth[far], atol=1e-4)  # the band limit's tail
    assert gold.sigma == pytest.approx(bare.sigma, rel=1e-6)
    assert not np.allclose(gold.observation, bare.observation)
    with pytest.raises(CryogenError, match="no beads"):
        simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 3, phantom=bare.truth[:16, :24, :32].copy(), beads=1)
    with pytest.raises(CryogenError, match="beads must be an integer"):
        make_phantom(SHAPE, np.random.default_rng(0), beads=-2)


def test_sirt_like_filter_is_a_softened_ramp():
    ramp = wbp_filter(128)
    sirt5, sirt500 = wbp_filter(128, "sirt", 16, 5), wbp_filter(128, "sirt", 16, 500)
    assert np.all(sirt5 <= ramp + 1e-12) and np.all(sirt5 <= sirt500 + 1e-12)
    assert sirt5[-1] < 0.5 * ramp[-1] and sirt500[-1] > 0.95 * ramp[-1]


def test_seeds_reproduce_bitwise():
    kw = {"ctf": CTF(), "dose": Dose(thickness_mfp=0.3), "halves": True}
    a = simulate_tilt_series(SHAPE, TiltScheme(), 0.5, 11, **kw)
    b = simulate_tilt_series(SHAPE, TiltScheme(), 0.5, 11, **kw)
    c = simulate_tilt_series(SHAPE, TiltScheme(), 0.5, 12, **kw)
    for name in ("truth", "observation", "even", "odd"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.sigma == b.sigma and not np.allclose(a.observation, c.observation)


@pytest.mark.parametrize(
    "make",
    [
        lambda: TiltScheme(step=0),
        lambda: TiltScheme(step=-3),
        lambda: TiltScheme(-95, 60),
        lambda: TiltScheme(-60, 90),
        lambda: TiltScheme(10, 11, 3),
        lambda: TiltScheme(order="random"),
        lambda: TiltScheme(axis="z"),
        lambda: TiltScheme(tilt_min=float("nan")),
        lambda: CTF(defocus_um=-1),
        lambda: CTF(amplitude_contrast=1.0),
        lambda: Dose(electrons_per_tilt=0),
        lambda: simulate_tilt_series((4, 32, 32), TiltScheme(), 1.0, 0),
        lambda: simulate_tilt_series(SHAPE, TiltScheme(), 0.0, 0),
        lambda: simulate_tilt_series(SHAPE, TiltScheme(), 1.0, -1),
        lambda: simulate_tilt_series(SHAPE, Wedge(), 1.0, 0),
        lambda: simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 0, binning=0),
        lambda: simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 0, recon_filter="fourier"),
        lambda: simulate_tilt_series(SHAPE, TiltScheme(), 1.0, 0, sirt_iterations=0),
    ],
)
def test_bad_parameters_raise_one_line_errors(make):
    with pytest.raises(CryogenError) as err:
        make()
    assert "\n" not in str(err.value) and str(err.value)
