"""The ideal forward model: a phantom observed as y = A x + n (cryogen.model.imaging).

The noise n is white noise passed through A, as back-projected noise in a real tomogram is
confined to the measured region of Fourier space. Real tomograms are made differently (discrete
tilts, noise on each projection, back-projection): `cryogen.sim.tilt_series` simulates that.
The phantoms themselves are in `cryogen.sim.phantom`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from ..errors import CryogenError
from ..model.imaging import Wedge, apply_wedge_np
from .phantom import ICE, VACUUM, check_count, check_positive, check_seed, check_shape, make_phantom

__all__ = ["ICE", "VACUUM", "Simulation", "make_phantom", "simulate"]


@dataclass
class Simulation:
    """A phantom, its observation through the imaging model, and the noise level actually used."""

    truth: np.ndarray  # float32 (z, y, x), clean isotropic phantom
    observation: np.ndarray  # float32, A(truth) + noise
    even: np.ndarray | None  # half-tomogram observations with independent noise (halves=True only)
    odd: np.ndarray | None  # observation == (even + odd) / 2 exactly
    sigma: float  # measured std of the noise in `observation`, per voxel
    wedge: Wedge


def simulate(
    shape: tuple[int, int, int],
    wedge: Wedge,
    snr: float,
    seed: int,
    voxel_size: float = 10.0,
    halves: bool = False,
    beads: int = 0,
) -> Simulation:
    """A phantom and its observation y = A x + n, with n = A w for white w (noise confined to the
    measured Fourier region, as after back-projection), scaled so var(A x) / var(n) = `snr`;
    with `beads` gold fiducials in x, A x is taken without them, so they leave the noise alone.

    With `halves`, also even/odd half-tomograms with independent noise of twice the variance,
    whose average is exactly the observation (for noise2noise-style checks).
    """
    shape = check_shape(shape)
    if not isinstance(wedge, Wedge):
        raise CryogenError(f"wedge must be a cryogen.model.imaging.Wedge, not {type(wedge).__name__}")
    snr = check_positive("snr", snr)
    voxel_size = check_positive("voxel_size", voxel_size)
    beads = check_count("beads", beads)
    phantom_rng, noise_rng = np.random.default_rng(check_seed(seed)).spawn(2)
    bare_rng = copy.deepcopy(phantom_rng)
    truth = make_phantom(shape, phantom_rng, voxel_size, beads=beads)
    signal = apply_wedge_np(truth, wedge)
    bare = signal if not beads else apply_wedge_np(make_phantom(shape, bare_rng, voxel_size), wedge)
    target_var = float(np.var(bare, dtype=np.float64)) / snr
    del bare
    even: np.ndarray | None
    odd: np.ndarray | None
    if halves:
        n_e = apply_wedge_np(noise_rng.standard_normal(shape, dtype=np.float32), wedge)
        n_o = apply_wedge_np(noise_rng.standard_normal(shape, dtype=np.float32), wedge)
        var_n = float(np.var((n_e + n_o) / 2, dtype=np.float64))
        scale = np.float32(math.sqrt(target_var / max(var_n, 1e-30)))
        even = signal + scale * n_e
        odd = signal + scale * n_o
        observation = (even + odd) / np.float32(2)
    else:
        n = apply_wedge_np(noise_rng.standard_normal(shape, dtype=np.float32), wedge)
        scale = np.float32(math.sqrt(target_var / max(float(np.var(n, dtype=np.float64)), 1e-30)))
        observation = signal + scale * n
        even = odd = None
    sigma = float(np.std(observation.astype(np.float64) - signal, dtype=np.float64))
    return Simulation(truth, observation.astype(np.float32, copy=False), even, odd, sigma, wedge)
