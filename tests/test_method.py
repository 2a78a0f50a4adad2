"""The method's plumbing on tiny tiles: finite losses, exact resume, recovery from divergence,
a decreasing MAP objective, data consistency, resumable reconstruction."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cryogen.errors import CryogenError
from cryogen.io.mrc import write_mrc
from cryogen.io.store import open_store
from cryogen.method.checkpoints import load_checkpoint
from cryogen.method.config import RETIRED, TrainConfig
from cryogen.method.loop import train
from cryogen.method.posterior import langevin
from cryogen.method.solver import SolveConfig, map_estimate, posterior_std, warm_start
from cryogen.model.imaging import Wedge, apply_wedge, mask_tensor, radius_tensor
from cryogen.model.nets import NetConfig, build
from cryogen.model.noise import NoiseModel
from cryogen.restore.reconstruct import load_prior, reconstruct
from cryogen.sim.simulate import simulate
from cryogen.tiling import chunk

TINY = TrainConfig(
    steps=4, batch=2, patch=16, checkpoint_every=2, net=NetConfig(g_channels=4, g_depth=2, d_channels=4, d_layers=3)
)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("method")
    sim = simulate((24, 48, 48), Wedge(-60, 60), snr=1.0, seed=3, voxel_size=10.0)
    write_mrc(d / "obs.mrc", sim.observation, 10.0)
    chunk(d / "obs.mrc", d / "tiles.zarr", tile=24, overlap=8, wedge=Wedge(-60, 60), progress=False)
    return d / "tiles.zarr"


def _weights(ck):
    return torch.cat([v.flatten().float() for v in ck["g"].values()])


PROXY = dict(cycle_weight=1.0, adv_weight=0.02, fit_weight=0.1)  # the options off by default


@pytest.mark.parametrize(
    "options", [{}, PROXY, {**PROXY, "cycle_measured": True, "denoise_turn": 0.0}], ids=["default", "proxy", "measured"]
)
def test_training_losses_are_finite_and_curves_written(tiles, tmp_path, options):
    ck = train([tiles], tmp_path / "p.pt", replace(TINY, **options), device="cpu", progress=False)
    used = {"loss_cycle": options.get("cycle_weight", 0), "loss_adv": options.get("adv_weight", 0)}
    for key, weight in used.items():  # a term is computed exactly when it is weighted
        assert all((h[key] != 0) == bool(weight) for h in ck["history"]), key
    assert ck["step"] == 4 and len(ck["history"]) == 4
    for h in ck["history"]:
        assert all(np.isfinite(v) for v in h.values())
    assert (tmp_path / "p_curves.csv").read_text().count("\n") == 5
    assert (tmp_path / "p_curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("cut", [4, 2])  # with d_every 4: killed after a step where D trained, and after one where not
def test_resumed_run_equals_uninterrupted(tiles, tmp_path, cut):
    full = train([tiles], tmp_path / "full.pt", replace(TINY, steps=5), device="cpu", progress=False)
    train([tiles], tmp_path / "cut.pt", replace(TINY, steps=cut), device="cpu", progress=False)  # "killed" there
    resumed = train([tiles], tmp_path / "cut.pt", replace(TINY, steps=5), device="cpu", resume=True, progress=False)
    assert resumed["step"] == 5
    assert torch.equal(_weights(full), _weights(resumed))
    assert [h["loss_g"] for h in full["history"]] == [h["loss_g"] for h in resumed["history"]]


def test_resume_only_continues_the_same_job(tiles, tmp_path, caplog):
    """--resume continues a checkpoint only when the stores, the settings (training length aside)
    and the job tag match; otherwise it starts afresh, so a workflow can always pass --resume."""
    train([tiles], tmp_path / "p.pt", TINY, device="cpu", progress=False, tag="v1")
    longer = train(
        [tiles], tmp_path / "p.pt", replace(TINY, steps=6), device="cpu", resume=True, progress=False, tag="v1"
    )
    assert len(longer["history"]) == 6 and "not resuming" not in caplog.text
    for cfg, tag, why in ((replace(TINY, batch=3), "v1", "settings differ (batch)"), (TINY, "v2", "another job")):
        caplog.clear()
        ck = train([tiles], tmp_path / "p.pt", cfg, device="cpu", resume=True, progress=False, tag=tag)
        assert ck["step"] == TINY.steps and len(ck["history"]) == TINY.steps  # from step 0
        assert "not resuming" in caplog.text and why in caplog.text


def test_divergence_rolls_back_and_continues(tiles, tmp_path, monkeypatch):
    """A step that poisons g's weights with NaN (once, at step 3) is rolled back to the last good
    checkpoint with half the learning rate, and training finishes with finite weights."""
    import cryogen.method.loop as loop

    real_step, failed = loop.train_step, []

    def failing_step(state, *args, **kwargs):
        losses = real_step(state, *args, **kwargs)
        if state.step == 3 and not failed:
            failed.append(state.step)
            with torch.no_grad():
                for p in state.g.parameters():
                    p.fill_(float("nan"))
            losses["loss_g"] = float("nan")
        return losses

    monkeypatch.setattr(loop, "train_step", failing_step)
    ck = train([tiles], tmp_path / "p.pt", replace(TINY, steps=6), device="cpu", progress=False)
    assert failed == [3]
    assert ck["rollbacks"] == 1 and ck["lr_scale"] == 0.5
    assert all(torch.isfinite(v).all() for v in ck["g"].values())
    assert ck["step"] == 6
    assert all(np.isfinite(h["loss_g"]) for h in ck["history"])


def test_checkpoint_with_a_retired_setting_loads_and_resumes(tiles, tmp_path, caplog):
    """Checkpoints written when TrainConfig still had the test hook `fail_at_step` hold it in their
    settings: they load, rebuild the same config, serve as a prior and resume like any other."""
    assert "fail_at_step" in RETIRED and not hasattr(TrainConfig(), "fail_at_step")
    train([tiles], tmp_path / "p.pt", TINY, device="cpu", progress=False)
    for path in (tmp_path / "p.pt", tmp_path / "p.pt.ckpt"):  # as an older CryoGEN wrote them
        ck = torch.load(path, weights_only=True)
        ck["train"]["fail_at_step"] = None
        torch.save(ck, path)
    ck = load_checkpoint(tmp_path / "p.pt")
    assert TrainConfig.from_dict(ck["train"]) == TINY
    cfg = load_prior(tmp_path / "p.pt", torch.device("cpu")).cfg
    assert cfg == TINY
    longer = train([tiles], tmp_path / "p.pt", replace(TINY, steps=6), device="cpu", resume=True, progress=False)
    assert "not resuming" not in caplog.text  # resumed: the retired field is no difference in settings
    assert len(longer["history"]) == 6 and "fail_at_step" not in longer["train"]


def test_corrupt_or_foreign_checkpoint(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CryogenError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(CryogenError, match="not a CryoGEN prior"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"kind": "cryogen-prior", "format": 999}, tmp_path / "future.pt")
    with pytest.raises(CryogenError, match="format 999"):
        load_checkpoint(tmp_path / "future.pt")


def _problem(seed=0):
    torch.manual_seed(seed)
    wedge = Wedge(-60, 60)
    g, d = build(NetConfig(g_channels=4, d_channels=4, d_layers=3))
    d.requires_grad_(False)
    truth = torch.nn.functional.avg_pool3d(torch.randn(2, 1, 16, 16, 16), 3, 1, 1).squeeze(1) * 3
    noise = NoiseModel.white(0.3)
    gen = torch.Generator().manual_seed(seed)
    y = apply_wedge(truth, wedge) + apply_wedge(0.3 * torch.randn(truth.shape, generator=gen), wedge)
    return wedge, g, d, y, noise, gen


def test_warm_start_averages_g_over_the_wedge_flips():
    """One flip is g(y); more are the mean of g on flipped inputs flipped back, so an operator that
    commutes with them (A itself) is unchanged and one that does not (a shift) is averaged."""
    wedge = Wedge(-60, 60)
    y = torch.randn(2, 12, 12, 12, generator=torch.Generator().manual_seed(0))

    def shift(v):
        return torch.roll(v, 1, dims=-1)

    assert torch.equal(warm_start(shift, y, wedge, 1), shift(y))
    assert torch.allclose(warm_start(lambda v: apply_wedge(v, wedge), y, wedge, 8), apply_wedge(y, wedge), atol=1e-5)
    two = warm_start(shift, y, wedge, 2)  # identity and the flip of the tilt axis (y): a roll along x commutes
    assert torch.allclose(two, shift(y))
    four = warm_start(shift, y, wedge, 4)  # the half turn flips x: the roll goes the other way for half of them
    assert torch.allclose(four, (shift(y) + torch.roll(y, -1, dims=-1)) / 2, atol=1e-6)
    # an asymmetric range keeps 4 flips, whatever is asked
    assert torch.allclose(warm_start(shift, y, Wedge(-54, 62), 8), four, atol=1e-6)
    with pytest.raises(ValueError, match="flips"):
        warm_start(shift, y, wedge, 0)


def test_map_objective_decreases():
    wedge, _g, d, y, noise, gen = _problem()
    x0 = torch.zeros_like(y)
    _, trace = map_estimate(x0, y, d, wedge, noise, SolveConfig(map_steps=8, step=0.2, energy="discriminator"), gen)
    assert len(trace) == 9
    assert trace[-1] < 0.5 * trace[0]
    assert all(b <= a * 1.02 for a, b in itertools.pairwise(trace))


def test_map_result_is_consistent_with_the_data():
    wedge, _g, d, y, noise, gen = _problem(1)
    x, _ = map_estimate(
        torch.zeros_like(y), y, d, wedge, noise, SolveConfig(map_steps=40, step=0.5, energy="discriminator"), gen
    )
    resid = apply_wedge(x - y, wedge)
    # re-wedged reconstruction matches the observation to within the noise level
    assert resid.pow(2).mean().sqrt() < noise.sigma


def test_discrepancy_map_keeps_the_data_within_the_noise_and_leaves_a_denoised_start_alone():
    """Morozov's principle: a start already within the noise of y keeps its measured region (no
    re-noising, unlike the penalty); one far from y is moved onto the noise ball; the wedge moves
    by the prior alone."""
    from cryogen.method.solver import within_noise_of

    wedge, _g, d, y, noise, gen = _problem(2)
    n = y[0].numel()
    budget = noise.variance(tuple(y.shape[-3:]), wedge) * n
    far = torch.zeros_like(y)
    on_ball = within_noise_of(far, y, wedge, noise)
    resid = apply_wedge(on_ball - y, wedge).pow(2).sum((-3, -2, -1))
    assert torch.allclose(resid, torch.full_like(resid, budget), rtol=1e-4)
    assert torch.allclose(on_ball - apply_wedge(on_ball, wedge), far - apply_wedge(far, wedge), atol=1e-5)
    near = y + 0.1 * apply_wedge(torch.randn(y.shape, generator=gen), wedge)  # within the noise
    assert torch.equal(within_noise_of(near, y, wedge, noise), near)
    cfg = SolveConfig(map_steps=5, data_term="discrepancy", energy="discriminator")
    x, _ = map_estimate(near, y, d, wedge, noise, cfg, gen)
    assert float(apply_wedge(x - y, wedge).pow(2).sum((-3, -2, -1)).max()) <= budget * (1 + 1e-4)
    penalty, _ = map_estimate(near, y, d, wedge, noise, replace(cfg, data_term="penalty"), gen)
    moved_measured = apply_wedge(penalty - near, wedge).abs().mean()
    assert float(apply_wedge(x - near, wedge).abs().mean()) < float(moved_measured)
    with pytest.raises(ValueError, match="data_term"):
        map_estimate(near, y, d, wedge, noise, replace(cfg, data_term="l1"), gen)


def test_denoiser_map_moves_only_the_wedge_by_the_step_times_g_residual_there():
    """MAP under the denoiser's energy: x <- x - P_wedge(step r + low_step S(r)), r = x - g(x). With a g
    that adds c times the wedge's content (an under-filling posterior mean looking again at its own
    fill) and no blurred part, one step scales the wedge by 1 + step * c exactly and leaves the
    measured region as it was; a g that changes nothing leaves x alone (E = 0). No D, no data: only g."""
    from cryogen.method.solver import denoiser_steps

    wedge, _g, d, y, noise, gen = _problem(3)
    x0 = torch.randn(y.shape, generator=gen)
    c = 0.5

    def filler(v):  # commutes with the wedge's flips, so the flip average is itself
        return v + c * (v - apply_wedge(v, wedge))

    cfg = SolveConfig(map_steps=1, energy="denoiser", denoiser_step=0.3, denoiser_low_step=0.0)
    x, trace = denoiser_steps(x0, filler, wedge, cfg)
    measured0, wedge0 = apply_wedge(x0, wedge), x0 - apply_wedge(x0, wedge)
    assert torch.allclose(apply_wedge(x, wedge), measured0, atol=1e-5)
    assert torch.allclose(x - apply_wedge(x, wedge), (1 + 0.3 * c) * wedge0, atol=1e-5)
    assert trace == pytest.approx([float((x0 * (x0 - filler(x0))).mean() / 2)], rel=1e-5)
    two, trace2 = denoiser_steps(x0, filler, wedge, replace(cfg, map_steps=2))
    assert torch.allclose(two - apply_wedge(two, wedge), (1 + 0.3 * c) ** 2 * wedge0, atol=1e-5) and len(trace2) == 2
    same, zero = denoiser_steps(x0, lambda v: v, wedge, replace(cfg, map_steps=3))
    assert torch.equal(same, x0) and zero == [0.0, 0.0, 0.0]
    # map_estimate routes there, needs g, and names a wrong energy
    routed, _ = map_estimate(x0, y, d, wedge, noise, cfg, gen, filler)
    assert torch.equal(routed, x)
    with pytest.raises(ValueError, match="needs the network g"):
        map_estimate(x0, y, d, wedge, noise, cfg, gen)
    with pytest.raises(ValueError, match="energy"):
        map_estimate(x0, y, d, wedge, noise, replace(cfg, energy="langevin"), gen, filler)


def test_denoiser_step_is_larger_at_the_wedge_s_low_frequencies():
    """The blurred part of the step (low_step, a Gaussian of low_sigma voxels) adds to the step where
    the blur passes, at low |k|: with the filler g above, the wedge's lowest coefficients grow by
    about 1 + (step + low_step) c and its high ones by about 1 + step c, and the measured region
    still does not move."""
    from cryogen.method.solver import denoiser_steps

    wedge, _g, _d, y, _noise, gen = _problem(4)
    x0 = torch.randn(y.shape, generator=gen)
    c = 0.5

    def filler(v):
        return v + c * (v - apply_wedge(v, wedge))

    cfg = SolveConfig(map_steps=1, energy="denoiser", denoiser_step=0.3, denoiser_low_step=0.7, denoiser_low_sigma=1.5)
    x, _ = denoiser_steps(x0, filler, wedge, cfg)
    assert torch.allclose(apply_wedge(x, wedge), apply_wedge(x0, wedge), atol=1e-5)
    missing = mask_tensor(y.shape, wedge) == 0
    radius = radius_tensor(y.shape)
    f0, f1 = (torch.fft.rfftn(v - apply_wedge(v, wedge), dim=(-3, -2, -1)) for v in (x0, x))

    def gain(band):
        sel = missing & band
        return float(
            (f1[..., sel].real * f0[..., sel].real + f1[..., sel].imag * f0[..., sel].imag).sum()
            / f0[..., sel].abs().pow(2).sum()
        )

    low, high = gain((radius > 0) & (radius <= 1.5 / 16)), gain(radius >= 0.3)
    assert low > 1 + 0.3 * c + 0.5 * 0.7 * c, low  # the blur passes most of the lowest shells
    assert high == pytest.approx(1 + 0.3 * c, abs=0.03), high  # and almost none of the highest


def test_gaussian_smooth_keeps_constants_and_blurs_a_point_into_its_gaussian():
    """gaussian_smooth: sigma 0 is the identity, a constant stays constant to the float (the kernel
    sums to 1 and the edges are mirrored), a point becomes the separable Gaussian of sigma voxels
    (truncated at 3 sigma) with its mass kept, and a checkerboard (Nyquist) all but vanishes."""
    from cryogen.method.solver import gaussian_smooth

    x = torch.randn(2, 12, 14, 16)
    assert torch.equal(gaussian_smooth(x, 0.0), x)
    assert torch.allclose(gaussian_smooth(torch.full((1, 12, 14, 16), 2.5), 1.5), torch.tensor(2.5), atol=1e-5)
    point = torch.zeros(1, 21, 21, 21)
    point[0, 10, 10, 10] = 1.0
    blurred = gaussian_smooth(point, 2.0)
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5)
    t = torch.arange(-10, 11, dtype=torch.float32)
    profile = torch.exp(-(t**2) / 8) * (t.abs() <= 6)  # truncated at 3 sigma
    profile = profile / profile.sum()
    assert torch.allclose(blurred[0, :, 10, 10], profile * profile[10] ** 2, atol=1e-6)
    idx = torch.arange(16)
    checker = ((idx[:, None, None] + idx[None, :, None] + idx[None, None, :]) % 2 * 2 - 1).float()[None]
    assert float(gaussian_smooth(checker, 1.5).abs().max()) < 0.01


class _Identity(torch.nn.Module):
    """A g that returns its input, with the size multiple a U-Net of depth 3 needs."""

    multiple = 8

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v


def test_coarse_fill_replaces_only_the_wedge_below_the_cutoff_with_g_at_half_resolution():
    """coarse_fill: cutoff 0 is the identity; otherwise the result differs from x0 only in the
    missing wedge below the cutoff, and there it is g of the 2x-binned data, upsampled. With g the
    identity and data holding a smooth pattern, the low wedge of x0 = 0 becomes the data's own
    (binning and trilinear upsampling pass these frequencies almost whole). A binned tile that is
    not a multiple of g's (40 -> 20, multiple 8) is padded and cropped; odd tiles are refused."""
    from cryogen.method.solver import coarse_fill

    wedge = Wedge(-60, 60)
    g = _Identity()
    z, _, x = torch.meshgrid(*[torch.arange(40, dtype=torch.float32)] * 3, indexing="ij")
    smooth = torch.cos(2 * torch.pi * z / 40) + 0.5 * torch.cos(2 * torch.pi * (z + x) / 40)
    noisy = smooth + 0.3 * torch.randn(2, 40, 40, 40, generator=torch.Generator().manual_seed(0))
    x0 = torch.randn(noisy.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(coarse_fill(g, noisy, x0, wedge, 0.0, flips=4), x0)
    out = coarse_fill(g, noisy, x0, wedge, 0.05, flips=4)
    assert out.shape == x0.shape
    missing = mask_tensor(x0.shape, wedge) == 0
    low = missing & (radius_tensor(x0.shape) < 0.05)
    change = torch.fft.rfftn(out - x0, dim=(-3, -2, -1))
    assert float(change[..., ~low].abs().max()) < 1e-3 * float(change[..., low].abs().max())
    filled = torch.fft.rfftn(coarse_fill(g, noisy, torch.zeros_like(x0), wedge, 0.05), dim=(-3, -2, -1))
    data = torch.fft.rfftn(noisy, dim=(-3, -2, -1))
    err = (filled[..., low] - data[..., low]).abs().pow(2).sum() / data[..., low].abs().pow(2).sum()
    assert float(err) < 0.01, float(err)
    with pytest.raises(ValueError, match="even"):
        coarse_fill(g, noisy[..., :39], x0[..., :39], wedge, 0.05)

    def never(v: torch.Tensor) -> torch.Tensor:
        raise AssertionError("g ran although the band holds no coefficient")

    small = torch.randn(1, 32, 32, 32)  # its first coefficient is at 1/32 > 0.03: nothing to fill
    assert coarse_fill(never, small, small, wedge, 0.03) is small


def test_reconstruct_s_coarse_fill_changes_only_the_low_wedge_of_g_y(tiles, tmp_path):
    """reconstruct applies the coarse fill to g(y) (the tiles here are small: a cutoff that reaches
    their first Fourier shells) and not with cutoff 0; with posterior samples after it (gradients
    through the wedge masks it cached) it runs."""
    train([tiles], tmp_path / "p.pt", replace(TINY, steps=40, lr_g=1e-2), device="cpu", progress=False)
    _, meta = open_store(tiles)
    out = {}
    runs = (
        ("plain", SolveConfig(map_steps=0, coarse_cutoff=0.0)),
        ("coarse", SolveConfig(map_steps=0, coarse_cutoff=0.2)),
    )
    for name, cfg in runs:
        reconstruct(tiles, tmp_path / "p.pt", tmp_path / f"{name}.zarr", cfg, device="cpu", progress=False)
        out[name] = torch.from_numpy(open_store(tmp_path / f"{name}.zarr")[0]["tiles"][:])
    change = torch.fft.rfftn(out["coarse"] - out["plain"], dim=(-3, -2, -1))
    low = (mask_tensor(out["plain"].shape, meta.wedge) == 0) & (radius_tensor(out["plain"].shape) < 0.2)
    assert float(change[..., low].abs().max()) > 1e-4 * float(
        torch.fft.rfftn(out["plain"], dim=(-3, -2, -1)).abs().max()
    )
    assert float(change[..., ~low].abs().max()) < 1e-3 * float(change[..., low].abs().max())
    cfg = SolveConfig(map_steps=1, energy="discriminator", samples=1, sample_steps=1, coarse_cutoff=0.2)
    reconstruct(tiles, tmp_path / "p.pt", tmp_path / "s.zarr", cfg, device="cpu", progress=False)


def test_reconstruct_with_the_denoiser_energy_changes_only_the_wedge_of_g_y(tiles, tmp_path):
    """reconstruct hands its prior's g to the denoiser's MAP: every restored tile differs from g(y)
    inside the missing wedge and nowhere else."""
    train([tiles], tmp_path / "p.pt", replace(TINY, steps=40, lr_g=1e-2), device="cpu", progress=False)
    _, meta = open_store(tiles)
    out = {}
    for name, cfg in (("g", SolveConfig(map_steps=0)), ("map", SolveConfig(map_steps=1, energy="denoiser"))):
        reconstruct(tiles, tmp_path / "p.pt", tmp_path / f"{name}.zarr", cfg, device="cpu", progress=False)
        out[name] = torch.from_numpy(open_store(tmp_path / f"{name}.zarr")[0]["tiles"][:])
    diff = out["map"] - out["g"]
    moved = float(diff.abs().max())  # a young g barely fills: small, but far above float rounding (~1e-7)
    assert moved > 1e-5 * float(out["g"].abs().max())
    assert float(apply_wedge(diff, meta.wedge).abs().max()) < 0.01 * moved


def test_posterior_std_is_larger_inside_the_wedge():
    wedge, _g, d, y, noise, gen = _problem(2)
    x, _ = map_estimate(y, y, d, wedge, noise, SolveConfig(map_steps=2, energy="discriminator"), gen)
    s = posterior_std(x, y, d, wedge, noise, SolveConfig(samples=6, sample_steps=3, step=0.2), gen)
    assert s.shape == y.shape and torch.isfinite(s).all() and (s > 0).all()
    # the spread of the samples lives mostly in the missing wedge, where the data say nothing
    sample = langevin(x, y, d, wedge, noise, 1.0, 12, 0.2, gen)
    power = torch.fft.rfftn(sample - x, dim=(-3, -2, -1)).abs().pow(2)
    measured = mask_tensor(y.shape, wedge).bool()
    share_missing = float(power[..., ~measured].sum() / power.sum())
    assert share_missing > 0.6, share_missing  # the wedge is only ~1/3 of the coefficients


def test_reconstruct_resumes_and_matches_uninterrupted(tiles, tmp_path):
    train([tiles], tmp_path / "p.pt", TINY, device="cpu", progress=False)
    cfg = SolveConfig(map_steps=2, samples=2, sample_steps=1)
    reconstruct(tiles, tmp_path / "p.pt", tmp_path / "a.zarr", cfg, device="cpu", batch=2, progress=False)
    _, meta = open_store(tiles)
    # a run "killed" after the first tiles leaves only a partial store, not the output
    reconstruct(
        tiles, tmp_path / "p.pt", tmp_path / "b.zarr", cfg, device="cpu", batch=2, progress=False, max_batches=1
    )
    assert not (tmp_path / "b.zarr").exists() and (tmp_path / ".b.zarr.partial").exists()
    reconstruct(tiles, tmp_path / "p.pt", tmp_path / "b.zarr", cfg, device="cpu", batch=2, progress=False)
    ga, _ = open_store(tmp_path / "a.zarr")
    gb, _ = open_store(tmp_path / "b.zarr")
    assert np.array_equal(ga["tiles"][:], gb["tiles"][:])
    assert np.array_equal(ga["std"][:], gb["std"][:])
    assert ga["tiles"].shape[0] == meta.n_tiles


@pytest.mark.parametrize(
    "cfg",
    [
        SolveConfig(map_steps=0),
        SolveConfig(),
        SolveConfig(map_steps=1, samples=1, sample_steps=1, energy="discriminator"),
    ],
    ids=["g-only", "default", "map-std"],
)
def test_overlapped_io_gives_the_serial_result_and_keeps_work_on_error(tiles, tmp_path, monkeypatch, cfg):
    """The GPU path (read and write in background threads) restores the same bytes as the serial
    path, and a failed write stops it with the batches before it kept for the rerun."""
    import errno

    from cryogen.restore.reconstruct import TileRestorer

    train([tiles], tmp_path / "p.pt", TINY, device="cpu", progress=False)

    def run(out, **kw):
        return reconstruct(tiles, tmp_path / "p.pt", tmp_path / out, cfg, device="cpu", batch=2, progress=False, **kw)

    run("serial.zarr", overlap=False)
    run("overlap.zarr", overlap=True)
    save, calls = TileRestorer.save, []

    def failing_save(self, idx, result):
        if self.network == "g":  # the tiles' batches, not the coarse level's (restored first for the context fill)
            calls.append(idx)
            if len(calls) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, idx, result)

    monkeypatch.setattr(TileRestorer, "save", failing_save)
    with pytest.raises(CryogenError, match="the 4 tiles done so far are kept"):
        run("failed.zarr", overlap=True)
    monkeypatch.setattr(TileRestorer, "save", save)
    run("failed.zarr", overlap=True)
    arrays = ("tiles", "std") if cfg.samples else ("tiles",)
    serial = open_store(tmp_path / "serial.zarr")[0]
    for out in ("overlap.zarr", "failed.zarr"):
        group = open_store(tmp_path / out)[0]
        for name in arrays:
            assert np.array_equal(serial[name][:], group[name][:]), (out, name)


def test_d_separates_needs_a_full_window_of_perfect_steps():
    from cryogen.method.loop import SEPARATION_WINDOW, d_separates

    perfect = {"d_acc_real": 1.0, "d_acc_fake": 1.0}
    assert not d_separates([perfect] * (SEPARATION_WINDOW - 1))
    miss = {"d_acc_real": 1.0, "d_acc_fake": 0.75}
    assert d_separates([miss] * 10 + [perfect] * (SEPARATION_WINDOW - 10))
    assert not d_separates([miss] * 11 + [perfect] * (SEPARATION_WINDOW - 11))


@pytest.mark.integration
def test_data_unlike_the_imaging_model_is_named(tmp_path, caplog):
    """An isotropic, noise-free volume chunked as if it had a +-60 wedge: D tells real tiles from
    simulated observations at once, and training says why instead of failing obscurely."""
    from scipy.ndimage import gaussian_filter

    # sigma 1 (not smoother): enough power inside the wedge that D separates within the run for
    # any seed (at sigma 1.5 one seed in three stayed just under the warning's threshold)
    vol = gaussian_filter(np.random.default_rng(0).standard_normal((24, 48, 48)).astype(np.float32), 1.0)
    write_mrc(tmp_path / "iso.mrc", vol, 10.0)
    chunk(
        tmp_path / "iso.mrc",
        tmp_path / "iso.zarr",
        tile=24,
        overlap=8,
        wedge=Wedge(-60, 60),
        progress=False,
        check_geometry=False,
    )
    try:
        train(
            [tmp_path / "iso.zarr"],
            tmp_path / "p.pt",
            TrainConfig(steps=300, batch=2, patch=16, checkpoint_every=100, d_every=1),  # D on every step
            device="cpu",
            progress=False,
        )
    except CryogenError as exc:  # diverging afterwards is fine, as long as the cause is named
        assert "the imaging model (wedge and noise) misses something" in str(exc)
    assert "tells every real tile from its simulated observations" in caplog.text


def test_progress_with_a_time_budget_counts_seconds_not_a_billion_steps(tiles, tmp_path, capsys):
    """A budgeted run's step count is only a bound: its bar shows time spent against the budget."""
    train([tiles], tmp_path / "p.pt", replace(TINY, steps=10**9, time_budget=1.0), device="cpu", progress=True)
    err = capsys.readouterr().err
    assert "s of the budget" in err and "step=" in err
    assert "1000000000" not in err and "1e+09" not in err
    with warnings.catch_warnings(record=True) as caught:  # a budget of 1.4 s is a bar of 1 s
        warnings.simplefilter("always")
        train([tiles], tmp_path / "r.pt", replace(TINY, steps=10**9, time_budget=1.4), device="cpu", progress=True)
    assert not [w for w in caught if "clamping frac" in str(w.message)]
    assert "-00:00" not in capsys.readouterr().err
    train([tiles], tmp_path / "q.pt", replace(TINY, steps=3), device="cpu", progress=True)
    assert "3/3" in capsys.readouterr().err  # without a budget, steps against the step count


def test_turned_recorrupted_pairs_ask_g_to_fill_the_wedge():
    """Turned pairs are compared where the turned data were measured, which reaches into the
    input's missing wedge: a g that only passes its (re-wedged) input through is penalised there,
    a g that returns the turned isotropic truth much less, and without turns the loss leaves the
    wedge alone (a pass-through costs nothing on noise-free data)."""
    from cryogen.method.step import recorrupted_loss
    from cryogen.model.rotations import rotate_interp, tilt_axis_matrices

    gen = torch.Generator().manual_seed(0)
    wedge = Wedge(-60, 60)
    x = torch.nn.functional.avg_pool3d(torch.randn(2, 1, 24, 24, 24, generator=gen), 3, 1, 1)[:, 0]  # smooth
    y = apply_wedge(x, wedge)
    quiet = NoiseModel.white(1e-6)
    turns = torch.tensor([45.0, -60.0])

    def passthrough(v):
        return v

    def oracle(v):  # knows the turn and the truth: the ideal wedge-filling g
        return rotate_interp(x, tilt_axis_matrices(turns, "y"), padding="reflection")

    args = (y, wedge, quiet, 1.0, torch.Generator().manual_seed(1))
    scale = y.pow(2).mean()
    assert recorrupted_loss(passthrough, *args) < 1e-6 * scale
    assert recorrupted_loss(passthrough, *args, turns) > 0.05 * scale
    # not 0: the cylinder that the turn keeps has a hard edge, which leaks some of the wedge's
    # error into the compared region
    assert recorrupted_loss(oracle, *args, turns) < 0.5 * recorrupted_loss(passthrough, *args, turns)


def test_fill_weight_weighs_the_turned_loss_where_it_lies_in_the_input_wedge():
    """TrainConfig.fill_weight w scales the part of the turned loss that lies in the input's
    missing wedge: the loss is L_measured + w L_wedge, so it grows linearly in w (not as w^2), and
    without a turn, where the compared region is the measured one, w changes nothing."""
    from cryogen.method.step import recorrupted_loss

    gen = torch.Generator().manual_seed(0)
    wedge = Wedge(-60, 60)
    x = torch.nn.functional.avg_pool3d(torch.randn(2, 1, 24, 24, 24, generator=gen), 3, 1, 1)[:, 0]
    y = apply_wedge(x, wedge)
    noise = NoiseModel.white(0.1)

    def loss(weight: float, turns: torch.Tensor) -> float:
        return float(
            recorrupted_loss(lambda v: v, y, wedge, noise, 1.0, torch.Generator().manual_seed(1), turns, weight)
        )

    turns = torch.tensor([45.0, -60.0])
    one, three, five = loss(1.0, turns), loss(3.0, turns), loss(5.0, turns)
    assert three > 1.2 * one
    assert five - one == pytest.approx(2 * (three - one), rel=1e-3)
    still = torch.zeros(2)
    assert loss(5.0, still) == pytest.approx(loss(1.0, still), rel=1e-5)


def test_refined_turns_show_g_the_input_measured_as_fully_as_the_data():
    """With `refine` the input's own wedge is filled by g(y) before the turn, so the turned,
    re-wedged input holds the turned truth over the whole measured region (an oracle fill gives
    exactly A T x), where without it the turn leaves part of that region empty; the fill is no
    answer key: a g that passes that input through is still penalised inside the wedge."""
    from cryogen.method.step import recorrupted_loss
    from cryogen.model.rotations import rotate_interp, tilt_axis_matrices

    gen = torch.Generator().manual_seed(0)
    wedge = Wedge(-60, 60)
    x = torch.nn.functional.avg_pool3d(torch.randn(2, 1, 24, 24, 24, generator=gen), 3, 1, 1)[:, 0]
    y = apply_wedge(x, wedge)
    quiet = NoiseModel.white(1e-6)
    turns = torch.tensor([45.0, -60.0])

    seen: list[torch.Tensor] = []

    def passthrough(v):
        seen.append(v)
        return v

    def g_input(fill: torch.Tensor | None) -> torch.Tensor:
        seen.clear()
        recorrupted_loss(passthrough, y, wedge, quiet, 1.0, torch.Generator().manual_seed(1), turns, 1.0, fill)
        return seen[-1]

    full = apply_wedge(rotate_interp(x, tilt_axis_matrices(turns, "y"), padding="reflection"), wedge)
    scale = full.pow(2).mean()
    assert (g_input(x) - full).pow(2).mean() < 1e-4 * scale  # the oracle's fill: the truth
    assert (g_input(None) - full).pow(2).mean() > 0.05 * scale
    args = (y, wedge, quiet, 1.0, torch.Generator().manual_seed(1), turns, 1.0, x)
    assert recorrupted_loss(passthrough, *args) > 0.05 * y.pow(2).mean()


def test_refinement_fills_from_g_before_its_update(tiles, tmp_path):
    """train_step hands recorrupted_loss g(y) as the fill (the same pass D's fake uses) only with
    `refine`, and a refined run trains (finite losses) and records the setting in its prior."""
    from cryogen.method import step as step_module

    fills: list[torch.Tensor | None] = []
    original = step_module.recorrupted_loss

    def spy(*args, **kwargs):
        fills.append(args[8] if len(args) > 8 else kwargs.get("fill"))
        return original(*args, **kwargs)

    step_module.recorrupted_loss = spy
    try:
        for refine in (True, False):
            ck = train(
                [tiles],
                tmp_path / f"{refine}.pt",
                replace(TINY, steps=2, refine=refine, coarse=False),  # g's own steps only
                device="cpu",
                progress=False,
            )
            assert ck["train"]["refine"] is refine
    finally:
        step_module.recorrupted_loss = original
    assert all(f is not None and not f.requires_grad for f in fills[:2]) and fills[2:] == [None, None]


def test_fill_weight_must_be_positive_and_old_priors_read_as_unweighted():
    from cryogen.method.loop import check_settings

    with pytest.raises(CryogenError, match="fill_weight must be positive, not 0"):
        check_settings(replace(TrainConfig(), fill_weight=0.0))
    old = TrainConfig().to_dict()
    del old["fill_weight"]  # a prior saved before the weight existed trained with the loss unweighted
    assert TrainConfig.from_dict(old).fill_weight == 1.0
    del old["refine"]  # ... and one saved before the refined turns trained without them
    assert TrainConfig.from_dict(old).refine is False
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


def test_learning_rate_follows_a_cosine_to_lr_final_over_steps_or_budget(tiles, tmp_path):
    from cryogen.method.loop import run_progress
    from cryogen.method.step import lr_factor

    cfg = replace(TINY, steps=9, lr_final=0.1)
    assert lr_factor(cfg, 0.0) == pytest.approx(1.0)
    assert lr_factor(cfg, 0.5) == pytest.approx(0.55)
    assert lr_factor(cfg, 1.0) == pytest.approx(0.1) == lr_factor(cfg, 2.0)
    assert run_progress(cfg, 3, 0.0) == pytest.approx(1 / 3)
    budgeted = replace(cfg, time_budget=10.0)
    assert run_progress(budgeted, 3, 8.0) == pytest.approx(0.8)  # the nearer end wins
    assert run_progress(budgeted, 9, 1.0) == 1.0
    ck = train([tiles], tmp_path / "p.pt", cfg, device="cpu", progress=False)
    lrs = [h["lr_g"] for h in ck["history"]]
    assert lrs == pytest.approx([cfg.lr_g * lr_factor(cfg, s / 9) for s in range(9)])
    const = train([tiles], tmp_path / "c.pt", replace(TINY, steps=3), device="cpu", progress=False)
    assert [h["lr_g"] for h in const["history"]] == pytest.approx([TINY.lr_g] * 3)


@pytest.mark.parametrize("adv_weight", [0.0, 0.1])
def test_d_trains_every_d_every_th_step_unless_g_trains_against_it(tiles, adv_weight):
    """D is the energy of MAP and the std map; while g does not train against it, updating it on
    every 4th step saves a quarter of the step. g still learns on every step, the history keeps
    one row per step (D's latest figures carried), and with an adversarial term D trains always."""
    from cryogen.method import step as stepmod
    from cryogen.method.patches import PatchSampler, open_sources

    cfg = replace(TINY, d_every=4, adv_weight=adv_weight, coarse=False)  # D's schedule: the coarse network aside
    state = stepmod.new_state(cfg, torch.device("cpu"))
    sampler = PatchSampler(open_sources([tiles]), cfg.patch)
    d_moved, g_moved = [], []
    for _ in range(8):
        d0 = [p.detach().clone() for p in state.d.parameters()]
        g0 = [p.detach().clone() for p in state.g.parameters()]
        row = stepmod.train_step(state, sampler, cfg, torch.device("cpu"))
        state.history.append(row)  # as the training loop does: D's figures are carried from it
        d_moved.append(any(not torch.equal(a, b) for a, b in zip(d0, state.d.parameters(), strict=True)))
        g_moved.append(any(not torch.equal(a, b) for a, b in zip(g0, state.g.parameters(), strict=True)))
        assert {"loss_d", "d_acc_real", "d_acc_fake"} <= set(row)
    assert all(g_moved)
    assert d_moved == ([True] * 8 if adv_weight else [True, False, False, False] * 2)


@pytest.mark.parametrize("wedge", [Wedge(-66, 57, "y"), Wedge(-50, 60, "x")])
def test_d_sees_every_other_real_patch_half_turned_about_the_tilt_axis(wedge):
    """D's real patches: every other one turned 180 degrees about the tilt axis (the beam and the
    in-plane axis flipped), which keeps the wedge, even an asymmetric one (A commutes with it), so
    the turned patch is as much a real observation; the rest untouched."""
    from cryogen.method.step import half_turned

    y = torch.randn(4, 8, 10, 12, generator=torch.Generator().manual_seed(0))
    turned = half_turned(y, wedge.tilt_axis)
    assert torch.equal(turned[0::2], y[0::2])
    inplane = -1 if wedge.tilt_axis == "y" else -2
    assert torch.equal(turned[1::2], torch.flip(y[1::2], (-3, inplane)))
    assert torch.allclose(apply_wedge(turned, wedge), half_turned(apply_wedge(y, wedge), wedge.tilt_axis), atol=1e-5)
    assert not torch.allclose(apply_wedge(turned, wedge), turned, atol=1e-2)  # the wedge does act here


def test_training_after_restoring_in_the_same_process():
    """The operators cache their masks, radii and noise spectra per shape. A cache first filled
    while restoring (under torch.inference_mode) held inference tensors, which autograd refuses:
    the next training step in the same process (a notebook that restores, then trains) failed.
    A wedge and a shape no other test uses, so these caches start empty here."""
    from cryogen.method.step import recorrupted_loss

    wedge = Wedge(-57, 53)
    noise = NoiseModel.white(0.3)
    g, _ = build(NetConfig())
    y = torch.randn(2, 20, 20, 20, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():  # as reconstruct restores: every cached operator is made here
        g(apply_wedge(y, wedge) + noise.sample(tuple(y.shape), wedge, generator=torch.Generator().manual_seed(1)))
        radius_tensor(y.shape)
        for t in (0.0, 10.0, -20.0):
            mask_tensor(y.shape, wedge, turn=t)
    loss = recorrupted_loss(g, y, wedge, noise, 1.0, torch.Generator().manual_seed(2), torch.tensor([10.0, -20.0]), 3.0)
    loss.backward()
    assert all(p.grad is not None for p in g.parameters())
    z = y.clone().requires_grad_(True)
    (apply_wedge(z, wedge) * radius_tensor(z.shape).mean()).sum().backward()
    assert z.grad is not None
