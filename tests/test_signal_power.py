"""Candidates brought to the data's signal power (`cryogen.model.signal_power`): the gains undo a
known blur, leave a candidate with the signal's power alone, do not depend on the candidate's
scale; the energy's gradient asks for no change of scale; D's fakes and the energy are made from
the matched candidate."""

from __future__ import annotations

import math

import pytest
import torch

from cryogen.method import posterior, step
from cryogen.method.solver import in_wedge_with_gains, wedge_signal_gains
from cryogen.model.imaging import FFT_DIMS, Wedge, apply_wedge, frequency_radius, mask_tensor, radius_tensor
from cryogen.model.noise import NoiseModel
from cryogen.model.signal_power import (
    MAX_GAIN,
    SHELLS,
    matched_to_signal,
    signal_gains,
    with_gains,
)

WEDGE = Wedge(-60, 60)
SHAPE = (8, 32, 32, 32)


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = torch.from_numpy(frequency_radius(tuple(x.shape[-3:]))).float()
    response = torch.exp(-2.0 * (math.pi * sigma * radius) ** 2)
    return torch.fft.irfftn(torch.fft.rfftn(x, dim=FFT_DIMS) * response, s=x.shape[-3:], dim=FFT_DIMS)


@pytest.fixture(scope="module")
def data():
    """White signal of std 1 observed through the wedge with white noise of std 0.3."""
    gen = torch.Generator().manual_seed(0)
    signal = torch.randn(SHAPE, generator=gen)
    noise = NoiseModel.white(0.3)
    y = apply_wedge(signal, WEDGE) + noise.sample(SHAPE, WEDGE, generator=gen)
    return signal, y, noise


def test_the_signal_itself_needs_no_gain(data):
    signal, y, noise = data
    gains = signal_gains(signal, y, WEDGE, noise)
    assert gains.shape == (SHELLS,)
    assert torch.allclose(gains, torch.ones(SHELLS), atol=0.08)


def test_the_gains_undo_a_blur(data):
    """A candidate blurred by a Gaussian of 0.7 voxels gets back about 1 / the blur per shell
    (the blur falls to 0.15 at the top shell's centre: gains up to ~7, clamped at MAX_GAIN)."""
    signal, y, noise = data
    gains = signal_gains(blurred(signal, 0.7), y, WEDGE, noise)
    centres = (torch.arange(SHELLS) + 0.5) * 0.5 / SHELLS
    expected = torch.exp(2.0 * (math.pi * 0.7 * centres) ** 2).clamp(max=MAX_GAIN)
    assert torch.allclose(gains, expected, rtol=0.15)
    assert gains[0] < gains[-1]


def test_the_match_does_not_depend_on_the_candidates_scale(data):
    signal, y, noise = data
    x = blurred(signal, 0.3)  # gains well below the cap, which no scale undoes
    assert torch.allclose(matched_to_signal(3.0 * x, y, WEDGE, noise), matched_to_signal(x, y, WEDGE, noise), atol=1e-4)


def test_no_power_no_gain_and_none_beyond_the_cap(data):
    _, y, noise = data
    assert torch.equal(signal_gains(torch.zeros(SHAPE), y, WEDGE, noise), torch.ones(SHELLS))
    assert float(signal_gains(1e-6 * torch.randn(SHAPE), y, WEDGE, noise).max()) == MAX_GAIN


def test_with_gains_is_the_identity_or_a_scale_for_flat_gains(data):
    signal, _, _ = data
    assert torch.allclose(with_gains(signal, torch.ones(SHELLS)), signal, atol=1e-5)
    assert torch.allclose(with_gains(signal, torch.full((SHELLS,), 2.0)), 2.0 * signal, atol=1e-5)


def test_the_energy_does_not_see_the_candidates_scale(data):
    """E(x) of the matched candidate is the same for c x: its gradient is orthogonal to x, so MAP
    steps never change a candidate's amplitude for the prior's sake."""
    signal, y, noise = data
    d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32**3, 1), torch.nn.Flatten(0))
    torch.nn.init.normal_(d[1].weight, std=0.01, generator=torch.Generator().manual_seed(4))
    x = blurred(signal, 0.3).requires_grad_(True)
    e = posterior.energy(d, x, WEDGE, noise, torch.Generator().manual_seed(5), data=y).sum()
    (grad,) = torch.autograd.grad(e, x)
    cosine = float((grad * x.detach()).sum() / (grad.norm() * x.detach().norm()))
    assert abs(cosine) < 1e-3
    assert float(grad.norm()) > 0  # the energy still moves the candidate, just not its scale


def test_the_energys_gradient_is_finite_where_the_data_hold_only_noise(data):
    """Data of pure noise (the model's own level: no signal power in any shell) give gains of 0,
    and the energy's gradient stays finite (a square root's gradient at 0 is not)."""
    signal, _, noise = data
    y = noise.sample(SHAPE, WEDGE, generator=torch.Generator().manual_seed(6))
    assert float(signal_gains(signal, y, WEDGE, noise).min()) == 0.0
    d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32**3, 1), torch.nn.Flatten(0))
    x = signal.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(posterior.energy(d, x, WEDGE, noise, None, data=y).sum(), x)
    assert bool(torch.isfinite(grad).all())


class Spy(torch.nn.Module):
    """A D that remembers its inputs (and scores every one 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return (self.w * x).mean((1, 2, 3))  # (B,), as Discriminator


def test_the_energy_scores_the_matched_candidate(data, monkeypatch):
    """With the data, E(x) sees x brought to their signal power: a candidate and the same scaled
    by 3 are scored alike (the same noise and rotation drawn for both)."""
    signal, y, noise = data
    x = blurred(signal, 0.3)
    d = Spy()
    e1 = posterior.energy(d, x, WEDGE, noise, torch.Generator().manual_seed(2), data=y)
    e2 = posterior.energy(d, 3.0 * x, WEDGE, noise, torch.Generator().manual_seed(2), data=y)
    assert torch.allclose(e1, e2) and torch.allclose(d.seen[0], d.seen[1], atol=1e-4)
    posterior.energy(d, 3.0 * x, WEDGE, noise, torch.Generator().manual_seed(2))  # without the data: as it is
    assert not torch.allclose(d.seen[2], d.seen[0], atol=1e-2)
    calls = []
    monkeypatch.setattr(posterior, "matched_to_signal", lambda x, y, w, n: calls.append(y) or x)
    posterior.potential(x, y, d, WEDGE, noise, 0.01, torch.Generator().manual_seed(2))
    assert len(calls) == 1 and calls[0] is y  # the posterior's energy is matched to its own data


def test_d_trains_on_fakes_made_from_the_matched_g(monkeypatch):
    """The D-step's fake is observed from matched_to_signal(g(y), y), not from g(y) itself."""
    from cryogen.method.config import TrainConfig
    from cryogen.method.patches import Sampler

    noise = NoiseModel.white(0.3)
    y = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(3))

    class One(Sampler):
        def sample(self, n, generator):
            meta = type("Meta", (), {"wedge": WEDGE})()
            return y[:n].clone(), type("Src", (), {"meta": meta, "noise": noise})()

    calls = []
    real = step.matched_to_signal
    monkeypatch.setattr(step, "matched_to_signal", lambda x, yy, w, n: calls.append((x, yy)) or real(x, yy, w, n))
    cfg = TrainConfig(batch=2, patch=16, steps=1, coarse=False)
    state = step.new_state(cfg, torch.device("cpu"))
    step.train_step(state, One(), cfg, torch.device("cpu"))
    assert len(calls) == 1
    x, yy = calls[0]
    assert torch.equal(yy, y) and x.shape == y.shape


def test_the_wedges_gains_keep_its_signal_and_leave_its_noise_out():
    """Tiles whose wedge holds a smooth signal (not wedge-confined) and white noise everywhere:
    the gains are near 1 where the signal is (low |k|), near 0 where only noise is, within [0, 1]
    and non-increasing; pure noise gets gains near 0 but in the lowest shells; `in_wedge_with_gains` leaves
    the measured region exactly as it was."""
    gen = torch.Generator().manual_seed(1)
    signal = blurred(torch.randn(SHAPE, generator=gen), 2.0)
    signal = signal / signal.std()
    noise = NoiseModel.flat(1.0, 1.0)  # white noise of std 1, in the wedge as in the measured region
    noisy = signal + torch.randn(SHAPE, generator=gen)
    gains = wedge_signal_gains(noisy, WEDGE, noise)
    assert gains.shape == (16,) and float(gains.min()) >= 0.0 and float(gains.max()) <= 1.0
    assert torch.all(gains[1:] <= gains[:-1])
    assert float(gains[1]) > 0.9 and float(gains[-4:].max()) < 0.15
    # pure noise: near 0 beyond the lowest shells (the first holds no wedge coefficient at 32^3, so 1)
    assert float(wedge_signal_gains(torch.randn(SHAPE, generator=gen), WEDGE, noise)[3:].max()) < 0.15
    out = in_wedge_with_gains(noisy, gains, WEDGE)
    measured = mask_tensor(noisy.shape, WEDGE) > 0
    f_in, f_out = torch.fft.rfftn(noisy, dim=FFT_DIMS), torch.fft.rfftn(out, dim=FFT_DIMS)
    torch.testing.assert_close(f_out[..., measured], f_in[..., measured], atol=1e-3, rtol=1e-4)
    high = ~measured & (radius_tensor(noisy.shape) > 0.3)  # only noise there
    assert float(f_out[..., high].abs().pow(2).mean()) < 0.1 * float(f_in[..., high].abs().pow(2).mean())
