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
