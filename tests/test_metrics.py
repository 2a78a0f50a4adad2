"""The yardstick: cc, FSC crossings, wedge / measured recovery, and the table renderer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cryogen.cli.tables import format_table
from cryogen.errors import CryogenError
from cryogen.model.imaging import Wedge, apply_wedge_np, frequency_radius, wedge_mask
from cryogen.qc import metrics
from cryogen.qc.metrics import evaluate, fsc_curve

KEYS = [
    "cc",
    "fsc_0.5",
    "fsc_0.143",
    "fsc_0.5_angstrom",
    "fsc_0.143_angstrom",
    "wedge_recovery",
    "measured_recovery",
    "wedge_recovery_no_z_profile",
    "cc_no_z_profile",
]


def white(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def smooth(shape, sigma=2.0, seed=0):
    """Low-passed noise, periodic (mode='wrap') so the FFT sees no edge and really is band-limited."""
    return gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma, mode="wrap").astype(np.float32)


def reference(recon, truth, wedge):
    """The definitions, written out literally on the full FFT (no half-spectrum bookkeeping)."""
    r = recon.astype(np.float64).ravel()
    t = truth.astype(np.float64).ravel()
    cc = np.corrcoef(r, t)[0, 1]
    a, b = np.polyfit(r, t, 1)
    fit = (a * recon.astype(np.float64) + b).reshape(truth.shape)
    err = np.abs(np.fft.fftn(fit - truth)) ** 2
    pw = np.abs(np.fft.fftn(truth - truth.astype(np.float64).mean())) ** 2
    k = frequency_radius(truth.shape, rfft=False)
    band = (k > 0) & (k <= 0.25)
    meas = wedge_mask(truth.shape, wedge, rfft=False)
    rec_w = 1 - err[band & ~meas].sum() / pw[band & ~meas].sum()
    rec_m = 1 - err[band & meas].sum() / pw[band & meas].sum()
    # FSC on shells of width 1 / max(shape), centres i / max(shape)
    n = max(truth.shape)
    shell = np.floor(k * n + 0.5).astype(int)
    fr, ft = np.fft.fftn(recon.astype(np.float64)), np.fft.fftn(truth.astype(np.float64))
    fsc = []
    for i in range(1, n // 2 + 1):
        s = shell == i
        fsc.append(
            np.real(fr[s] * np.conj(ft[s])).sum() / np.sqrt((np.abs(fr[s]) ** 2).sum() * (np.abs(ft[s]) ** 2).sum())
        )
    return cc, rec_w, rec_m, np.arange(1, n // 2 + 1) / n, np.array(fsc)


# ------------------------------------------------------------------------------ perfect answers


def test_identical_volumes_are_perfect():
    t = smooth((32, 32, 32), 1.5)
    m = evaluate(t, t, voxel_size=4.0)
    assert list(m) == KEYS
    assert m["cc"] == pytest.approx(1.0, abs=1e-12)
    assert m["fsc_0.5"] == 0.5 and m["fsc_0.143"] == 0.5
    assert m["fsc_0.5_angstrom"] == pytest.approx(8.0) and m["fsc_0.143_angstrom"] == pytest.approx(8.0)
    assert m["wedge_recovery"] == pytest.approx(1.0, abs=1e-9)
    assert m["measured_recovery"] == pytest.approx(1.0, abs=1e-9)
    freqs, fsc = fsc_curve(t, t)
    assert np.allclose(fsc, 1.0) and freqs[-1] == 0.5 and freqs[0] == pytest.approx(1 / 32)


def test_z_profile_diagnostics_ignore_only_the_kz_axis():
    """A reconstruction that lacks only the truth's z profile (a slab) is perfect by the two
    diagnostics, while wedge_recovery and cc count the missing profile against it."""
    t = smooth((32, 32, 32), 1.5, seed=5)
    profile = np.zeros(32, dtype=np.float32)
    profile[8:24] = 1.0  # an ice slab
    t = t + profile[:, None, None]
    recon = t - t.mean(axis=(1, 2), keepdims=True)
    m = evaluate(recon, t)
    assert m["wedge_recovery_no_z_profile"] == pytest.approx(1.0, abs=1e-6)
    assert m["cc_no_z_profile"] == pytest.approx(1.0, abs=1e-6)
    assert m["wedge_recovery"] < 0.5 and m["cc"] < 0.9
    m = evaluate(np.roll(t, 3, axis=2), t)  # wrong in-plane structure: both diagnostics see it
    assert m["cc_no_z_profile"] < 0.9 and m["wedge_recovery_no_z_profile"] < 0.9


def test_affine_copy_is_perfect():
    t = smooth((24, 28, 32), 1.5, seed=3)
    m = evaluate(3.0 * t + 7.0, t)
    assert m["cc"] == pytest.approx(1.0, abs=1e-9)
    assert m["fsc_0.5"] == 0.5 and m["fsc_0.143"] == 0.5
    assert m["wedge_recovery"] == pytest.approx(1.0, abs=1e-6)
    assert m["measured_recovery"] == pytest.approx(1.0, abs=1e-6)
    # a negative scale is still a perfect affine fit for the recoveries, but anti-correlated
    m = evaluate(-2.0 * t + 1.0, t)
    assert m["cc"] == pytest.approx(-1.0, abs=1e-9)
    assert m["wedge_recovery"] == pytest.approx(1.0, abs=1e-6)


def test_result_is_json_of_plain_floats():
    t = white((16, 16, 16))
    m = evaluate(t + white(t.shape, 1), t, voxel_size=np.float32(2.5))
    assert json.loads(json.dumps(m)) == m
    for key in KEYS:
        assert type(m[key]) is float, key
    m = evaluate(t, t)
    assert m["fsc_0.5_angstrom"] is None and m["fsc_0.143_angstrom"] is None
    assert evaluate(t, t, voxel_size=0.0)["fsc_0.5_angstrom"] is None


# ------------------------------------------------------------------------------ the wedge


@pytest.mark.parametrize("wedge", [Wedge(), Wedge(-50.0, 65.0, "x")])
def test_wedge_filtered_truth_recovers_nothing_inside_the_wedge(wedge):
    t = white((32, 32, 32), seed=1)
    m = evaluate(apply_wedge_np(t, wedge), t, wedge)
    assert abs(m["wedge_recovery"]) < 0.02
    assert m["measured_recovery"] == pytest.approx(1.0, abs=1e-4)
    assert m["cc"] < 0.95


def test_recovery_uses_the_given_wedge_geometry():
    t = white((32, 32, 32), seed=2)
    asym = Wedge(-50.0, 65.0, "x")
    obs = apply_wedge_np(t, asym)
    right = evaluate(obs, t, asym)
    wrong = evaluate(obs, t, Wedge())  # the default: +-60 about y
    assert abs(right["wedge_recovery"]) < 0.02 and right["measured_recovery"] > 0.999
    # under the wrong geometry part of the "measured" region is empty and part of the "wedge" full
    assert wrong["measured_recovery"] < 0.8
    assert wrong["wedge_recovery"] > 0.1
    # the same about the other axis, with the same angles, is yet another geometry
    other = evaluate(obs, t, Wedge(-50.0, 65.0, "y"))
    assert other["measured_recovery"] < 0.8
    # real-space and FSC metrics do not depend on the wedge
    assert right["cc"] == wrong["cc"] and right["fsc_0.5"] == wrong["fsc_0.5"]


def test_empty_wedge_gives_no_wedge_recovery():
    t = white((16, 16, 16))
    m = evaluate(t + 0.1 * white(t.shape, 5), t, Wedge(-90.0, 90.0))
    assert m["wedge_recovery"] is None
    assert 0.9 < m["measured_recovery"] < 1.0


def test_recovery_of_half_noise_is_one_half():
    # recon = truth + independent noise of equal power: a = 1/2, so |aR - T|^2 = |N - T|^2 / 4 ~ |T|^2 / 2
    t = white((32, 32, 32), seed=3)
    m = evaluate(t + white(t.shape, seed=4), t)
    assert m["wedge_recovery"] == pytest.approx(0.5, abs=0.03)
    assert m["measured_recovery"] == pytest.approx(0.5, abs=0.03)
    assert m["cc"] == pytest.approx(1 / np.sqrt(2), abs=0.02)


def test_constant_recon_recovers_nothing():
    t = white((16, 16, 16))
    m = evaluate(np.full(t.shape, 3.0, np.float32), t)
    assert m["cc"] == 0.0
    assert m["wedge_recovery"] == pytest.approx(0.0, abs=1e-12)
    assert m["measured_recovery"] == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------ the half spectrum


@pytest.mark.parametrize(
    "shape, wedge",
    [((20, 32, 40), Wedge()), ((21, 30, 35), Wedge(-50.0, 65.0, "x")), ((17, 16, 24), Wedge(-45.0, 30.0, "y"))],
)
def test_matches_the_full_fft_definition(shape, wedge):
    t = smooth(shape, 1.0, seed=6)
    recon = 0.7 * apply_wedge_np(t, wedge) + 0.3 * smooth(shape, 2.0, seed=7) + 0.2 * white(shape, 8) + 5.0
    m = evaluate(recon, t, wedge)
    cc, rec_w, rec_m, freqs_ref, fsc_ref = reference(recon, t, wedge)
    assert m["cc"] == pytest.approx(cc, abs=1e-10)
    assert m["wedge_recovery"] == pytest.approx(rec_w, abs=1e-9)
    assert m["measured_recovery"] == pytest.approx(rec_m, abs=1e-9)
    freqs, fsc = fsc_curve(recon, t)
    assert np.allclose(freqs, freqs_ref) and np.allclose(fsc, fsc_ref, atol=1e-10)
    assert len(freqs) == max(shape) // 2


def test_internal_fft_matches_numpy():
    x = white((9, 10, 13), seed=9)
    assert np.allclose(metrics._rfft3(x), np.fft.rfftn(x.astype(np.float64)), atol=1e-10)


# ------------------------------------------------------------------------------ FSC


def test_fsc_of_two_noisy_halves_is_one_half_in_every_shell():
    shape = (40, 40, 40)
    s = white(shape, seed=10)
    a, b = s + white(shape, seed=11), s + white(shape, seed=12)
    _, fsc = fsc_curve(a, b)
    # shells past the first few hold hundreds of coefficients
    assert np.all(np.abs(fsc[4:] - 0.5) < 0.08)
    assert np.mean(fsc[4:]) == pytest.approx(0.5, abs=0.02)
    # recon = truth + equal-power noise against the truth: 1 / sqrt(2) everywhere, never below 0.5
    _freqs, fsc = fsc_curve(a, s)
    assert np.all(np.abs(fsc[4:] - 1 / np.sqrt(2)) < 0.06)
    m = evaluate(a, s)
    assert m["fsc_0.5"] == 0.5 and m["fsc_0.143"] == 0.5


def test_more_noise_moves_the_crossing_down():
    t = smooth((32, 32, 32), 1.5, seed=13)
    n = white(t.shape, seed=14) * float(t.std())
    results = [evaluate(t + level * n, t, voxel_size=5.0) for level in (0.05, 0.3, 1.0)]
    ccs = [r["cc"] for r in results]
    f05 = [r["fsc_0.5"] for r in results]
    f0143 = [r["fsc_0.143"] for r in results]
    assert ccs[0] > ccs[1] > ccs[2]
    assert f05[0] > f05[1] > f05[2]
    assert f0143[0] > f0143[1] > f0143[2]
    for r in results:
        assert r["fsc_0.143"] > r["fsc_0.5"]
        assert r["fsc_0.5_angstrom"] == pytest.approx(5.0 / r["fsc_0.5"])
        assert r["fsc_0.143_angstrom"] == pytest.approx(5.0 / r["fsc_0.143"])
        assert r["fsc_0.5"] < 0.5


def test_gaussian_blur_plus_noise_crosses_where_theory_says():
    # white truth T, recon = H T + alpha N with N white of the same power as T and
    # H = exp(-2 pi^2 sigma^2 k^2): FSC(k) = H / sqrt(H^2 + alpha^2), so FSC = c where
    # H = alpha c / sqrt(1 - c^2). (A blur alone would not move the FSC: it is invariant to a
    # per-shell gain.) Over 30 seeds the crossings stay within 0.008 / 0.016 of theory.
    shape, sigma, alpha = (48, 48, 48), 1.2, 0.5
    t = white(shape, seed=15).astype(np.float64)
    k2 = frequency_radius(shape, rfft=True) ** 2
    blurred = np.fft.irfftn(np.fft.rfftn(t) * np.exp(-2 * np.pi**2 * sigma**2 * k2), s=shape, axes=(0, 1, 2))
    recon = blurred + alpha * white(shape, seed=16)
    m = evaluate(recon, t)
    for c, tol in ((0.5, 0.012), (0.143, 0.025)):
        h = alpha * c / np.sqrt(1 - c**2)
        k = np.sqrt(np.log(1 / h) / (2 * np.pi**2 * sigma**2))
        assert m[f"fsc_{c}"] == pytest.approx(k, abs=tol), c
    # the blur alone: FSC ~ 1 in every shell (just under: H varies across a shell), no crossing
    _freqs, fsc = fsc_curve(blurred, t)
    assert np.all(fsc > 0.98)


def test_crossing_interpolates_linearly():
    freqs = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert metrics._crossing(freqs, np.array([0.9, 0.7, 0.3, 0.1, 0.0]), 0.5) == pytest.approx(0.25)
    assert metrics._crossing(freqs, np.array([0.9, 0.7, 0.3, 0.1, 0.0]), 0.143) == pytest.approx(
        0.3 + 0.1 * 0.157 / 0.2
    )
    assert metrics._crossing(freqs, np.array([0.9, 0.9, 0.9, 0.9, 0.9]), 0.5) == 0.5
    # the first dip counts, even if the curve comes back
    assert metrics._crossing(freqs, np.array([0.9, 0.4, 0.9, 0.9, 0.9]), 0.5) == pytest.approx(0.18)
    # below already in the first shell: interpolated from FSC = 1 at k = 0
    assert metrics._crossing(freqs, np.array([0.0, 0.0, 0.0, 0.0, 0.0]), 0.5) == pytest.approx(0.05)


def test_unrelated_volumes_cross_at_low_frequency():
    t = white((24, 24, 24), seed=17)
    m = evaluate(white(t.shape, seed=18), t, voxel_size=1.0)
    assert abs(m["cc"]) < 0.05
    assert m["fsc_0.5"] < 1 / 24 and m["fsc_0.143"] < 1 / 24 + 0.02
    assert m["fsc_0.5_angstrom"] > 24
    assert abs(m["wedge_recovery"]) < 0.05  # the fitted scale is ~0: as good as an empty wedge


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "recon, truth, message",
    [
        (np.zeros((8, 8, 8)), np.zeros((8, 8, 9)), "differs"),
        (np.zeros((8, 8)), np.zeros((8, 8)), "3-D"),
        (np.zeros((2, 8, 8, 8)), np.zeros((2, 8, 8, 8)), "3-D"),
        (np.ones((8, 8, 8)), np.ones((8, 8, 8)), "constant"),
        (np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), "at least 2"),
        (np.zeros((8, 8, 8), complex), np.zeros((8, 8, 8)), "real"),
    ],
)
def test_bad_input_raises(recon, truth, message):
    with pytest.raises(CryogenError, match=message) as err:
        evaluate(recon, truth)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["recon", "truth"])
def test_non_finite_values_raise(bad, which):
    t = white((8, 8, 8))
    r = t.copy()
    (r if which == "recon" else t)[3, 4, 5] = bad
    with pytest.raises(CryogenError, match="NaN or Inf"):
        evaluate(r, t)
    with pytest.raises(CryogenError, match="NaN or Inf"):
        fsc_curve(r, t)


def test_fsc_curve_checks_shapes():
    with pytest.raises(CryogenError, match="differs"):
        fsc_curve(np.zeros((8, 8, 8)), np.zeros((8, 9, 8)))


def test_bad_wedge_type_raises():
    t = white((8, 8, 8))
    with pytest.raises(CryogenError, match="Wedge"):
        evaluate(t, t, (-60, 60))


def test_slab_passes_match_whole_volume(monkeypatch):
    # force many tiny slabs: the chunked real-space and Fourier passes must give the same answer
    t = smooth((12, 14, 16), 1.0, seed=19)
    r = t + 0.5 * white(t.shape, seed=20)
    whole = evaluate(r, t, Wedge(-40.0, 70.0, "x"), 3.0)
    monkeypatch.setattr(metrics, "_SLAB_ELEMENTS", 50)
    sliced = evaluate(r, t, Wedge(-40.0, 70.0, "x"), 3.0)
    for key in KEYS:
        assert sliced[key] == pytest.approx(whole[key], rel=1e-9, abs=1e-12), key


# ------------------------------------------------------------------------------ tables


def test_format_table_aligns_and_formats():
    rows = [
        {"volume": "a.mrc", "cc": 0.91234, "fsc_0.5": 0.25, "fsc_0.5_angstrom": None, "n": 3},
        {"volume": "longer_name.mrc", "cc": np.float32(-0.5), "fsc_0.5": 0.1, "fsc_0.5_angstrom": 40.0, "n": 12},
    ]
    text = format_table(rows, ["volume", "cc", "fsc_0.5", "fsc_0.5_angstrom", "n", "missing"])
    lines = text.splitlines()
    assert len(lines) == 4
    assert len({len(line) for line in lines}) == 1  # aligned
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["volume", "cc", "fsc_0.5", "fsc_0.5_angstrom", "n", "missing"]
    assert set(lines[1]) <= set("|-:")  # the markdown separator row
    first = [c.strip() for c in lines[2].strip("|").split("|")]
    second = [c.strip() for c in lines[3].strip("|").split("|")]
    assert first == ["a.mrc", "0.912", "0.250", "-", "3", "-"]
    assert second == ["longer_name.mrc", "-0.500", "0.100", "40.000", "12", "-"]
    # numbers right-aligned, text left-aligned
    assert lines[2].split("|")[2].endswith("0.912 ") and lines[2].split("|")[1].startswith(" a.mrc")


def test_format_table_of_evaluate_results():
    t = white((16, 16, 16))
    rows = [{"volume": "x", **evaluate(t, t)}, {"volume": "y", **evaluate(t + white(t.shape, 2), t, voxel_size=2.0)}]
    text = format_table(rows, ["volume", *KEYS])
    assert "1.000" in text and "0.500" in text and "-" in text
    assert len({len(line) for line in text.splitlines()}) == 1
    assert format_table([], ["a", "b"]).count("\n") == 1  # header and separator only
    assert "-0.000" not in format_table([{"x": -1e-9}], ["x"])
