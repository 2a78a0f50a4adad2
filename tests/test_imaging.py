"""The imaging model: A is an orthogonal projection, the mask matches the tilt geometry,
and rotations invert."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from cryogen.errors import CryogenError
from cryogen.model.imaging import Wedge, apply_wedge, mask_tensor, observe, wedge_flips, wedge_mask
from cryogen.model.rotations import (
    cube_inverse,
    cube_rotation_matrices,
    inverse,
    random_cube_indices,
    random_rotation_matrices,
    random_tilt_axis_cube_indices,
    rotate,
    rotate_cube,
    rotate_interp,
    spherical_support,
    tilt_axis_cube_indices,
    tilt_axis_matrices,
)

WEDGES = [Wedge(-60, 60, "y"), Wedge(-54, 62, "y"), Wedge(-45, 45, "x"), Wedge(-30, 70, "x")]
SHAPES = [(16, 16, 16), (15, 18, 21), (12, 20, 17)]


def _rand(shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("wedge", WEDGES)
@pytest.mark.parametrize("shape", SHAPES)
def test_wedge_operator_is_idempotent_and_self_adjoint(wedge, shape):
    x, y = _rand(shape, 1), _rand(shape, 2)
    ax = apply_wedge(x, wedge)
    assert torch.allclose(apply_wedge(ax, wedge), ax, atol=1e-12)
    lhs = torch.sum(ax * y)
    rhs = torch.sum(x * apply_wedge(y, wedge))
    assert abs(lhs - rhs) <= 1e-10 * (x.norm() * y.norm())
    # a projection never increases the norm and removes something for a proper wedge
    assert ax.norm() < x.norm()


@pytest.mark.parametrize("wedge", WEDGES)
def test_wedge_flips_commute_with_the_wedge_and_no_others_do(wedge):
    """A flip(x) = flip(A x) for every flip wedge_flips lists (8 for a symmetric tilt range, 4
    otherwise), and fails for each of the 8 axis flips it leaves out."""
    x = _rand((16, 18, 20), 3)
    kept = wedge_flips(wedge)
    assert kept[0] == () and len(kept) == (8 if wedge.tilt_min == -wedge.tilt_max else 4)
    everything = [tuple(d for d, on in zip((-3, -2, -1), bits, strict=True) if on) for bits in np.ndindex(2, 2, 2)]
    assert sorted(kept) == sorted(set(kept)) and set(kept) <= set(everything)
    for dims in everything:
        flipped = apply_wedge(x.flip(dims), wedge) if dims else apply_wedge(x, wedge)
        back = flipped.flip(dims) if dims else flipped
        err = float((back - apply_wedge(x, wedge)).abs().max())
        assert (err < 1e-10) == (dims in kept), (dims, err)


def test_operator_float32_precision():
    w = Wedge(-54, 62)
    x = _rand((32, 32, 32), 3, torch.float32)
    ax = apply_wedge(x, w)
    err = (apply_wedge(ax, w) - ax).norm() / ax.norm()
    assert err < 1e-6


def _angle_measured(kz, kp, lo, hi):
    if kz == 0 and kp == 0:
        return True
    a = np.degrees(np.arctan2(kz, kp))
    a = a - 180 if a > 90 else (a + 180 if a <= -90 else a)
    return lo <= a <= hi


@pytest.mark.parametrize("wedge", WEDGES)
def test_mask_matches_geometry(wedge):
    shape = (16, 14, 18)
    m = wedge_mask(shape, wedge, rfft=False)
    kz = np.fft.fftfreq(shape[0])
    ky = np.fft.fftfreq(shape[1])
    kx = np.fft.fftfreq(shape[2])
    for iz in range(shape[0]):
        for iy in range(shape[1]):
            for ix in range(shape[2]):
                kp = kx[ix] if wedge.tilt_axis == "y" else ky[iy]
                neg_kp = kx[-ix] if wedge.tilt_axis == "y" else ky[-iy]
                expected = _angle_measured(kz[iz], kp, wedge.tilt_min, wedge.tilt_max) and _angle_measured(
                    kz[-iz], neg_kp, wedge.tilt_min, wedge.tilt_max
                )
                assert m[iz, iy, ix] == expected, (iz, iy, ix)


def test_mask_known_points_asymmetric():
    w = Wedge(-54, 62, "y")
    n = 64
    m = wedge_mask((n, n, n), w, rfft=False)
    kx = 10
    for deg, measured in [(0, True), (50, True), (60, True), (-50, True), (-58, False), (65, False), (75, False)]:
        kz = round(kx * np.tan(np.radians(deg)))
        if kz == 0 and deg != 0:
            continue
        # angle of (kz, kx) measured from kx towards kz
        assert m[kz % n, 5, kx] == measured, deg
    # the ky axis (tilt axis) is always measured; the beam axis kz never for a +-60 wedge
    assert m[0, 7, 0]
    assert not m[9, 0, 0]
    # tilt axis x: the mask no longer depends on kx, and depends on ky
    mx = wedge_mask((n, n, n), Wedge(-54, 62, "x"), rfft=False)
    assert (mx == mx[:, :, :1]).all()
    assert not (mx == mx[:, :1, :]).all()


def test_mask_fraction_matches_tilt_range():
    # In the (kz, kx) plane the measured fraction of directions is (range / 180).
    w = Wedge(-60, 60)
    m = wedge_mask((128, 4, 128), w, rfft=False)
    kz = np.fft.fftfreq(128)[:, None]
    kx = np.fft.fftfreq(128)[None, :]
    ring = (np.hypot(kz, kx) > 0.2) & (np.hypot(kz, kx) < 0.45)
    frac = m[:, 0, :][ring].mean()
    assert abs(frac - 120 / 180) < 0.02


def test_bad_wedges_rejected():
    for lo, hi in [(60, -60), (10, 10), (-95, 60), (-60, 91), (float("nan"), 3)]:
        with pytest.raises(CryogenError):
            Wedge(lo, hi)
    with pytest.raises(CryogenError):
        Wedge(-60, 60, "z")


def test_mask_cache_per_shape_and_device():
    w = Wedge(-60, 60)
    a = mask_tensor((8, 8, 8), w)
    assert mask_tensor((8, 8, 8), w) is a
    assert mask_tensor((8, 8, 10), w) is not a
    assert mask_tensor((3, 8, 8, 8), w).shape == (8, 8, 5)


def test_cube_rotations_group():
    mats = cube_rotation_matrices()
    assert mats.shape == (24, 3, 3)
    assert np.array_equal(mats[0], np.eye(3))
    assert len({m.tobytes() for m in mats}) == 24
    for m in mats:
        assert round(np.linalg.det(m)) == 1


@pytest.mark.parametrize(("tilt_axis", "axis"), [("y", 1), ("x", 2)])
def test_the_tilt_axis_cube_rotations_are_the_8_that_keep_it_and_a_group(tilt_axis, axis):
    """D's fakes are turned by these (the proxy keeps a structure along the tilt axis along it):
    every one maps the axis onto itself, they include the identity and are closed under
    composition, and the draws take only them."""
    mats = cube_rotation_matrices()
    keep = tilt_axis_cube_indices(tilt_axis)
    assert len(keep) == 8 and keep[0] == 0
    chosen = {mats[i].tobytes() for i in keep}
    for i in keep:
        assert abs(mats[i][axis, axis]) == 1
        for j in keep:
            assert (mats[i] @ mats[j]).tobytes() in chosen
    drawn = random_tilt_axis_cube_indices(400, tilt_axis, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == set(keep)


def test_cube_rotation_then_inverse_is_identity_and_matches_interpolation():
    x = _rand((2, 9, 9, 9), 5, torch.float32)
    mats = torch.from_numpy(cube_rotation_matrices()).float()
    sphere = spherical_support((9, 9, 9))
    for i in range(24):
        y = rotate_cube(x, i)
        assert torch.equal(rotate_cube(y, cube_inverse(i)), x)
        # the interpolated path with the same matrix lands on voxel centres: same result on the sphere
        yi = rotate_interp(x, mats[i].expand(2, 3, 3))
        assert torch.allclose(yi, y * sphere, atol=1e-5), i


def test_rotation_direction_convention():
    # a bright voxel on +x rotated by 90 degrees about z (x -> y) ends up on +y
    x = torch.zeros(1, 9, 9, 9)
    x[0, 4, 4, 7] = 1.0
    rz90 = torch.tensor([[[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]])  # (z, y, x): y' = x, x' = -y
    out = rotate_interp(x, rz90)
    assert out[0, 4, 7, 4] == pytest.approx(1.0, abs=1e-5)


def test_random_rotation_then_inverse_is_identity_on_support():
    g = torch.Generator().manual_seed(0)
    # a smooth volume (features of ~2 voxels): trilinear interpolation blurs finer detail
    noise = np.random.default_rng(7).standard_normal((2, 40, 40, 40))
    x = torch.from_numpy(gaussian_filter(noise, (0, 2, 2, 2))).float()
    rots = random_rotation_matrices(2, g)
    assert torch.allclose(rots @ rots.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rots), torch.ones(2), atol=1e-5)
    back = rotate(rotate(x, rots), inverse(rots))
    # stay away from the rim, where the first rotation zeroed what the second needs
    axes = [torch.arange(40.0) - 19.5] * 3
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    inner = (zz**2 + yy**2 + xx**2) < 16.0**2
    err = (back - x)[:, inner].norm() / x[:, inner].norm()
    assert err < 0.1
    # outside the inscribed sphere the rotated volume is zero
    assert (rotate(x, rots)[:, ~spherical_support((40, 40, 40))] == 0).all()


@pytest.mark.parametrize("wedge", [Wedge(-50, 40, "y"), Wedge(-40, 65, "x")])
@pytest.mark.parametrize("turn", [30.0, -60.0])
def test_turned_mask_holds_the_turned_data(wedge, turn):
    """A volume turned about the tilt axis keeps its power inside wedge_mask(turn=t), not inside
    the mask of the opposite turn; turn 0 is the plain mask, and a turn is a proper rotation."""
    x = apply_wedge(_rand((1, 40, 40, 40), dtype=torch.float32), wedge)
    mats = tilt_axis_matrices(torch.tensor([turn]), wedge.tilt_axis)
    assert torch.allclose(torch.linalg.det(mats), torch.ones(1)) and torch.allclose(mats[0] @ mats[0].T, torch.eye(3))
    power = torch.fft.rfftn(rotate_interp(x, mats), dim=(-3, -2, -1)).abs().pow(2)
    share = float((power * mask_tensor(x.shape, wedge, turn=turn)).sum() / power.sum())
    opposite = float((power * mask_tensor(x.shape, wedge, turn=-turn)).sum() / power.sum())
    assert share > 0.8 and opposite < share - 0.3  # interpolation and the sphere's rim leak a little
    assert np.array_equal(wedge_mask((12, 14, 16), wedge, turn=0.0), wedge_mask((12, 14, 16), wedge))


def test_random_rotations_are_uniform():
    r = random_rotation_matrices(20000, torch.Generator().manual_seed(1))
    # the image of the z axis is uniform on the sphere: mean ~0, E[z^2] = 1/3
    v = r[:, :, 0]
    assert v.mean(0).abs().max() < 0.02
    assert abs((v[:, 0] ** 2).mean() - 1 / 3) < 0.01


def test_observe_batched_with_rotations_and_noise_free():
    w = Wedge(-60, 60)
    x = _rand((3, 16, 16, 16), 8, torch.float32)
    idx = random_cube_indices(3, torch.Generator().manual_seed(2))
    y = observe(x, w, rotations=idx)
    for b in range(3):
        expected = apply_wedge(rotate_cube(x[b], int(idx[b])), w)
        assert torch.allclose(y[b], expected, atol=1e-5)
    # the observation is in the range of A
    assert torch.allclose(apply_wedge(y, w), y, atol=1e-5)
