"""What the discriminator tells real tiles from simulated ones by: D scored on variants of its two
inputs, each changing one property, so a separation can be traced to its cause.

D learns to tell real patches y from the proxy's A R g(y) + n. When it separates them, either
part of the proxy can be at fault: the noise model (n), or the rotation R, which shows g's
output in orientations the data may never hold (parallel filaments, membranes in the ice plane:
the specimen's own statistics, not the imaging model). The probes, each judged real or not by
the prior's D:

- "real": the data's patches;
- "real, flipped": the same flipped along the tilt axis, which keeps the wedge and the noise
  exactly and mirrors only the content's orientation (a mirror image's structure is as
  plausible, so only a D that keys on orientation calls these fake);
- "real, smoothed": the same blurred, with the noise power the blur took made up from the noise
  model (`smoothed`): only the signal's sharpness changes, so a D that calls these fake keys on
  how smooth the proxy's content is (g(y) is a posterior mean; D's fakes are brought to the
  data's signal power for that reason, `model.signal_power`);
- "simulated": the proxy's observations as training makes them, A R g(y) + n (R one of the 8
  cube rotations that keep the tilt axis, g(y) brought to the data's signal power);
- "simulated, not rotated": A g(y) + n, the same without the rotation;
- "simulated, the data's noise": A g(y) plus the data's own residual y - A g(y), flipped along
  the tilt axis so that it no longer lines up with the content (its spectrum unchanged): the
  model's noise swapped for the real one.

Reading them: real judged real and its flip judged fake, or the unrotated proxy judged real while
the rotated one is not, names the orientation; the data's noise passing where the model's noise
does not names the noise model; the real tiles failing once smoothed name the content's
sharpness (`cue_verdict`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..method.checkpoints import load_checkpoint
from ..method.config import TrainConfig
from ..method.patches import PatchSampler, Sampler, open_sources
from ..model.imaging import FFT_DIMS, Wedge, apply_wedge, observe, radius_tensor, tilt_axis_dims
from ..model.nets import build
from ..model.noise import NoiseModel
from ..model.rotations import random_tilt_axis_cube_indices
from ..model.signal_power import matched_to_signal

PROBES = (
    "real",
    "real, flipped",
    "real, smoothed",
    "simulated",
    "simulated, not rotated",
    "simulated, the data's noise",
)
#: a probe's judged-real share must move by this much for its property to count as D's cue
CUE_MARGIN = 0.3
#: the blur of the "real, smoothed" probe, in voxels (a Gaussian's sigma)
SMOOTH_SIGMA = 1.0


def d_cues(prior: str | Path, store: str | Path, batches: int = 64, seed: int = 0) -> dict[str, float]:
    """`judged_real` with the prior's networks on patches of the tile store (on the CPU: D is small)."""
    ck = load_checkpoint(prior, "cpu")
    cfg = TrainConfig.from_dict(ck["train"])
    g, d = build(cfg.net)
    g.load_state_dict(ck["g"])  # the weights D was trained against, not the EMA
    d.load_state_dict(ck["d"])
    sampler = PatchSampler(open_sources([store]), cfg.patch)
    return judged_real(g.eval(), d.eval(), sampler, cfg.batch, batches, seed)


def judged_real(
    g: torch.nn.Module, d: torch.nn.Module, sampler: Sampler, batch: int, batches: int, seed: int = 0
) -> dict[str, float]:
    """The share of each probe's patches (PROBES) that d judges real (a positive score), over
    `batches` batches of `batch` patches drawn from `sampler`."""
    gen = torch.Generator().manual_seed(seed)
    real = dict.fromkeys(PROBES, 0.0)
    total = 0
    with torch.no_grad():
        for _ in range(batches):
            y, src = sampler.sample(batch, gen)
            wedge, noise = src.meta.wedge, src.noise
            along, _ = tilt_axis_dims(wedge.tilt_axis)
            gy = matched_to_signal(g(y), y, wedge, noise)  # as D's fakes are made in training
            seen = apply_wedge(gy, wedge)
            variants = {
                "real": y,
                "real, flipped": torch.flip(y, (along,)),
                "real, smoothed": smoothed(y, wedge, noise, gen),
                "simulated": observe(
                    gy, wedge, noise, random_tilt_axis_cube_indices(len(y), wedge.tilt_axis, gen), gen
                ),
                "simulated, not rotated": seen + noise.sample(tuple(y.shape), wedge, generator=gen),
                "simulated, the data's noise": seen + torch.flip(y - seen, (along,)),
            }
            for name, x in variants.items():
                real[name] += float((d(x).flatten() > 0).sum())
            total += len(y)
    return {name: count / total for name, count in real.items()}


def smoothed(y: torch.Tensor, wedge: Wedge, noise: NoiseModel, generator: torch.Generator) -> torch.Tensor:
    """Patches y, (B, Z, Y, X), blurred by a Gaussian of SMOOTH_SIGMA voxels, with noise of the
    model's spectrum added back where the blur took power away: the noise's power stays as it
    was (where the data are noise), the signal is as smooth as a posterior mean's."""
    radius = radius_tensor(y.shape, y.device).float()
    blur = torch.exp(-2.0 * (math.pi * SMOOTH_SIGMA * radius) ** 2)
    refill = torch.sqrt(1.0 - blur**2)
    n = noise.sample(tuple(y.shape), wedge, generator=generator)
    spectrum = torch.fft.rfftn(y, dim=FFT_DIMS) * blur + torch.fft.rfftn(n, dim=FFT_DIMS) * refill
    return torch.fft.irfftn(spectrum, s=y.shape[-3:], dim=FFT_DIMS)


def cue_verdict(shares: dict[str, float]) -> str:
    """One line naming what D keys on, from `d_cues`' shares."""
    causes = []
    orientation = max(shares["real"] - shares["real, flipped"], shares["simulated, not rotated"] - shares["simulated"])
    if orientation >= CUE_MARGIN:
        causes.append("the structure's orientation (the proxy's rotations show it in orientations the data lack)")
    noise = shares["simulated, the data's noise"] - shares["simulated, not rotated"] >= CUE_MARGIN
    if noise:
        causes.append("the noise (the data's own noise passes where the noise model's does not)")
    # the smoothed tiles' lost noise power is made up from the noise model: only when the model's
    # noise is no cue can their failing be put down to the sharpness
    elif shares["real"] - shares["real, smoothed"] >= CUE_MARGIN:
        causes.append("the content's sharpness (the data smoothed, their noise power kept, fail)")
    if causes:
        return "D keys on " + " and on ".join(causes)
    if shares["real"] - shares["simulated"] < CUE_MARGIN:
        return "D barely tells real from simulated patches"
    return "D tells real from simulated patches by none of the orientation, the noise or the sharpness alone"
