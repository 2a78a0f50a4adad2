"""Warnings (never errors) about data that look wrong, logged once per tomogram by `chunk`.

A long run on data without signal, or with a noise level the data cannot pin down, finishes
"successfully" and produces nothing useful; these checks say so at the start, in one line each
that names the file, so a user reading the log learns it before the hours are spent:

- no signal: the volume is nearly constant (its values vary by a tiny fraction of their size,
  e.g. a blank or saturated acquisition), or the noise estimated from the data alone accounts
  for nearly all of the variance (pure noise: nothing for the prior to learn);
- unstable sigma: the noise estimated from the data alone (`noise_estimate.estimate_from_data`,
  which assumes a white noise floor at high frequency) differs much between two halves of the
  volume, or is near 0 (noise-free, binned or low-pass filtered data: the estimate is unreliable);
- the noise model's own warnings (`check_noise`, on the model chunk stores): noise inside the
  missing wedge, signal inside it (tilt axis or range wrong), halves that are not independent,
  a spectrum that still falls where the estimate assumes white noise.

`check_volume` is the one path by which `chunk` reports them all; a message whose topic (the text
before its first colon) an earlier check already gave is not repeated. A volume that is exactly
constant is an error in `chunk`, not a warning: normalising by its standard deviation would
divide by zero. The checks read two small crops (at most `CROP` voxels a side, one row of voxels
at a time), so they cost little time and memory for any tomogram.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import CryogenError
from ..io.mrc import MrcReader
from ..model.imaging import Wedge
from ..model.noise import NoiseModel

log = logging.getLogger(__name__)

CROP = 64  # edge of the crops the noise is estimated on, voxels
NEARLY_CONSTANT = 1e-4  # std below this fraction of the values' magnitude: no signal
NO_SIGNAL = 0.95  # noise variance above this fraction of the total: no signal
SIGMA_NEAR_ZERO = 0.05  # noise variance below this fraction of the total: estimate unreliable (SNR above ~20)
SIGMA_SPREAD = 1.5  # ratio of the two halves' sigma estimates above which the estimate is unstable


def nearly_constant(mean: float, std: float, lo: float, hi: float) -> str | None:
    """The 'no signal' message for a volume whose values barely vary, else None."""
    scale = max(abs(mean), abs(lo), abs(hi))
    if scale > 0 and std < NEARLY_CONSTANT * scale:
        return (
            f"no signal: the volume is nearly constant (std {std:.3g} is {std / scale:.1e} of its values' "
            "magnitude); is this the right file?"
        )
    return None


def _half_crops(reader: MrcReader) -> list[np.ndarray]:
    """Two crops of at most CROP^3, centred in the two halves of the volume's longest in-plane
    axis (y or x: the beam axis z is often thin and holds the empty space around the slab)."""
    shape = reader.shape
    axis = 1 if shape[1] >= shape[2] else 2
    crops = []
    for half in (0, 1):
        lo_hi = []
        for a, n in enumerate(shape):
            if a == axis:
                start, length = half * (n // 2), n // 2 if half == 0 else n - n // 2
            else:
                start, length = 0, n
            c = min(CROP, length)
            s = start + (length - c) // 2
            lo_hi.append((s, s + c))
        (z0, z1), (y0, y1), (x0, x1) = lo_hi
        crop = np.stack([reader.read_block(z, z + 1, y0, y1)[0, :, x0:x1] for z in range(z0, z1)])
        crops.append(crop)
    return crops


def noise_warnings(reader: MrcReader, wedge: Wedge) -> list[str]:
    """'no signal' and 'unstable sigma' messages from the noise estimated on two halves."""
    from ..model.noise_estimate import estimate_from_data

    crops = _half_crops(reader)
    try:
        models = [estimate_from_data(c, wedge) for c in crops]
    except CryogenError as exc:  # too small to estimate, or a constant half
        log.info("%s: noise not checked (%s)", reader.path, exc)
        return []
    sig = [m.sigma for m in models]
    var = [float(m.data_variance or 0.0) for m in models]
    out = []
    total = float(np.mean(var))
    noise = float(np.mean(np.square(sig)))
    if total > 0:
        share = noise / total
        if share > NO_SIGNAL:
            out.append(
                f"no signal detected: the noise estimated from the data is {100 * min(share, 1.0):.0f}% of the "
                "total variance (the volume looks like pure noise)"
            )
        elif share < SIGMA_NEAR_ZERO:
            out.append(
                f"sigma estimate unstable: the noise estimated from the data is near 0 ({100 * share:.2g}% of the "
                "variance); the data look noise-free, binned or low-pass filtered, so give even/odd halves"
            )
    lo, hi = min(sig), max(sig)
    if hi > 0 and (lo == 0 or hi / lo > SIGMA_SPREAD):
        out.append(
            f"sigma estimate unstable: the noise estimated from the data alone is {sig[0]:.3g} in one half of "
            f"the volume and {sig[1]:.3g} in the other; the noise is not uniform or the estimate is unreliable"
        )
    return out


def check_noise(model: NoiseModel) -> list[str]:
    """Warnings about a noise model (and the observation it was estimated on) that a user should
    see: no noise at all, noise inside the missing wedge, no signal, signal inside the missing
    wedge (wrong tilt axis or range), data too smooth for the estimate from data alone."""
    out: list[str] = []
    f = np.asarray(model.shell_freqs)
    meas = np.asarray(model.measured_psd)
    if model.sigma == 0 or not meas.any():
        out.append("the noise model is zero: the estimate found no noise (identical halves, or a noise-free volume?)")
        return out
    mid = (f >= 0.1) & (f <= 0.5)
    if not mid.any():
        mid = np.ones(len(f), bool)  # a flat model's two points
    missing_noise = model.missing_profile()
    level = float(np.median(meas[mid]))
    ratio = float(np.median(missing_noise[mid])) / level if level > 0 else 0.0
    if ratio >= 0.5:
        out.append(
            f"noise inside the missing wedge is {ratio:.2f} x the noise in the measured region: "
            "the noise is not wedge-shaped (simulated white noise, or a reconstruction that fills the wedge), "
            "or the tilt axis / range is wrong"
        )
    if model.data_variance is not None and model.data_variance > 0:
        ratio = model.sigma**2 / model.data_variance
        if ratio > 1.1:
            out.append(
                f"the noise variance is {ratio:.2f} x the variance of the data: the halves are not independent "
                "reconstructions of the same volume, or are scaled differently"
            )
        elif ratio > 0.95:
            out.append(
                f"no signal detected: noise accounts for {100 * min(ratio, 1.0):.1f}% of the data's variance "
                "(total power barely above the noise floor)"
            )
    if model.data_psd and model.data_missing_psd:
        data = np.asarray(model.data_psd)
        miss = np.asarray(model.data_missing_psd)
        noise_meas = meas
        signal = (data > 3.0 * noise_meas) & (f <= 0.5)
        if signal.any():
            excess_meas = data[signal] - noise_meas[signal]
            excess_miss = np.maximum(miss[signal] - missing_noise[signal], 0.0)
            r = float(np.median(excess_miss / excess_meas))
            if r > 0.3:
                out.append(
                    f"signal found inside the missing wedge ({r:.2f} x the signal power of the measured region "
                    "at the same frequencies): the tilt axis or tilt range is probably wrong"
                )
    if model.method == "data" and model.data_psd:
        data = np.asarray(model.data_psd)
        low = (f >= 0.4) & (f < 0.45)
        high = (f >= 0.45) & (f <= 0.5)
        if low.any() and high.any() and data[low].mean() > 0 and meas[low].mean() > 0:
            drop = float(data[high].mean() / data[low].mean())
            followed = float(meas[high].mean() / meas[low].mean()) < 0.9  # the model's shape falls too
            if drop < 0.75 and not followed:
                out.append(
                    f"the spectrum still falls across the noise band (0.45-0.5 vs 0.4-0.45 cycles/voxel: x{drop:.2f}): "
                    "the data look binned or low-pass filtered, so the noise from data alone is under-estimated; "
                    "use even/odd halves"
                )
    return out


def _topic(message: str) -> str:
    """What a message is about: its text before the first colon (e.g. "no signal detected")."""
    return message.split(":", 1)[0]


def check_volume(
    reader: MrcReader, wedge: Wedge, stats: dict[str, float], noise: NoiseModel | None = None
) -> list[str]:
    """Log (and return) every warning about the data of `reader`; never raises.

    `stats` are the volume's mean, std, min and max and `noise` its noise model (chunk has both
    already)."""
    messages: list[str] = []
    try:
        msg = nearly_constant(stats["mean"], stats["std"], stats["min"], stats["max"])
        if msg is not None:
            messages.append(msg)  # the noise estimate on such data says nothing more
        else:
            messages.extend(noise_warnings(reader, wedge))
            for msg in check_noise(noise) if noise is not None else []:
                if _topic(msg) not in {_topic(m) for m in messages}:
                    messages.append(msg)
    except Exception as exc:  # a check must never stop a run
        log.debug("%s: data checks failed (%s: %s)", reader.path, type(exc).__name__, exc)
    for msg in messages:
        log.warning("%s: %s", Path(reader.path), msg)
    return messages
