"""Is the tomogram oriented the way the user said? A check on the missing wedge.

Everything downstream (the wedge mask in the likelihood, the rotations of the proxy) assumes the
beam runs along z and the specimen was tilted about the configured axis. Two mistakes are common
and silent: the tilt axis is x rather than y (or the reverse), and the volume was saved with its
axes swapped, e.g. IMOD's `tilt` output before `trimvol -rx` / `clip rotx`, where the beam runs
along y and the tilt axis along z. Restoring such a volume "fills" a wedge that was measured and
leaves the real one empty.

The missing wedge is visible in the power spectrum: a region around the beam axis, bounded by the
tilt range, with almost no power. For each of the six ways to pick the beam and tilt axes among
(z, y, x) we measure the mean power inside that geometry's missing wedge, after dividing the
power by its mean over each spherical shell (so the usual fall-off with frequency does not favour
one region over another). The true geometry's wedge is the emptiest: its score is well below 1,
while wedges put elsewhere cut through measured data and score near 1. Only a central crop of at
most 128^3 voxels is read (streamed plane by plane through `MrcReader`), so the check costs well
under a second and no memory to speak of, whatever the tomogram's size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .imaging import Wedge, frequency_radius, wedge_mask
from .mrcio import MrcReader

log = logging.getLogger(__name__)

AXES = ("z", "y", "x")
#: Edge of the central crop that is analysed (per axis, capped at the volume's size).
CROP = 128
#: Smaller crops do not resolve the wedge well enough to say anything.
MIN_CROP = 16
#: Band of |k| (cycles/voxel) used: above the lowest shells, where a handful of coefficients
#: and the specimen's overall shape dominate, and below Nyquist corners.
BAND = (0.04, 0.45)
N_SHELLS = 16
#: Another geometry is reported only if its wedge holds less than this fraction of the power
#: in the configured one, and is itself clearly emptier than average.
RATIO = 0.5
MAX_SCORE = 0.6


@dataclass(frozen=True)
class Geometry:
    """Which array axis the beam ran along, and which one the specimen was tilted about."""

    beam: str = "z"
    tilt_axis: str = "y"

    def __post_init__(self) -> None:
        if self.beam not in AXES or self.tilt_axis not in AXES or self.beam == self.tilt_axis:
            raise ValueError(f"invalid geometry: beam {self.beam!r}, tilt axis {self.tilt_axis!r}")

    def __str__(self) -> str:
        return f"beam along {self.beam}, tilt axis {self.tilt_axis}"


CANDIDATES = tuple(Geometry(b, t) for b in AXES for t in AXES if t != b)


@dataclass
class GeometryCheck:
    """Scores of every candidate geometry: the mean shell-normalised power inside its missing
    wedge (0 = empty, 1 = as much power as average); lower fits better."""

    configured: Geometry
    scores: dict[Geometry, float] = field(default_factory=dict)

    @property
    def best(self) -> Geometry:
        return min(self.scores, key=self.scores.__getitem__)

    @property
    def mismatch(self) -> bool:
        """True when another geometry fits clearly better than the configured one."""
        best = self.best
        if best == self.configured:
            return False
        s_best, s_conf = self.scores[best], self.scores[self.configured]
        return s_best < MAX_SCORE and s_best < RATIO * s_conf

    def advice(self, path: str | Path | None = None) -> str | None:
        """One line saying what was detected and how to fix it, or None if the geometry fits."""
        if not self.mismatch:
            return None
        best, conf = self.best, self.configured
        where = f"{path}: " if path is not None else ""
        scores = f"(emptiest missing wedge {self.scores[best]:.2f} vs {self.scores[conf]:.2f} for the configured {conf})"
        if best.beam == "z":
            return f"{where}looks like the tilt axis is {best.tilt_axis}, not {conf.tilt_axis}: pass --tilt-axis {best.tilt_axis} {scores}"
        if best.beam == "y":
            # clip rotx turns the file's y into z and its z into y; x stays
            tilt = {"z": "y", "x": "x"}[best.tilt_axis]
            fix = "run `clip rotx IN.rec OUT.rec` (or `trimvol -rx`) in IMOD and chunk the rotated file"
        else:
            # clip flipxz swaps x and z; y stays
            tilt = {"z": "x", "y": "y"}[best.tilt_axis]
            fix = "swap x and z (`clip flipxz IN.rec OUT.rec` in IMOD) and chunk the rotated file"
        extra = f" with --tilt-axis {tilt}" if tilt != conf.tilt_axis else ""
        return (
            f"{where}the missing wedge is around {best.beam}, not z: the beam seems to run along {best.beam} "
            f"(volume saved without rotx?); {fix}{extra} {scores}"
        )


def _window(n: int) -> np.ndarray:
    """A Hann taper, so the crop's cut faces do not paint bright lines along the k axes (which
    lie inside every candidate's wedge and would blur the comparison)."""
    return np.hanning(n + 2)[1:-1].astype(np.float32)


def wedge_scores(volume: np.ndarray, wedge: Wedge) -> GeometryCheck:
    """Score every candidate geometry on a small (z, y, x) volume; see the module docstring.

    Each candidate uses the configured tilt range; for an asymmetric range the mirrored range is
    tried too (an axis swap can flip the sign of the tilts), and the better one counts.
    """
    import scipy.fft

    v = np.asarray(volume, dtype=np.float32)
    if v.ndim != 3 or min(v.shape) < 2:
        raise ValueError(f"need a 3-D volume, not shape {v.shape}")
    v = v - np.float32(v.mean(dtype=np.float64))
    v = v * _window(v.shape[0])[:, None, None] * _window(v.shape[1])[None, :, None] * _window(v.shape[2])[None, None, :]
    spec = scipy.fft.fftn(v, workers=1)
    power = spec.real.astype(np.float64) ** 2 + spec.imag.astype(np.float64) ** 2
    radius = frequency_radius(v.shape, rfft=False)
    band = (radius >= BAND[0]) & (radius <= BAND[1])
    shell = np.minimum(((radius - BAND[0]) / (BAND[1] - BAND[0]) * N_SHELLS).astype(np.int64), N_SHELLS - 1)
    sums = np.bincount(shell[band], weights=power[band], minlength=N_SHELLS)
    counts = np.bincount(shell[band], minlength=N_SHELLS)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    if not (means > 0).any():
        raise ValueError("volume has no power in the analysed band")
    white = np.zeros_like(power)
    white[band] = power[band] / np.where(means[shell[band]] > 0, means[shell[band]], np.inf)
    wedges = {wedge.tilt_min: Wedge(wedge.tilt_min, wedge.tilt_max, "y")}
    if wedge.tilt_min != -wedge.tilt_max:
        wedges[-wedge.tilt_max] = Wedge(-wedge.tilt_max, -wedge.tilt_min, "y")
    check = GeometryCheck(Geometry("z", wedge.tilt_axis))
    for cand in CANDIDATES:
        other = next(a for a in AXES if a not in (cand.beam, cand.tilt_axis))
        perm = (AXES.index(cand.beam), AXES.index(cand.tilt_axis), AXES.index(other))
        shape = tuple(v.shape[i] for i in perm)
        inverse = np.argsort(perm)
        best = np.inf
        for w in wedges.values():
            # wedge_mask's own convention: beam on axis 0, tilt axis on axis 1 ('y')
            missing = ~wedge_mask(shape, w, rfft=False).transpose(inverse) & band
            if missing.any():
                best = min(best, float(white[missing].mean()))
        check.scores[cand] = best
    return check


def read_central_crop(reader: MrcReader, crop: int = CROP) -> np.ndarray:
    """The central crop (at most `crop` voxels per axis) as float32, one z plane at a time, so
    only the crop is ever in memory however large the tomogram."""
    shape = reader.shape
    lo = [(n - min(n, crop)) // 2 for n in shape]
    hi = [a + min(n, crop) for a, n in zip(lo, shape)]
    out = np.empty(tuple(b - a for a, b in zip(lo, hi)), dtype=np.float32)
    for i, z in enumerate(range(lo[0], hi[0])):
        out[i] = reader.read_block(z, z + 1, lo[1], hi[1])[0, :, lo[2] : hi[2]]
    return out


def check_geometry(source: MrcReader | str | Path, wedge: Wedge, crop: int = CROP) -> GeometryCheck | None:
    """Score the candidate geometries on the central crop of an MRC tomogram; None when the
    volume is too small, constant or not finite (other checks report those)."""
    if not isinstance(source, MrcReader):
        with MrcReader(source) as reader:
            return check_geometry(reader, wedge, crop)
    if min(min(n, crop) for n in source.shape) < MIN_CROP:
        return None
    volume = read_central_crop(source, crop)
    if not np.isfinite(volume).all() or volume.min() == volume.max():
        return None
    try:
        return wedge_scores(volume, wedge)
    except ValueError:
        return None


def warn_geometry(source: MrcReader | str | Path, wedge: Wedge) -> GeometryCheck | None:
    """Log one warning line if the tomogram's missing wedge says its geometry is not `wedge`'s."""
    path = source.path if isinstance(source, MrcReader) else Path(source)
    result = check_geometry(source, wedge)
    if result is not None:
        message = result.advice(path)
        if message:
            log.warning(message)
        else:
            log.debug("%s: missing wedge consistent with %s (scores %s)", path, result.configured,
                      {str(g): round(s, 3) for g, s in result.scores.items()})
    return result
