"""cryogen.deconvolve: CTF deconvolution of a tomogram before restoring it. The filter (a Wiener
filter up to the CTF's first peak, flat beyond), the block-by-block filtering against one filter
over the whole mirror-padded volume, the low frequencies given back on a volume through a known
CTF, the file written streamed with its header kept and atomically, bad input in one line, chunk
and run with a defocus (the store records it, the tiles are the deconvolved volume's, nothing
left behind), and the workflow's sheet column."""

from __future__ import annotations

import itertools
import json
import logging
import tracemalloc

import numpy as np
import pytest
import scipy.fft
import scipy.signal
from scipy.ndimage import gaussian_filter

from cryogen.deconvolve import Deconvolution, deconvolve, deconvolve_volume
from cryogen.errors import CryogenError
from cryogen.io.mrc import MrcReader, read_mrc, write_mrc
from cryogen.io.store import TILE_ARRAY, open_store, read_tiles, zarr_array
from cryogen.model.imaging import Wedge, frequency_radius, wedge_mask
from cryogen.sim.ctf import CTF, ctf_curve
from cryogen.sim.tilt_series import TiltScheme, simulate_tilt_series
from cryogen.tiling import chunk
from cryogen.workflow import Tomogram

VOXEL = 10.5
DECONV = Deconvolution(CTF(defocus_um=3.0))


def specimen(shape=(40, 70, 90), seed=0) -> np.ndarray:
    """Smooth structure plus white noise, float32."""
    rng = np.random.default_rng(seed)
    return (gaussian_filter(rng.standard_normal(shape), 3) * 15 + rng.standard_normal(shape)).astype(np.float32)


def whole_volume(volume: np.ndarray, deconv: Deconvolution, voxel: float) -> np.ndarray:
    """The reference: the kernel convolved with the whole volume, mirror-padded by its radius."""
    kernel = deconv.kernel(voxel)
    r = (kernel.shape[0] - 1) // 2
    p = np.pad(volume.astype(np.float64), r, mode="symmetric")
    return scipy.signal.fftconvolve(p, kernel, mode="valid")


def shell_means(values: np.ndarray, k: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.array([values[(k >= a) & (k < b)].mean() for a, b in itertools.pairwise(edges)])


def test_the_filter_is_wiener_up_to_the_ctf_peak_and_flat_beyond():
    d = DECONV
    peak = d.first_peak()
    k = np.linspace(0, 0.5 / VOXEL, 401)
    c = ctf_curve(k, d.ctf)
    assert ctf_curve(np.array([peak]), d.ctf)[0] == pytest.approx(1.0, abs=1e-6)  # the CTF's first maximum
    assert np.all(np.diff(c[k <= peak]) > 0)  # rises to it
    h = d.transfer(k)
    below = k <= peak
    np.testing.assert_allclose(h[below], c[below] / (c[below] ** 2 + d.wiener), rtol=1e-12)
    np.testing.assert_allclose(h[~below], 1.0 / (1.0 + d.wiener), rtol=1e-9)  # flat beyond: H at the peak
    a = d.ctf.amplitude_contrast
    assert h[0] == pytest.approx(a / (a * a + d.wiener))  # the mean gains ~2.8x, as the lowest frequencies
    # the whole point: the lowest frequencies come back, up to 1 / (2 sqrt(w))
    assert h[k < peak].max() == pytest.approx(1 / (2 * np.sqrt(d.wiener)), rel=1e-3)
    # whether the images were phase-flipped does not change it: one sign below the first peak
    np.testing.assert_allclose(Deconvolution(CTF(defocus_um=3.0, phase_flip=False)).transfer(k), h)


def test_the_whole_filter_is_wiener_everywhere_and_follows_the_phase_flip():
    k = np.linspace(0, 0.5 / VOXEL, 401)
    flipped = Deconvolution(CTF(defocus_um=3.0), whole=True)
    c = ctf_curve(k, flipped.ctf)
    np.testing.assert_allclose(flipped.transfer(k), c / (c * c + flipped.wiener), rtol=1e-12)
    assert flipped.transfer(k).min() >= 0  # |C|: the flipped images' signs are right already
    unflipped = Deconvolution(CTF(defocus_um=3.0, phase_flip=False), whole=True)
    assert unflipped.transfer(k).min() < -1  # C: beyond the first zero the filter flips the sign back
    below = k <= flipped.first_peak()
    np.testing.assert_allclose(flipped.transfer(k)[below], DECONV.transfer(k)[below])
    assert flipped.label().endswith("whole") and unflipped.label().endswith("whole unflipped")
    assert Deconvolution.from_dict(unflipped.as_dict()) == unflipped
    old = {k: v for k, v in DECONV.as_dict().items() if k != "whole"}  # a store from before the option
    assert Deconvolution.from_dict(old) == DECONV
    with pytest.raises(CryogenError, match="whole"):
        Deconvolution(CTF(), whole="yes")


@pytest.mark.parametrize("voxel, defocus", [(VOXEL, 3.0), (5.0, 3.0), (20.0, 6.0)])
def test_the_cut_kernel_keeps_the_filter_shell_by_shell(voxel, defocus):
    """Cutting the kernel at its radius smooths H, but every shell's mean stays H's (to Nyquist)."""
    d = Deconvolution(CTF(defocus_um=defocus))
    kernel = d.kernel(voxel)
    n = 160
    full = np.zeros((n, n, n))
    full[: kernel.shape[0], : kernel.shape[1], : kernel.shape[2]] = kernel
    r = (kernel.shape[0] - 1) // 2
    got = scipy.fft.rfftn(np.roll(full, (-r, -r, -r), axis=(0, 1, 2))).real
    k = frequency_radius((n, n, n))
    edges = np.arange(0, 0.5, 0.025)
    want = shell_means(d.transfer(k / voxel), k, edges)
    assert np.abs(shell_means(got, k, edges) - want).max() < 0.1 * want.max()


@pytest.mark.parametrize("voxel, defocus", [(VOXEL, 3.0), (5.0, 3.0), (20.0, 6.0)])
def test_blocks_equal_one_filter_over_the_whole_volume(voxel, defocus):
    d = Deconvolution(CTF(defocus_um=defocus))
    v = specimen()
    ref = whole_volume(v, d, voxel)
    got = deconvolve_volume(v, d, voxel, block=32)  # 2 x 3 x 3 blocks: seams would show
    assert np.abs(got - ref).max() < 1e-4 * ref.std()  # exact but for rounding: the kernel has support R


def test_a_long_kernel_is_cut_at_the_largest_radius_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert Deconvolution(CTF(defocus_um=4.0)).kernel_radius(2.6) == 64
    assert "cut at 64" in caplog.text
    assert Deconvolution(CTF(defocus_um=3.0)).kernel_radius(VOXEL) < 32


def test_the_low_frequencies_the_ctf_took_come_back():
    v = specimen((48, 64, 64), seed=1)
    # a tomogram through the same CTF (radial in 3-D), then deconvolved
    k = frequency_radius(v.shape) / VOXEL
    through = scipy.fft.irfftn(scipy.fft.rfftn(v) * ctf_curve(k, DECONV.ctf), s=v.shape).astype(np.float32)
    back = deconvolve_volume(through, DECONV, VOXEL)
    low = k < 0.5 * DECONV.first_peak()

    def low_power(a):
        return float(np.sum(np.abs(scipy.fft.rfftn(a)[low]) ** 2))

    def cc(a):
        return float(np.corrcoef(a.ravel(), v.ravel())[0, 1])

    assert low_power(through) < 0.05 * low_power(v)  # what the microscope took (3 % left)
    assert 0.3 < low_power(back) / low_power(v) < 1.0  # ten times that back (a Wiener filter: not all)
    assert cc(back) > cc(through) + 0.02


def test_it_undoes_the_simulated_microscopes_ctf():
    """Through the tilt-series simulator (the CTF applied to every 2-D image, then back-projected),
    the deconvolved tomogram is closer to the same tomogram made with perfect optics: the 3-D
    radial filter undoes a per-image CTF, as the Fourier slice theorem says."""
    shape, tilts = (32, 64, 64), TiltScheme(-60.0, 60.0, 3.0)
    perfect = simulate_tilt_series(shape, tilts, snr=100.0, seed=2).observation
    through = simulate_tilt_series(shape, tilts, snr=100.0, seed=2, ctf=DECONV.ctf).observation
    back = deconvolve_volume(through, DECONV, 10.0)
    k = frequency_radius(shape) / 10.0
    low = (k > 0) & (k < 0.5 * DECONV.first_peak())

    def low_power(a):
        return float(np.sum(np.abs(scipy.fft.rfftn(a)[low]) ** 2))

    def cc(a):
        return float(np.corrcoef(a.ravel(), perfect.ravel())[0, 1])

    assert low_power(through) < 0.1 * low_power(perfect)
    assert low_power(back) > 3 * low_power(through)
    assert cc(back) > cc(through) + 0.05


def test_the_file_is_streamed_with_its_header_kept(tmp_path, write_volume, monkeypatch):
    v = specimen((40, 70, 90))
    src = write_volume("tomo.mrc", data=v, voxel_size=VOXEL, origin=(1.0, 2.0, 3.0))
    reads = []
    original = MrcReader.read_block

    def spy(self, z0, z1, y0=0, y1=None):
        reads.append((z1 - z0, (y1 if y1 is not None else self.shape[1]) - y0))
        return original(self, z0, z1, y0, y1)

    monkeypatch.setattr(MrcReader, "read_block", spy)
    margin = deconvolve(src, tmp_path / "out.mrc", DECONV, block=16, progress=False)
    assert max(z for z, _ in reads) <= 16 + 2 * margin and max(y for _, y in reads) <= 16 + 2 * margin
    out, info = read_mrc(tmp_path / "out.mrc")
    assert info.voxel_size == pytest.approx((VOXEL,) * 3) and info.origin == (1.0, 2.0, 3.0)
    assert info.labels[-1].startswith("cryogen deconvolve: 3 um")
    np.testing.assert_allclose(out, deconvolve_volume(v, DECONV, VOXEL, block=16), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mrc", "tomo.mrc"]


def _peak_bytes(tmp_path, nz: int) -> int:
    src = tmp_path / f"z{nz}.mrc"
    write_mrc(src, np.tile(specimen((16, 48, 48)), (nz // 16, 1, 1)), VOXEL)
    tracemalloc.start()
    try:
        deconvolve(src, tmp_path / f"d{nz}.mrc", DECONV, block=16, progress=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_z_planes(tmp_path):
    """8 times the planes, the same peak: holding the volume would add 2 MB here."""
    small, large = _peak_bytes(tmp_path, 32), _peak_bytes(tmp_path, 256)
    assert large < small + 0.05 * (4 * 256 * 48 * 48), (small, large)


def test_bad_input_one_line_and_no_output(tmp_path, write_volume):
    v = specimen((20, 30, 40))
    v[5, 6, 7] = np.nan
    bad = write_volume("nan.mrc", data=v, voxel_size=VOXEL)
    with pytest.raises(CryogenError, match=r"nan\.mrc.*NaN"):
        deconvolve(bad, tmp_path / "out.mrc", DECONV, progress=False)
    unknown = write_volume("zero.mrc", voxel_size=0.0)
    with pytest.raises(CryogenError, match="voxel size in the header is 0"):
        deconvolve(unknown, tmp_path / "out.mrc", DECONV, progress=False)
    with pytest.raises(CryogenError, match="different file"):
        deconvolve(bad, bad, DECONV)
    assert not (tmp_path / "out.mrc").exists() and not list(tmp_path.glob(".*"))
    with pytest.raises(CryogenError, match="defocus"):
        CTF(defocus_um=-1.0)
    with pytest.raises(CryogenError, match="Wiener"):
        Deconvolution(CTF(), wiener=0.0)


def test_chunk_with_a_defocus_tiles_the_deconvolved_volume(tmp_path, write_volume):
    v = specimen((40, 70, 90))
    src = write_volume("tomo.mrc", data=v, voxel_size=(11.0, VOXEL, VOXEL))  # z as the header says
    halves = (
        write_volume("even.mrc", data=v + 0.1, voxel_size=VOXEL),
        write_volume("odd.mrc", data=v - 0.1, voxel_size=VOXEL),
    )
    out = tmp_path / "t.zarr"
    meta = chunk(src, out, tile=32, overlap=8, wedge=Wedge(), progress=False, halves=halves, deconvolution=DECONV)
    assert meta.source == str(src) and Deconvolution.from_dict(meta.deconvolution) == DECONV
    deconvolve(src, tmp_path / "d.mrc", DECONV, progress=False)
    plain = chunk(tmp_path / "d.mrc", tmp_path / "p.zarr", tile=32, overlap=8, wedge=Wedge(), progress=False)
    g1, m1 = open_store(out)
    g2, _ = open_store(tmp_path / "p.zarr")
    np.testing.assert_array_equal(
        read_tiles(zarr_array(g1, TILE_ARRAY, out), 0, m1.n_tiles, out),
        read_tiles(zarr_array(g2, TILE_ARRAY, out), 0, m1.n_tiles, out),
    )
    assert m1.deconvolution == DECONV.as_dict() and plain.deconvolution is None
    assert meta.stats == pytest.approx(plain.stats)
    assert meta.voxel_size == plain.voxel_size == pytest.approx((11.0, VOXEL, VOXEL))
    leftovers = {p.name for p in tmp_path.iterdir()} - {"tomo.mrc", "even.mrc", "odd.mrc", "t.zarr", "d.mrc", "p.zarr"}
    assert not leftovers


@pytest.mark.parametrize("deconv", [DECONV, Deconvolution(CTF(defocus_um=3.0), whole=True)], ids=["peak", "whole"])
def test_the_noise_model_is_carried_through_the_filter(deconv):
    """Wedge-shaped white noise, deconvolved: its spectrum per shell is what the raw noise's model
    carried through the cut kernel (`NoiseModel.filtered`) says (the low-frequency
    boost of ~9x in power included); the flat estimate made on the deconvolved noise itself is
    off by more than 2x there (why chunk carries the model instead). 15 %: the lowest shell of a
    64^3 volume holds few coefficients (8-11 % off over seeds, 4 % at 96^3)."""
    from cryogen.model.noise_estimate import estimate_from_data

    shape, wedge = (64, 64, 64), Wedge(-60, 60, "y")
    rng = np.random.default_rng(3)
    raw = np.fft.irfftn(np.fft.rfftn(rng.standard_normal(shape)) * wedge_mask(shape, wedge), s=shape, axes=(0, 1, 2))
    done = deconvolve_volume(raw.astype(np.float32), deconv, VOXEL)
    transfer = deconv.kernel_transfer(VOXEL)
    model = estimate_from_data(raw, wedge).filtered(lambda k: transfer(k) ** 2, shape, wedge)
    flat = estimate_from_data(done, wedge)
    power = np.abs(np.fft.rfftn(done - done.mean())) ** 2 / done.size
    k, mask = frequency_radius(shape), wedge_mask(shape, wedge)
    edges = np.arange(0.05, 0.5, 0.04)
    measured = shell_means(power[mask], k[mask], edges)
    assert np.abs(shell_means(model.psd(shape, wedge)[mask], k[mask], edges) / measured - 1).max() < 0.15
    assert shell_means(flat.psd(shape, wedge)[mask], k[mask], edges)[0] < measured[0] / 2
    assert model.sigma == pytest.approx(done.std(), rel=0.05)
    assert transfer(np.array([0.05]))[0] == pytest.approx(deconv.transfer(np.array([0.05 / VOXEL]))[0], rel=0.05)


def test_chunk_without_halves_carries_the_raw_noise_model_through_the_filter(tmp_path, write_volume):
    from cryogen.model.noise import NoiseModel
    from cryogen.model.noise_estimate import estimate_for_tomogram

    src = write_volume("tomo.mrc", data=specimen((40, 70, 90)), voxel_size=VOXEL)
    meta = chunk(src, tmp_path / "t.zarr", tile=32, overlap=8, wedge=Wedge(), progress=False, deconvolution=DECONV)
    noise = NoiseModel.from_dict(meta.noise)
    transfer = DECONV.kernel_transfer(VOXEL)
    expected = estimate_for_tomogram(src, Wedge()).filtered(lambda k: transfer(k) ** 2, (40, 70, 90), Wedge())
    assert noise.measured_psd == pytest.approx(expected.measured_psd)
    assert noise.sigma == pytest.approx(expected.sigma)
    deconvolve(src, tmp_path / "d.mrc", DECONV, progress=False)
    on_deconvolved = estimate_for_tomogram(tmp_path / "d.mrc", Wedge())
    assert noise.data_psd == pytest.approx(on_deconvolved.data_psd)  # the diagnostics: the data's own


def test_chunk_with_a_defocus_leaves_nothing_when_it_fails(tmp_path, write_volume):
    v = specimen((20, 30, 40))
    v[-1, -1, -1] = np.inf
    src = write_volume("tomo.mrc", data=v, voxel_size=VOXEL)
    with pytest.raises(CryogenError, match=r"tomo\.mrc.*Inf"):
        chunk(src, tmp_path / "t.zarr", tile=16, overlap=4, progress=False, deconvolution=DECONV)
    assert [p.name for p in tmp_path.iterdir()] == ["tomo.mrc"]


def test_cli_deconvolve_and_chunk_defocus(tmp_path, write_volume, run_cli):
    src = write_volume("tomo.mrc", data=specimen((24, 40, 40)), voxel_size=VOXEL)
    code, out, _ = run_cli("deconvolve", src, tmp_path / "d.mrc", "--defocus", "2.5", "--wiener", "0.05")
    assert code == 0 and "radius" in out
    assert read_mrc(tmp_path / "d.mrc")[1].labels[-1].startswith("cryogen deconvolve: 2.5 um")
    code, _, err = run_cli("deconvolve", src, tmp_path / "e.mrc", "--defocus", "-2")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "defocus" in err
    assert not (tmp_path / "e.mrc").exists()
    with pytest.raises(SystemExit) as exc:  # argparse: the flag is required here
        run_cli("deconvolve", src, tmp_path / "e.mrc")
    assert exc.value.code != 0
    code, _, _ = run_cli(
        "chunk",
        src,
        tmp_path / "t.zarr",
        "--tilt-range",
        "-60",
        "60",
        "--tile",
        "16",
        "--overlap",
        "4",
        "--defocus",
        "2.5",
    )
    assert code == 0
    assert open_store(tmp_path / "t.zarr")[1].deconvolution["defocus_um"] == 2.5
    code, out, _ = run_cli("info", tmp_path / "t.zarr", "--json")
    assert code == 0 and json.loads(out)["ctf_deconvolution"]["wiener"] == 0.01
    assert json.loads(out)["ctf_deconvolution"]["whole"] is False
    code, _, _ = run_cli("deconvolve", src, tmp_path / "w.mrc", "--defocus", "2.5", "--whole-ctf", "--no-phase-flipped")
    assert code == 0 and read_mrc(tmp_path / "w.mrc")[1].labels[-1].endswith("whole unflipped")


def test_the_sheet_column_gives_chunk_its_defocus_and_the_optics():
    row = Tomogram("a", "a.mrc", -60.0, 60.0, defocus=3.5)
    assert row.chunk_options() == "--tilt-range -60 60 --tilt-axis y --defocus 3.5"
    optics = {"amplitude_contrast": 0.1, "voltage_kv": 200, "cs_mm": 2.0, "wiener": 0.05}
    assert row.chunk_options(optics).endswith(
        "--defocus 3.5 --amplitude-contrast 0.1 --voltage 200 --cs 2 --wiener 0.05"
    )
    assert Tomogram("b", "b.mrc", -60.0, 60.0).chunk_options(optics) == "--tilt-range -60 60 --tilt-axis y"
    whole = {**optics, "whole": True, "phase_flipped": False}
    assert row.chunk_options(whole).endswith("--wiener 0.05 --whole-ctf --no-phase-flipped")
