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
while wedges put elsewhere cut through measured data and score near 1. The same whitened
spectrum, profiled against the angle about the configured tilt axis, shows where the wedge
begins on each side: `tilt_range` reads the tilt range off it (within ~1 degree on the simulated
phantoms), and chunk warns when the configured range is more than 4 degrees off, as it often is
for lamellae milled with a pre-tilt or for tilt series stopped early. Only a central crop of at
most 128^3 voxels is read (streamed plane by plane through `MrcReader`), so the check costs well
under a second and no memory to speak of, whatever the tomogram's size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CryogenError, setting
from ..io.mrc import MrcReader, read_central_crop
from ..model.imaging import Wedge, frequency_radius, tilt_angle, wedge_mask

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
#: The tilt range is estimated only when the specimen plane holds this many times the power
#: around the beam, and coefficients per 1-degree bin needed for its median.
WEDGE_CONTRAST = 4.0
MIN_BIN = 16
#: chunk warns when an edge of the configured range is this far (degrees) from the estimate.
RANGE_TOLERANCE = 4.0
#: The wedge's edge is a step in the angular profile: found where the profile's median over
#: EDGE_WINDOW degrees falls most from one side of an angle to the other, then placed halfway
#: between its levels EDGE_GUARD degrees clear of that step on each side.
EDGE_WINDOW = 6
EDGE_GUARD = 3


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
    wedge: Wedge | None = None  # the configured one
    tilt_range: tuple[float, float] | None = None  # what the spectrum shows about the configured axis

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

    @property
    def range_mismatch(self) -> bool:
        """True when the axes fit but an edge of the configured tilt range is more than
        RANGE_TOLERANCE degrees from the one the spectrum shows."""
        if self.mismatch or self.tilt_range is None or self.wedge is None:
            return False
        lo, hi = self.tilt_range
        return abs(lo - self.wedge.tilt_min) > RANGE_TOLERANCE or abs(hi - self.wedge.tilt_max) > RANGE_TOLERANCE

    def advice(self, path: str | Path | None = None) -> str | None:
        """One line saying what was detected and how to fix it, or None if the geometry fits."""
        where = f"{path}: " if path is not None else ""
        if self.range_mismatch:
            assert self.tilt_range is not None and self.wedge is not None
            lo, hi = self.tilt_range
            return (
                f"{where}the missing wedge shows tilts from {lo:g} to {hi:g} degrees, not the configured "
                f"{self.wedge.tilt_min:g} to {self.wedge.tilt_max:g}: pass {setting('tilt_range')} {lo:g} {hi:g} "
                "(the sheet's tilt_min/tilt_max in the workflow), or check the tilt file if the range came from "
                "one (tilts listed but not used in the reconstruction, or another tilt series')"
            )
        if not self.mismatch:
            return None
        best, conf = self.best, self.configured
        scores = (
            f"(emptiest missing wedge {self.scores[best]:.2f} vs {self.scores[conf]:.2f} for the configured {conf})"
        )
        if best.beam == "z":
            return f"{where}looks like the tilt axis is {best.tilt_axis}, not {conf.tilt_axis}: pass {setting('tilt_axis')} {best.tilt_axis} {scores}"
        if best.beam == "y":
            # clip rotx turns the file's y into z and its z into y; x stays
            tilt = {"z": "y", "x": "x"}[best.tilt_axis]
            fix = "run `clip rotx IN.rec OUT.rec` (or `trimvol -rx`) in IMOD and chunk the rotated file"
        else:
            # clip flipxz swaps x and z; y stays
            tilt = {"z": "x", "y": "y"}[best.tilt_axis]
            fix = "swap x and z (`clip flipxz IN.rec OUT.rec` in IMOD) and chunk the rotated file"
        extra = f" with {setting('tilt_axis')} {tilt}" if tilt != conf.tilt_axis else ""
        return (
            f"{where}the missing wedge is around {best.beam}, not z: the beam seems to run along {best.beam} "
            f"(volume saved without rotx?); {fix}{extra} {scores}"
        )


def _window(n: int) -> np.ndarray:
    """A Hann taper, so the crop's cut faces do not paint bright lines along the k axes (which
    lie inside every candidate's wedge and would blur the comparison)."""
    return np.hanning(n + 2)[1:-1].astype(np.float32)


def _whitened_power(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tapered volume's power spectrum (full FFT layout) divided by its mean over each
    spherical shell of BAND, so that every frequency counts alike; and the BAND mask."""
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
    return white, band


def tilt_range(volume: np.ndarray, tilt_axis: str) -> tuple[float, float] | None:
    """The tilt range the missing wedge shows, in degrees, in `Wedge`'s convention (beam along
    z); None when the spectrum shows no clear wedge (pure noise, no wedge, too small a volume).

    The whitened power is profiled against the angle in the plane normal to the tilt axis, in
    1-degree bins. A wedge is there when the profile near the specimen plane (|angle| <= 30) is
    well above its level around the beam (|angle| >= 80); each edge is the step between them
    (`_edge`), read against the profile's level just inside it, not near 0 degrees, because
    dose-weighted tomograms lose power steadily with tilt (the last images are weighted down),
    which put a halfway level taken from near 0 degrees at about +-43 on a simulated
    dose-weighted tube whose range is +-60. On the real crop in ../shared/real this reads
    -66 .. 57 where ±60 had been assumed."""
    v = np.asarray(volume, dtype=np.float32)
    white, band = _whitened_power(v)
    return _range_from_power(white, band, tilt_axis)


def _range_from_power(white: np.ndarray, band: np.ndarray, tilt_axis: str) -> tuple[float, float] | None:
    kz = np.fft.fftfreq(white.shape[0])[:, None, None]
    kp = (
        np.fft.fftfreq(white.shape[2])[None, None, :]
        if tilt_axis == "y"
        else np.fft.fftfreq(white.shape[1])[None, :, None]
    )
    angle = tilt_angle(kz, kp)
    use = band & (np.sqrt(kz**2 + kp**2) >= BAND[0])  # the angle means little near the tilt axis
    angle = np.broadcast_to(angle, white.shape)[use]
    bins = np.clip(np.floor(angle).astype(np.int64) + 90, 0, 179)
    values = white[use]
    order = np.argsort(bins, kind="stable")
    groups = np.split(values[order], np.searchsorted(bins[order], np.arange(1, 180)))
    profile = np.array([np.median(g) if g.size >= MIN_BIN else np.nan for g in groups])  # bin i: [i-90, i-89)
    centres = np.arange(180) - 89.5
    inner = profile[np.abs(centres) <= 30]
    outer = profile[np.abs(centres) >= 80]
    if np.isnan(inner).all() or np.isnan(outer).all():
        return None
    high, low = float(np.nanmedian(inner)), float(np.nanmedian(outer))
    if not (high > 0 and high > WEDGE_CONTRAST * max(low, 1e-12)):
        return None
    lo, hi = _edge(profile, -1), _edge(profile, 1)
    if lo is None or hi is None:
        return None
    return round(lo, 1), round(hi, 1)


def _edge(profile: np.ndarray, sign: int) -> float | None:
    """The wedge's edge on one side (sign -1 or +1) of the angular profile (bin i: [i-90, i-89)
    degrees): the step beyond 30 degrees across which the profile's median over EDGE_WINDOW
    degrees falls most, placed where the profile crosses halfway between its levels EDGE_GUARD
    degrees clear of the step on either side (a blurred step crosses its midpoint at the step);
    None where no bins say."""

    def level(start: float, stop: float) -> float:
        """The median of this side's bins from `start` to `stop` degrees (within 30..90)."""
        angles = (np.arange(max(start, 30), min(stop, 90)) + 0.5) * sign
        values = profile[np.floor(angles).astype(np.int64) + 90]
        values = values[np.isfinite(values)]
        return float(np.median(values)) if values.size else float("nan")

    best, step = 0.0, None
    for b in range(31, 90):
        drop = level(b - EDGE_WINDOW, b) - level(b, b + EDGE_WINDOW)
        if drop > best:  # False for nan
            best, step = drop, b
    if step is None:
        return None
    start = max(step - EDGE_GUARD - EDGE_WINDOW, 30)
    high, low = level(start, step - EDGE_GUARD), level(step + EDGE_GUARD, step + EDGE_GUARD + EDGE_WINDOW)
    if not (np.isfinite(high) and np.isfinite(low)):
        high, low = level(step - EDGE_WINDOW, step), level(step, step + EDGE_WINDOW)
    if not high > low:  # no step down here after all
        return None
    half = 0.5 * (high + low)
    prev_a, prev_v = float(start * sign), high
    for a in (np.arange(start, 90) + 0.5) * sign:
        val = profile[int(np.floor(a)) + 90]
        if np.isnan(val):
            continue
        if val < half:  # interpolate between the last bin above and this one
            t = (prev_v - half) / (prev_v - val)
            return round(float(prev_a + t * (a - prev_a)), 1)
        prev_a, prev_v = float(a), float(val)
    return None


def wedge_scores(volume: np.ndarray, wedge: Wedge) -> GeometryCheck:
    """Score every candidate geometry on a small (z, y, x) volume; see the module docstring.

    Each candidate uses the configured tilt range; for an asymmetric range the mirrored range is
    tried too (an axis swap can flip the sign of the tilts), and the better one counts.
    """
    v = np.asarray(volume, dtype=np.float32)
    white, band = _whitened_power(v)
    wedges = {wedge.tilt_min: Wedge(wedge.tilt_min, wedge.tilt_max, "y")}
    if wedge.tilt_min != -wedge.tilt_max:
        wedges[-wedge.tilt_max] = Wedge(-wedge.tilt_max, -wedge.tilt_min, "y")
    check = GeometryCheck(
        Geometry("z", wedge.tilt_axis), wedge=wedge, tilt_range=_range_from_power(white, band, wedge.tilt_axis)
    )
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


def wedge_from_spectrum(source: MrcReader | str | Path, tilt_axis: str) -> Wedge:
    """The wedge whose tilt range the tomogram's missing wedge shows (`--tilt-range auto`), with
    a one-line error naming the file when the spectrum does not tell."""
    path = source.path if isinstance(source, MrcReader) else Path(source)
    result = check_geometry(source, Wedge(-60.0, 60.0, tilt_axis))
    if result is not None and result.mismatch:
        raise CryogenError(f"cannot read the tilt range about {tilt_axis}: {result.advice()}", path)
    if result is None or result.tilt_range is None:
        raise CryogenError(
            "cannot read the tilt range off the missing wedge (no clear wedge in the central crop's power "
            f"spectrum); give it with {setting('tilt_range')} MIN MAX",
            path,
        )
    lo, hi = result.tilt_range
    log.info("%s: tilt range read off the missing wedge: %g to %g degrees about %s", path, lo, hi, tilt_axis)
    return Wedge(lo, hi, tilt_axis)


def warn_geometry(source: MrcReader | str | Path, wedge: Wedge) -> GeometryCheck | None:
    """Log one warning line if the tomogram's missing wedge says its geometry is not `wedge`'s."""
    path = source.path if isinstance(source, MrcReader) else Path(source)
    result = check_geometry(source, wedge)
    if result is not None:
        message = result.advice(path)
        if message:
            log.warning(message)
        else:
            log.debug(
                "%s: missing wedge consistent with %s (scores %s)",
                path,
                result.configured,
                {str(g): round(s, 3) for g, s in result.scores.items()},
            )
    return result
