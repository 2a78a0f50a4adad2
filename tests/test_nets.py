"""The networks' structure: g's upsampling leaves no plane-to-plane striping, and priors saved
before the choice existed still rebuild the network they were trained with."""

from __future__ import annotations

import pytest
import torch

from cryogen.method.config import TrainConfig
from cryogen.model.nets import NetConfig, UNet3d, build


def _z_alternation(upsample: str) -> float:
    """How much the mean of each z plane of g(constant) - constant alternates in sign from one
    plane to the next, relative to the output's level, for a g with random weights (its output layer too): a structural property."""
    torch.manual_seed(0)
    g = UNet3d(4, 2, upsample)
    torch.nn.init.normal_(g.out.weight, std=0.1)
    with torch.no_grad():
        out = g(torch.ones(1, 32, 32, 32))[0, 4:-4, 4:-4, 4:-4] - 1  # away from the zero-padded border
    means = out.mean(dim=(1, 2))
    sign = (-1.0) ** torch.arange(len(means))
    return float((sign * means).mean().abs() / (out.abs().mean() + 1e-12))  # kz-Nyquist amplitude


def test_default_upsampling_leaves_no_z_striping():
    """Real tomograms restored with the transposed convolution carried plane-to-plane striping
    along z (a bright kz-axis line in the spectrum); the default decoder must not make it."""
    assert NetConfig().g_upsample == "linear"
    assert _z_alternation("linear") < 0.002
    assert _z_alternation("transpose") > 0.005  # the cause, so this test can tell the two apart


def test_priors_saved_before_the_choice_rebuild_the_transposed_decoder():
    old = TrainConfig().to_dict()
    del old["net"]["g_upsample"]
    cfg = TrainConfig.from_dict(old)
    assert cfg.net.g_upsample == "transpose"
    g_old, _ = build(cfg.net)
    g_new, _ = build(NetConfig())
    assert isinstance(g_old.up[0], torch.nn.ConvTranspose3d)
    g_old.load_state_dict(g_old.state_dict())  # its own weights load; the new layout's do not
    with pytest.raises(RuntimeError):
        g_old.load_state_dict(g_new.state_dict())
    assert TrainConfig.from_dict(TrainConfig().to_dict()).net == NetConfig()


def test_unknown_upsampling_is_refused():
    with pytest.raises(ValueError, match="upsample"):
        UNet3d(4, 2, "pixelshuffle")


def test_linear_upsampling_convolves_before_interpolating_with_the_same_result():
    """The decoder's 1x1x1 convolution runs before the trilinear interpolation (8x fewer voxels):
    the same function as interpolating first, and the same parameter names, so priors saved with
    either order load and restore alike."""
    torch.manual_seed(0)
    g = UNet3d(4, 2, "linear")
    for p in g.parameters():
        torch.nn.init.normal_(p, std=0.3)  # non-zero biases too: they must commute as well
    up = g.up[0]
    h = torch.randn(2, 16, 5, 6, 7)  # the deepest level: 4 x 2**2 channels in, 8 out
    with torch.no_grad():
        interpolate_first = up[1](up[0](h))
    seen: list[tuple[int, ...]] = []
    up[1].register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        out = up(h)
    assert seen == [tuple(h.shape)]  # the convolution saw the coarse grid
    assert torch.allclose(out, interpolate_first, atol=1e-5 * float(interpolate_first.abs().max()))
    assert out.shape == (2, 8, 10, 12, 14)
    assert {k for k in g.state_dict() if k.startswith("up.")} == {
        f"up.{i}.1.{p}" for i in range(2) for p in ("weight", "bias")
    }
