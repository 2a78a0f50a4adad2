"""D's cues (`cryogen.qc.cues`): the probes change one property of D's inputs each, so a D that
keys on the structure's orientation, on the noise, or on the content's sharpness is named for it.
Checked with hand-made discriminators whose cue is known, on tile stores of volumes with a known
orientation or known sharp edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryogen.io.mrc import write_mrc
from cryogen.method.patches import PatchSampler, open_sources
from cryogen.model.imaging import Wedge, apply_wedge, frequency_radius, wedge_mask
from cryogen.model.noise import NoiseModel
from cryogen.qc.cues import PROBES, cue_verdict, judged_real, smoothed
from cryogen.tiling import chunk


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    """Patches of a volume whose density rises along y (the tilt axis), with white noise of std 0.2."""
    tmp = tmp_path_factory.mktemp("cues")
    rng = np.random.default_rng(0)
    shape = (32, 64, 64)
    ramp = np.broadcast_to(np.linspace(-3, 3, shape[1], dtype=np.float32)[None, :, None], shape)
    mrc, store = tmp / "ramp.mrc", tmp / "ramp.zarr"
    write_mrc(mrc, ramp + 0.2 * rng.standard_normal(shape).astype(np.float32), 10.0)
    chunk(mrc, store, tile=32, overlap=8, wedge=Wedge(-60, 60), progress=False, check_geometry=False)
    return PatchSampler(open_sources([store]), 16)


class Smooth(torch.nn.Module):
    """A stand-in g: the input averaged over 3^3 voxels (keeps the ramp, removes most noise)."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool3d(y.unsqueeze(1), 3, stride=1, padding=1, count_include_pad=False).squeeze(
            1
        )


class RisesAlongY(torch.nn.Module):
    """A D that keys on orientation only: real when the density rises along y."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :, -4:].mean((1, 2, 3)) - x[:, :, :4].mean((1, 2, 3))).reshape(-1, 1)


class Rough(torch.nn.Module):
    """A D that keys on the noise only: real when the voxel-to-voxel differences along x are as
    small as the data's (white noise of std 0.2: their mean square 0.08)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.15 - (x[..., 1:] - x[..., :-1]).pow(2).mean((1, 2, 3))).reshape(-1, 1)


def test_a_d_that_keys_on_orientation_is_named_for_it(sampler):
    shares = judged_real(Smooth(), RisesAlongY(), sampler, batch=4, batches=16)
    assert set(shares) == set(PROBES)
    assert shares["real"] == 1.0 and shares["real, flipped"] == 0.0  # a flip along y reverses the ramp
    assert shares["simulated, not rotated"] == 1.0  # the model's noise is no cue to it
    assert shares["simulated"] < 0.6  # the cube rotations turn the ramp away from +y most of the time
    assert cue_verdict(shares).startswith("D keys on the structure's orientation")
    assert "noise" not in cue_verdict(shares)


def test_a_d_that_keys_on_the_noise_is_named_for_it(sampler, monkeypatch):
    """The store's noise model says the noise is 3x stronger than it is: D, which knows the data's
    roughness, calls the model's noise fake and the data's own (swapped in) real."""
    src = sampler.sources[0]
    monkeypatch.setattr(src, "noise", src.noise.scaled(3.0))
    shares = judged_real(Smooth(), Rough(), sampler, batch=4, batches=16)
    assert shares["real"] == 1.0 and shares["real, flipped"] == 1.0
    assert shares["simulated, not rotated"] == 0.0 and shares["simulated"] == 0.0
    assert shares["simulated, the data's noise"] == 1.0
    # the smoothed tiles fail too (their lost power is made up from the too-strong model), but
    # with the noise named that says nothing of the sharpness
    assert shares["real, smoothed"] == 0.0
    assert cue_verdict(shares) == "D keys on the noise (the data's own noise passes where the noise model's does not)"


def test_the_probes_draw_the_same_patches_for_the_same_seed(sampler):
    a = judged_real(Smooth(), RisesAlongY(), sampler, batch=4, batches=4, seed=3)
    b = judged_real(Smooth(), RisesAlongY(), sampler, batch=4, batches=4, seed=3)
    assert a == b


@pytest.mark.parametrize(
    ("shares", "verdict"),
    [
        ((0.6, 0.55, 0.55, 0.4, 0.45, 0.5), "D barely tells real from simulated patches"),
        (
            (1.0, 0.9, 0.9, 0.1, 0.2, 0.3),
            "D tells real from simulated patches by none of the orientation, the noise or the sharpness alone",
        ),
    ],
)
def test_verdicts_without_a_named_cue(shares, verdict):
    assert cue_verdict(dict(zip(PROBES, shares, strict=True))) == verdict


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    """Patches of a volume of 4-voxel cubes of density +-1, their edges softened by a Gaussian of
    0.8 voxels (power up to ~0.3 cycles per voxel, little in the noise band the noise model is
    read from), their missing wedge (+-60 degrees) removed, with white noise of std 0.2."""
    tmp = tmp_path_factory.mktemp("blocks")
    rng = np.random.default_rng(1)
    shape = (32, 64, 64)
    cells = rng.choice([-1.0, 1.0], size=tuple(s // 4 for s in shape)).astype(np.float32)
    blocks = np.fft.rfftn(np.kron(cells, np.ones((4, 4, 4), np.float32)))
    soft = np.exp(-2.0 * (np.pi * 0.8 * frequency_radius(shape)) ** 2)  # little power left at the noise band
    measured = wedge_mask(shape, Wedge(-60, 60))  # observed as the store says: its wedge empty
    volume = np.fft.irfftn(blocks * soft * measured, s=shape).astype(np.float32)
    mrc, store = tmp / "blocks.mrc", tmp / "blocks.zarr"
    write_mrc(mrc, volume + 0.2 * rng.standard_normal(shape).astype(np.float32), 10.0)
    chunk(mrc, store, tile=32, overlap=8, wedge=Wedge(-60, 60), progress=False, check_geometry=False)
    return PatchSampler(open_sources([store]), 16)


class SharpEdges(torch.nn.Module):
    """A D that keys on the content's sharpness only: real when the power between 0.15 and 0.3
    cycles per voxel (the blocks' edges; the noise's share there is small) exceeds a threshold."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (band_power(x) - self.threshold).reshape(-1, 1)


def band_power(x: torch.Tensor) -> torch.Tensor:
    radius = torch.from_numpy(frequency_radius(tuple(x.shape[-3:]))).float()
    band = (radius > 0.15) & (radius < 0.3)
    return torch.fft.rfftn(x, dim=(-3, -2, -1)).abs().pow(2)[..., band].mean(-1) / x[0].numel()


def test_a_d_that_keys_on_the_sharpness_is_named_for_it_and_the_matched_proxy_passes(blocks, monkeypatch):
    """D calls the blocks real and the same blurred (their noise power kept) fake. The proxy is
    made from a g that blurs (Smooth): brought to the data's signal power, its edges pass. (The
    store's noise model is set to the true one: the test is of the probes, not of chunk's
    estimate, which on a volume without a missing wedge reads its level high.)"""
    monkeypatch.setattr(blocks.sources[0], "noise", NoiseModel.white(0.2))
    gen = torch.Generator().manual_seed(0)
    y, src = blocks.sample(16, gen)
    sharp = float(band_power(y).mean())
    blurred = float(band_power(smoothed(y, src.meta.wedge, src.noise, gen)).mean())
    assert blurred < 0.6 * sharp
    shares = judged_real(Smooth(), SharpEdges(0.5 * (sharp + blurred)), blocks, batch=4, batches=16)
    assert shares["real"] == 1.0 and shares["real, flipped"] == 1.0
    assert shares["real, smoothed"] == 0.0
    assert shares["simulated, not rotated"] >= 0.75  # (turned, Smooth's empty wedge shows: fewer pass)
    # without the matching, Smooth's output fails
    seen = apply_wedge(Smooth()(y), src.meta.wedge) + src.noise.sample(tuple(y.shape), src.meta.wedge, generator=gen)
    assert float(band_power(seen).mean()) < 0.5 * (sharp + blurred)
    assert cue_verdict(shares).startswith("D keys on the content's sharpness")
