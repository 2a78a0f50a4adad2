"""The noise model: estimation from halves and from data alone on synthetic volumes with known
noise, its spectrum, sampling for other shapes, serialisation, diagnostics and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from cryogen.errors import CryogenError
from cryogen.model.imaging import Wedge, apply_wedge_np, frequency_radius, observe, wedge_mask
from cryogen.model.noise import NoiseModel
from cryogen.model.noise_estimate import estimate_from_data, estimate_from_halves
from cryogen.qc.warnings import check_noise

SHAPE = (48, 48, 48)
WEDGES = [Wedge(-60, 60, "y"), Wedge(-60, 60, "x"), Wedge(-50, 65, "y"), Wedge(-50, 65, "x")]


def _signal(shape, wedge, seed, std=1.0):
    """A smooth random volume (little power above 0.4 cycles/voxel) seen through the wedge."""
    s = gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 3.0)
    s *= std / s.std()
    return apply_wedge_np(s.astype(np.float32), wedge)


def _white(shape, seed, std=1.0):
    return (std * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _filtered(x, gain):
    """x filtered by a real radial gain gain(|k|)."""
    spec = np.fft.rfftn(x) * gain(frequency_radius(x.shape))
    return np.fft.irfftn(spec, s=x.shape, axes=(0, 1, 2)).astype(np.float32)


def _halves(shape, wedge, confined, seed, noise_std=1.0, signal_std=1.0, gain=None):
    """Even/odd halves of signal + noise whose average has noise of std `noise_std` (before the
    wedge). Returns even, odd, and the noise of the observation (even + odd) / 2."""
    s = _signal(shape, wedge, seed, signal_std) if signal_std else np.zeros(shape, np.float32)
    n = []
    for k in (1, 2):
        nk = _white(shape, seed + 100 * k, noise_std * np.sqrt(2.0))
        if gain is not None:
            nk = _filtered(nk, gain)
        if confined:
            nk = apply_wedge_np(nk, wedge)
        n.append(nk)
    return s + n[0], s + n[1], (n[0] + n[1]) / 2


@pytest.mark.parametrize("wedge", WEDGES, ids=lambda w: f"{w.tilt_min:g}_{w.tilt_max:g}_{w.tilt_axis}")
@pytest.mark.parametrize("confined", [True, False], ids=["wedge-noise", "white-noise"])
def test_sigma_from_halves_and_from_data(wedge, confined):
    even, odd, noise = _halves(SHAPE, wedge, confined, seed=3)
    obs = (even + odd) / 2
    true = float(noise.std())
    halves = estimate_from_halves(even, odd, wedge)
    data = estimate_from_data(obs, wedge)
    assert halves.method == "halves" and data.method == "data"
    assert halves.sigma == pytest.approx(true, rel=0.10)
    assert data.sigma == pytest.approx(true, rel=0.10)
    for model in (halves, data):
        # the PSD is consistent with sigma on the grid it was estimated on (Parseval)
        assert model.variance(SHAPE, wedge) == pytest.approx(model.sigma**2, rel=0.05)
        level = float(np.median(model.measured_psd))
        if confined:
            assert model.missing_psd < 1e-3 * level
            assert not any("missing wedge" in w for w in check_noise(model))
        else:
            assert model.missing_psd == pytest.approx(level, rel=0.10)
            assert any("noise inside the missing wedge" in w for w in check_noise(model))
        assert not any("signal" in w for w in check_noise(model))


def test_halves_reproduce_a_coloured_spectrum_per_shell():
    wedge = Wedge(-50, 65, "y")
    shape = (64, 64, 64)

    def gain(k):
        return 1.0 / np.sqrt(1.0 + (k / 0.2) ** 2)

    even, odd, noise = _halves(shape, wedge, True, seed=5, noise_std=1.0, gain=gain)
    model = estimate_from_halves(even, odd, wedge)
    f = np.asarray(model.shell_freqs)
    # each half carries 2x the observation's white variance; d = (even - odd) / 2 carries 1x
    expected = gain(f) ** 2
    mid = (f >= 0.15) & (f <= 0.45)
    assert mid.sum() >= 8
    np.testing.assert_allclose(np.asarray(model.measured_psd)[mid], expected[mid], rtol=0.15)
    # the spectrum is far from flat, and the model says so
    assert model.measured_psd[2] > 3 * model.measured_psd[16]
    assert model.sigma == pytest.approx(float(noise.std()), rel=0.10)
    # a flat-spectrum assumption would misplace this power; the PSD-implied variance does not
    assert model.variance(shape, wedge) == pytest.approx(float(noise.var()), rel=0.05)


def test_empty_shells_are_interpolated():
    """On a 16^3 grid (spacing 1/16) many of 64 shells hold no coefficient: they get values
    interpolated between their non-empty neighbours (constant beyond the ends), never 0."""
    wedge = Wedge(-60, 60, "y")
    shape = (16, 16, 16)
    even, odd, noise = _halves(shape, wedge, False, seed=4, signal_std=0.0)
    model = estimate_from_halves(even, odd, wedge, n_shells=64)
    psd = np.asarray(model.measured_psd)
    radius = frequency_radius(shape)
    selected = wedge_mask(shape, wedge) & (radius > 0)
    shell = np.minimum((radius[selected] / (np.sqrt(3) / 2) * 64).astype(int), 63)
    full = np.bincount(shell, minlength=64) > 0
    assert (~full).sum() >= 5 and not full[0]
    idx = np.flatnonzero(full)
    for i in np.flatnonzero(~full):
        lo, hi = idx[idx < i], idx[idx > i]
        neighbours = [psd[lo[-1]]] if len(lo) else []
        neighbours += [psd[hi[0]]] if len(hi) else []
        assert min(neighbours) - 1e-12 <= psd[i] <= max(neighbours) + 1e-12
    assert psd.min() > 0
    assert model.variance(shape, wedge) == pytest.approx(float(noise.var()), rel=0.10)


def test_data_alone_follows_the_noise_into_the_corners():
    """Beyond the noise band (|k| > 0.5, half the coefficients of a cube) the data-alone model
    takes the data's own level shell by shell: noise that falls there (as in real tomograms,
    measured on a crop) is followed, and white noise stays flat."""
    wedge = Wedge(-60, 60, "y")
    shape = (64, 64, 64)

    def gain(k):  # flat up to 0.5 cycles/voxel, then falling to a quarter of the power
        return np.where(k <= 0.5, 1.0, np.sqrt(np.clip(1.0 - 2.0 * (k - 0.5), 0.25, 1.0)))

    signal = _signal(shape, wedge, 11)
    for g, expect in ((gain, gain), (None, lambda k: np.ones_like(k))):
        noise = _white(shape, 12)
        noise = apply_wedge_np(_filtered(noise, g) if g is not None else noise, wedge)
        model = estimate_from_data(signal + noise, wedge)
        f = np.asarray(model.shell_freqs)
        corner = (f > 0.55) & (f < 0.75)  # beyond, shells hold few coefficients and borrow from their neighbours
        np.testing.assert_allclose(np.asarray(model.measured_psd)[corner], expect(f[corner]) ** 2, rtol=0.12)
        assert model.variance(shape, wedge) == pytest.approx(float(noise.var()), rel=0.06)
        assert model.sigma**2 == pytest.approx(model.variance(shape, wedge))


def test_data_alone_measures_the_mean_power_of_noise_that_lies_on_tilt_planes():
    """A back-projected tomogram's noise lies on its tilts' central planes, which a crop resolves
    at high |k|: a mixture of strong and weak coefficients. The model's level is their mean power
    (what a training patch, where the planes blur together, sees), not the median / ln 2 of the
    mixture (0.73 x the mean on a tilt-series phantom; 0.50 x here)."""
    wedge = Wedge(-60, 60, "y")
    shape = (64, 64, 64)
    rng = np.random.default_rng(31)
    spec = np.fft.rfftn(_white(shape, 32))
    on_plane = rng.random(spec.shape) < 1 / 3
    spec *= np.sqrt(np.where(on_plane, 2.4, 0.3))  # mean power 1, in a third of the coefficients 8x the rest
    noise = apply_wedge_np(np.fft.irfftn(spec, s=shape, axes=(0, 1, 2)).astype(np.float32), wedge)
    model = estimate_from_data(_signal(shape, wedge, 33) + noise, wedge)
    f = np.asarray(model.shell_freqs)
    band = (f >= 0.4) & (f <= 0.5)
    np.testing.assert_allclose(np.asarray(model.measured_psd)[band], 1.0, rtol=0.08)
    assert model.variance(shape, wedge) == pytest.approx(float(noise.var()), rel=0.08)


def test_data_alone_underestimates_low_passed_noise_and_warns():
    """The documented limitation: noise low-passed near Nyquist (binned data) fools the
    flat-spectrum assumption; check_noise says to use halves."""
    wedge = Wedge(-60, 60, "y")
    noise = apply_wedge_np(_filtered(_white(SHAPE, 7), lambda k: np.exp(-((k / 0.3) ** 2))), wedge)
    obs = _signal(SHAPE, wedge, 8, std=float(noise.std())) + noise
    model = estimate_from_data(obs, wedge)
    assert model.sigma < 0.7 * float(noise.std())
    assert any("halves" in w for w in check_noise(model))


def test_sample_matches_the_model_on_another_shape():
    wedge = Wedge(-50, 65, "x")
    even, odd, _ = _halves(SHAPE, wedge, True, seed=11, noise_std=2.0)
    model = estimate_from_halves(even, odd, wedge)
    shape = (3, 40, 64, 36)  # a batch of tiles of a different (non-cubic) shape
    n = model.sample(shape, wedge, generator=torch.Generator().manual_seed(0))
    assert n.shape == shape and n.dtype == torch.float32
    var = float(n.double().var())
    assert var == pytest.approx(model.variance(shape, wedge), rel=0.03)
    # wedge-confined white noise of std 2 keeps a fraction f_measured of its variance
    frac = wedge_mask(shape[-3:], wedge, rfft=False).mean()
    assert var == pytest.approx(4.0 * frac, rel=0.08)
    assert model.measured_variance(shape, wedge) == pytest.approx(4.0, rel=0.08)
    # no power inside the missing wedge
    power = torch.fft.rfftn(n.double(), dim=(-3, -2, -1)).abs() ** 2
    mask = torch.from_numpy(wedge_mask(shape[-3:], wedge))
    assert float(power[..., ~mask].max()) < 1e-8 * float(power[..., mask].mean())
    # the mean PSD over the full grid is the variance (Parseval convention)
    psd = model.psd(shape, wedge)
    w = np.full(psd.shape[-1], 2.0)
    w[0] = 1.0
    w[-1] = 1.0  # even nx: the Nyquist column stands for itself
    assert (psd * w).sum() / np.prod(shape[-3:]) == pytest.approx(model.variance(shape, wedge), rel=1e-9)


def test_filtered_by_a_constant_gain_is_scaled_and_a_bad_gain_is_refused():
    """A filter of flat power gain g^2 is the model of g * n; a ramp raises each shell by its own
    gain, also on a flat model's two points (resampled to 32 shells first, or the gain would be
    averaged over half of |k|); a negative or wrongly shaped gain stops with a CryogenError."""
    shape, wedge = (32, 32, 32), Wedge(-60, 60, "y")
    model = NoiseModel.flat(2.0, 0.5, shape, wedge)
    four = model.filtered(lambda k: np.full(k.shape, 4.0), shape, wedge)
    np.testing.assert_allclose(four.psd(shape, wedge), model.scaled(2.0).psd(shape, wedge), rtol=1e-9)
    assert four.sigma == pytest.approx(2 * model.sigma, rel=1e-6)
    ramp = model.filtered(lambda k: k, shape, wedge)
    psd = np.asarray(ramp.measured_psd)
    assert np.all(np.diff(psd[1:]) > 0) and psd[4] == pytest.approx(2.0 * ramp.shell_freqs[4], rel=0.1)
    for bad in (lambda k: -k, lambda k: np.ones(3)):
        with pytest.raises(CryogenError, match="power gain"):
            model.filtered(bad, shape, wedge)


def test_sample_white_and_flat_models():
    wedge = Wedge(-60, 60, "y")
    white = NoiseModel.white(0.5)
    n = white.sample((32, 32, 32), wedge, generator=torch.Generator().manual_seed(1))
    assert float(n.var()) == pytest.approx(0.25, rel=0.03)
    flat = NoiseModel.flat(1.0, 0.0, (32, 32, 32), wedge)
    frac = wedge_mask((32, 32, 32), wedge, rfft=False).mean()
    assert flat.sigma == pytest.approx(np.sqrt(frac), rel=1e-9)
    assert flat.variance((32, 32, 32), wedge) == pytest.approx(frac, rel=1e-9)


def test_sample_is_reproducible_with_a_seeded_generator():
    wedge = Wedge(-54, 62, "y")
    model = NoiseModel.flat(1.0, 0.1, (16, 16, 16), wedge)
    a = model.sample((2, 16, 20, 24), wedge, generator=torch.Generator().manual_seed(42))
    b = model.sample((2, 16, 20, 24), wedge, generator=torch.Generator().manual_seed(42))
    c = model.sample((2, 16, 20, 24), wedge, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # observe() draws through the same path
    x = torch.zeros(2, 16, 20, 24)
    y1 = observe(x, wedge, noise=model, generator=torch.Generator().manual_seed(7))
    y2 = observe(x, wedge, noise=model, generator=torch.Generator().manual_seed(7))
    assert torch.equal(y1, y2) and float(y1.std()) > 0


def test_dict_round_trip_through_json():
    wedge = Wedge(-60, 60, "x")
    even, odd, _ = _halves((24, 24, 24), wedge, True, seed=2)
    for model in (
        estimate_from_halves(even, odd, wedge, n_shells=12),
        estimate_from_data((even + odd) / 2, wedge),
        NoiseModel.white(2.0),
    ):
        d = json.loads(json.dumps(model.to_dict()))
        back = NoiseModel.from_dict(d)
        assert back == model
        assert hash(back) == hash(model)
    # the same model in other units
    model = estimate_from_halves(even, odd, wedge, n_shells=12)
    scaled = model.scaled(0.5)
    assert scaled.sigma == pytest.approx(model.sigma / 2)
    assert scaled.variance((24, 24, 24), wedge) == pytest.approx(model.variance((24, 24, 24), wedge) / 4)
    assert check_noise(scaled) == check_noise(model)


def test_dicts_of_older_stores_and_checkpoints_still_load():
    """The dict form is what tile stores and checkpoints hold: one written before the diagnostics
    existed, or with a key this version does not know, loads; a full one comes back unchanged."""
    full = {
        "sigma": 0.5,
        "shell_freqs": [0.1, 0.4, 0.8],
        "measured_psd": [0.3, 0.25, 0.2],
        "missing_psd": 0.0,
        "method": "data",
        "data_variance": 1.5,
        "data_psd": [2.0, 0.5, 0.21],
        "data_missing_psd": [0.4, 0.1, 0.0],
    }
    assert NoiseModel.from_dict(json.loads(json.dumps(full))).to_dict() == full
    old = {k: full[k] for k in ("sigma", "shell_freqs", "measured_psd", "missing_psd", "method")}
    model = NoiseModel.from_dict({**old, "retired_key": 1})
    assert model.to_dict() == {**old, "data_variance": None, "data_psd": [], "data_missing_psd": []}


def test_check_noise_flags_missing_signal_and_a_wrong_tilt_axis():
    wedge = Wedge(-60, 60, "y")
    even, odd, _ = _halves(SHAPE, wedge, True, seed=21, signal_std=0.0)
    for model in (estimate_from_halves(even, odd, wedge), estimate_from_data((even + odd) / 2, wedge)):
        assert any("no signal" in w for w in check_noise(model))
    even, odd, _ = _halves(SHAPE, wedge, True, seed=22, signal_std=2.0)
    assert check_noise(estimate_from_halves(even, odd, wedge)) == []
    assert check_noise(estimate_from_data((even + odd) / 2, wedge)) == []
    wrong = Wedge(-60, 60, "x")
    for model in (estimate_from_halves(even, odd, wrong), estimate_from_data((even + odd) / 2, wrong)):
        warnings = check_noise(model)
        assert any("tilt axis" in w for w in warnings)


def test_bad_input_raises_cryogen_error():
    wedge = Wedge()
    vol = _white((16, 16, 16), 0)
    with pytest.raises(CryogenError, match="constant"):
        estimate_from_data(np.full((16, 16, 16), 3.0, np.float32), wedge)
    nan = vol.copy()
    nan[1, 2, 3] = np.nan
    inf = vol.copy()
    inf[0, 0, 0] = np.inf
    for bad in (nan, inf):
        with pytest.raises(CryogenError, match="NaN or Inf"):
            estimate_from_data(bad, wedge)
        with pytest.raises(CryogenError, match="NaN or Inf"):
            estimate_from_halves(bad, vol, wedge)
    with pytest.raises(CryogenError, match="3-D"):
        estimate_from_data(vol[0], wedge)
    with pytest.raises(CryogenError, match="3-D"):
        estimate_from_halves(vol[None], vol[None], wedge)
    with pytest.raises(CryogenError, match="different shapes"):
        estimate_from_halves(vol, vol[:, :, :15], wedge)
    with pytest.raises(CryogenError, match="identical"):
        estimate_from_halves(vol, vol.copy(), wedge)
    with pytest.raises(CryogenError, match="too small"):
        estimate_from_data(_white((4, 4, 4), 1), wedge)
    with pytest.raises(CryogenError, match="n_shells"):
        estimate_from_halves(vol, _white((16, 16, 16), 1), wedge, n_shells=0)
    with pytest.raises(CryogenError):
        NoiseModel.from_dict({"sigma": 1.0})
    with pytest.raises(CryogenError):
        NoiseModel(sigma=-1.0, shell_freqs=(0.1,), measured_psd=(1.0,), missing_psd=0.0, method="data")
    with pytest.raises(CryogenError):
        NoiseModel(sigma=1.0, shell_freqs=(0.1, 0.2), measured_psd=(1.0,), missing_psd=0.0, method="data")
    with pytest.raises(CryogenError):
        NoiseModel(sigma=1.0, shell_freqs=(0.1,), measured_psd=(float("nan"),), missing_psd=0.0, method="data")
    with pytest.raises(CryogenError):
        NoiseModel.white(1.0).sample((16, 16), wedge)


def test_chunk_stores_the_noise_model_from_halves_or_from_the_data(tmp_path):
    """`cryogen chunk` records the noise model in the store: measured from the even/odd halves
    when given (within 10 % of the simulated sigma), else estimated from the data alone."""
    from cryogen.cli.main import main
    from cryogen.io.store import open_store

    obs = tmp_path / "obs.mrc"
    assert main(["simulate", str(obs), "--shape", "48", "64", "64", "--snr", "0.5", "--seed", "3", "--halves"]) == 0
    even, odd = tmp_path / "obs_even.mrc", tmp_path / "obs_odd.mrc"
    from cryogen.io.mrc import read_mrc

    e, _ = read_mrc(even)
    o, _ = read_mrc(odd)
    true_sigma = float(np.std((e - o) / 2))
    opts = ["--tile", "32", "--overlap", "8", "--tilt-range", "-60", "60"]
    assert main(["chunk", str(obs), str(tmp_path / "h.zarr"), *opts, "--halves", str(even), str(odd)]) == 0
    assert main(["chunk", str(obs), str(tmp_path / "d.zarr"), *opts]) == 0
    _, mh = open_store(tmp_path / "h.zarr")
    _, md = open_store(tmp_path / "d.zarr")
    assert mh.noise["method"] == "halves" and md.noise["method"] == "data"
    assert mh.noise["sigma"] == pytest.approx(true_sigma, rel=0.1)
    assert md.noise["sigma"] == pytest.approx(true_sigma, rel=0.25)


def test_chunk_rejects_halves_of_another_shape(tmp_path, capsys):
    from cryogen.cli.main import main
    from cryogen.io.mrc import write_mrc

    obs, other = tmp_path / "obs.mrc", tmp_path / "odd.mrc"
    assert main(["simulate", str(obs), "--shape", "32", "48", "48", "--seed", "1", "--halves"]) == 0
    write_mrc(other, np.random.default_rng(0).normal(size=(32, 48, 40)).astype(np.float32), 10.0)
    code = main(
        [
            "chunk",
            str(obs),
            str(tmp_path / "t.zarr"),
            "--tile",
            "32",
            "--overlap",
            "8",
            "--tilt-range",
            "-60",
            "60",
            "--halves",
            str(tmp_path / "obs_even.mrc"),
            str(other),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "odd.mrc" in err[0] and "shape" in err[0], err
    assert not (tmp_path / "t.zarr").exists()


# -- the directional factor ---------------------------------------------------------------------

REAL_CROP = "../shared/real/14pf_MT.tif"


def test_radial_models_sample_exactly_as_before():
    """Without a directional factor the PSD is bitwise that of the radial model before the factor
    existed (saved in tests/data), and the noise drawn with a seeded generator is bitwise what
    that model's code draws (and the saved draw, to float32 rounding of another FFT threading)."""
    from pathlib import Path

    ref = np.load(Path(__file__).parent / "data" / "noise_radial_reference.npz")
    wy, wx = Wedge(-54, 62, "y"), Wedge(-60, 50, "x")
    m1 = NoiseModel(0.7, (0.0, 0.2, 0.45, 0.8), (0.3, 0.5, 0.4, 0.1), 0.05, "data")
    m2 = NoiseModel.flat(1.0, 0.0, (16, 16, 16), wy)
    for name, model, wedge, shape in (
        ("m1y", m1, wy, (2, 12, 16, 10)),
        ("m1x", m1, wx, (9, 14, 11)),
        ("m2", NoiseModel.from_dict({**m2.to_dict(), "directional": None}), wy, (1, 10, 12, 16)),
    ):
        assert np.array_equal(model.psd(shape, wedge), ref[f"{name}_psd"]), name
        sample = model.sample(shape, wedge, generator=torch.Generator().manual_seed(5))
        # the radial code path, verbatim: bitwise in this process (torch's FFT bits depend on its threads)
        white = torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float32)
        amp = torch.from_numpy(np.sqrt(ref[f"{name}_psd"]).astype(np.float32))
        spectrum = torch.fft.rfftn(white, dim=(-3, -2, -1)) * amp
        assert torch.equal(sample, torch.fft.irfftn(spectrum, s=shape[-3:], dim=(-3, -2, -1))), name
        np.testing.assert_allclose(sample.numpy(), ref[f"{name}_sample"], rtol=0, atol=1e-6)


def _kgrid(shape, axis="y"):
    """|k|, |k_axis| / |k| and the (kz, k_plane) components on the rfftn grid of `shape`."""
    kz = np.fft.fftfreq(shape[0])[:, None, None]
    ky = np.fft.fftfreq(shape[1])[None, :, None]
    kx = np.fft.rfftfreq(shape[2])[None, None, :]
    r = np.sqrt(kz**2 + ky**2 + kx**2)
    k_axis, k_plane = (ky, kx) if axis == "y" else (kx, ky)
    return r, np.abs(k_axis) / np.where(r > 0, r, 1.0), kz, k_plane


def _anisotropic_psd(shape, axis="y"):
    """2.5x the power along the tilt axis as across it, more near the specimen plane than at high tilt."""
    _, c, kz, kp = _kgrid(shape, axis)
    tilt = np.abs(np.arctan2(np.abs(kz), np.abs(kp)))  # 0 in the specimen plane, pi/2 along the beam
    return (1.0 + 1.5 * c**2) * (1.15 - 0.3 * np.sin(tilt) ** 2)


def _coloured(shape, psd, seed):
    spec = np.fft.rfftn(_white(shape, seed)) * np.sqrt(psd)
    return np.fft.irfftn(spec, s=shape, axes=(0, 1, 2)).astype(np.float32)


def _along_across(power, shape, axis="y"):
    """Mean power at 0.4-0.5 cycles/voxel along the tilt axis (|k_axis| >= 0.4) over across it (< 0.1)."""
    r, c, _, _ = _kgrid(shape, axis)
    shell = (r >= 0.4) & (r <= 0.5)
    k_axis = c * r
    return float(power[shell & (k_axis >= 0.4)].mean() / power[shell & (k_axis < 0.1)].mean())


def _mean_power(samples):
    return np.mean([np.abs(np.fft.rfftn(s)) ** 2 / s.size for s in samples], axis=0)


@pytest.mark.parametrize("axis", ["y", "x"])
def test_directional_noise_is_recovered_from_data_and_from_halves(axis):
    """Noise 2.5x stronger along the tilt axis: the estimate from data alone (with a smooth
    signal) and from halves puts it in the model within 15 %, and noise drawn from the model
    (on another shape) shows it."""
    wedge = Wedge(-60, 60, axis)
    psd = _anisotropic_psd(SHAPE, axis)
    truth = _along_across(psd * wedge_mask(SHAPE, wedge), SHAPE, axis)
    assert truth > 2.0
    crop = tuple(slice(8, 8 + n) for n in SHAPE)  # a crop of a tomogram: signal not periodic
    signal = _signal(tuple(n + 16 for n in SHAPE), wedge, 31)[crop]
    noise = [apply_wedge_np(_coloured(SHAPE, psd, s), wedge) for s in (32, 33)]
    halves = estimate_from_halves(signal + np.sqrt(2) * noise[0], signal + np.sqrt(2) * noise[1], wedge)
    data = estimate_from_data(signal + noise[0], wedge)
    for model in (data, halves):
        assert model.directional is not None
        assert _along_across(model.psd(SHAPE, wedge), SHAPE, axis) == pytest.approx(truth, rel=0.15)
        assert model.sigma == pytest.approx(float(noise[0].std()), rel=0.1)
        other = (40, 56, 36)
        drawn = model.sample((6, *other), wedge, generator=torch.Generator().manual_seed(0)).numpy()
        assert _along_across(_mean_power(drawn), other, axis) == pytest.approx(truth, rel=0.15)
        assert float(drawn.var()) == pytest.approx(model.variance(other, wedge), rel=0.03)


def test_isotropic_noise_gives_no_directional_shape():
    """White (wedge-confined) noise: the factor is absent or within noise of 1 in the measured
    region, and the model's power along and across the tilt axis is the wedge's own ratio."""
    wedge = Wedge(-60, 60, "y")
    isotropic = _along_across(wedge_mask(SHAPE, wedge).astype(float), SHAPE)  # 0.95: the wedge's share differs
    crop = tuple(slice(8, 8 + n) for n in SHAPE)  # a crop of a tomogram: signal not periodic
    signal = _signal(tuple(n + 16 for n in SHAPE), wedge, 40, std=0.5)[crop]
    even, odd, _ = _halves(SHAPE, wedge, True, seed=41, signal_std=0.0)
    even, odd = even + signal, odd + signal
    for model in (estimate_from_halves(even, odd, wedge), estimate_from_data((even + odd) / 2, wedge)):
        if model.directional is not None:  # the missing region holds what the crop's borders leak
            inside = np.abs(np.asarray(model.directional.angles)) <= 60
            assert np.abs(model.directional.grid[:, :, inside] - 1.0).max() < 0.2
        assert _along_across(model.psd(SHAPE, wedge), SHAPE) == pytest.approx(isotropic, rel=0.06)


def test_directional_factor_keeps_sigma_and_the_radial_profile():
    """The factor has mean 1 over the measured part of each shell and over the missing wedge:
    a model with it has the variance and the mean PSD per region of the same model without it."""
    wedge = Wedge(-55, 62, "x")
    psd = _anisotropic_psd(SHAPE, "x")
    noise = apply_wedge_np(_coloured(SHAPE, psd, 5), wedge) + 0.3 * _white(SHAPE, 6)
    model = estimate_from_data(noise, wedge)
    radial = NoiseModel.from_dict({k: v for k, v in model.to_dict().items() if k != "directional"})
    assert model.directional is not None and radial.directional is None
    for shape in ((32, 32, 32), (24, 40, 33)):
        assert model.variance(shape, wedge) == pytest.approx(radial.variance(shape, wedge), rel=0.01)
        assert model.measured_variance(shape, wedge) == pytest.approx(radial.measured_variance(shape, wedge), rel=0.01)
        factor = model.directional.evaluate(shape, wedge)
        assert factor.min() > 0 and not np.allclose(factor, 1.0)
    # Hermitian symmetry: the sampled noise is real and has exactly the model's variance on average
    n = model.sample((8, 24, 40, 33), wedge, generator=torch.Generator().manual_seed(1))
    assert float(n.double().var()) == pytest.approx(model.variance((24, 40, 33), wedge), rel=0.03)


def test_directional_factor_in_blocks_equals_one_pass(monkeypatch):
    """The factor is interpolated in blocks of points (to bound chunk's memory): blocks that do
    not divide the point count give exactly the values of a single pass."""
    import cryogen.model.noise_directional as nd

    wedge = Wedge(-55, 62, "y")
    model = estimate_from_data(apply_wedge_np(_coloured(SHAPE, _anisotropic_psd(SHAPE), 9), wedge), wedge)
    assert model.directional is not None
    shape = (24, 40, 33)
    monkeypatch.setattr(nd, "INTERP_BLOCK", 10**9)
    nd._evaluate.cache_clear()
    whole = model.directional.evaluate(shape, wedge)
    monkeypatch.setattr(nd, "INTERP_BLOCK", 997)
    nd._evaluate.cache_clear()
    blocks = model.directional.evaluate(shape, wedge)
    nd._evaluate.cache_clear()
    assert not np.allclose(whole, 1.0)
    np.testing.assert_array_equal(blocks, whole)


def test_directional_factor_round_trips_and_old_dicts_load():
    wedge = Wedge(-60, 60, "y")
    noise = apply_wedge_np(_coloured((32, 32, 32), _anisotropic_psd((32, 32, 32)), 8), wedge)
    model = estimate_from_data(noise, wedge)
    assert model.directional is not None
    d = json.loads(json.dumps(model.to_dict()))
    assert "directional" in d
    back = NoiseModel.from_dict(d)
    assert back == model and hash(back) == hash(model)
    assert np.array_equal(back.psd((16, 20, 24), wedge), model.psd((16, 20, 24), wedge))
    assert model.scaled(2.0).directional == model.directional
    # a radial model's dict has no such key; old dicts and empty factors load as radial
    assert "directional" not in NoiseModel.white(1.0).to_dict()
    for empty in (None, {}):
        assert NoiseModel.from_dict({**d, "directional": empty}).directional is None
    with pytest.raises(CryogenError, match="directional"):
        NoiseModel.from_dict(
            {**d, "directional": {"radii": [0.1], "cosines": [0.5], "angles": [0.0], "values": [[[0.0]]]}}
        )
    with pytest.raises(CryogenError, match="directional"):
        NoiseModel.from_dict({**d, "directional": {"radii": [0.1]}})


def test_real_crop_noise_is_stronger_along_the_tilt_axis():
    """The microtubule crop (tilt axis y, no halves): the model from the data alone carries the
    measured anisotropy, about 2.4x more power along the tilt axis than across it at high |k|."""
    from pathlib import Path

    path = Path(__file__).parent.parent / REAL_CROP
    if not path.exists():
        pytest.skip("the real crop is not here")
    tifffile = pytest.importorskip("tifffile")
    volume = tifffile.imread(path).astype(np.float32)
    wedge = Wedge(-66, 57, "y")
    model = estimate_from_data(volume, wedge)
    assert model.directional is not None
    assert 1.8 <= _along_across(model.psd(volume.shape, wedge), volume.shape) <= 3.0
