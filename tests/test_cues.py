"""D's cues (`cryogen.qc.cues`): the probes change one property of D's inputs each, so a D that
keys on the structure's orientation, or on the noise, is named for it. Checked with hand-made
discriminators whose cue is known, on a tile store of a volume with a known orientation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryogen.io.mrc import write_mrc
from cryogen.method.patches import PatchSampler, open_sources
from cryogen.model.imaging import Wedge
from cryogen.qc.cues import PROBES, cue_verdict, judged_real
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
    assert cue_verdict(shares) == "D keys on the noise (the data's own noise passes where the noise model's does not)"


def test_the_probes_draw_the_same_patches_for_the_same_seed(sampler):
    a = judged_real(Smooth(), RisesAlongY(), sampler, batch=4, batches=4, seed=3)
    b = judged_real(Smooth(), RisesAlongY(), sampler, batch=4, batches=4, seed=3)
    assert a == b


@pytest.mark.parametrize(
    ("shares", "verdict"),
    [
        ((0.6, 0.55, 0.4, 0.45, 0.5), "D barely tells real from simulated patches"),
        (
            (1.0, 0.9, 0.1, 0.2, 0.3),
            "D tells real from simulated patches by neither the orientation nor the noise alone",
        ),
    ],
)
def test_verdicts_without_a_named_cue(shares, verdict):
    assert cue_verdict(dict(zip(PROBES, shares, strict=True))) == verdict
