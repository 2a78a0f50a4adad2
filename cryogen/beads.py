"""Gold fiducials: found, their streaks subtracted before training, put back isotropic after.

Why: a gold bead has ~10x protein's contrast, and weighted back-projection leaves it X-shaped
streaks along the tilt range's edges across the whole plane through it normal to the tilt axis.
The streaks lie in the measured region, so the network takes them for data and keeps them, and
they cross everything in the bead's plane: on a tilt-series phantom with three beads the default
method's cc away from the beads fell from 0.628 to 0.463 (docs/quality-log.md, "Gold fiducials").

How: beads are the few compact blobs far above everything else (`find_beads`, streamed). Their
response is measured from the data themselves: the transfer H of the tomogram, binned by angle
and radius in the plane normal to the tilt axis, fitted so that H times the spectrum of a sphere
of each bead's radius matches the data around the beads (`measure`). It holds the discrete tilts,
the soft wedge edge, the filter and the CTF as this tomogram has them, which a model of the
wedge does not. `subtract_beads` writes the tomogram less every bead's response (streamed), and
`render_beads` draws the beads back into the result as spheres seen through the measured
region's radial transfer, the same in every direction: round beads, no streaks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, label, maximum_filter
from tqdm.auto import tqdm

from .errors import CryogenError
from .io.mrc import MrcReader, MrcWriter, block_spans, check_finite_block, read_central_crop
from .model.imaging import Wedge, tilt_angle
from .qc.geometry import CROP

__all__ = [
    "Bead",
    "BeadModel",
    "find_beads",
    "measure",
    "model_beads",
    "render_beads",
    "responses",
    "subtract_beads",
]

DIAMETERS_NM = (5.0, 25.0)  # fiducials are 5-20 nm; larger dense blobs (ice crystals) are not beads
THRESHOLD = 12.0  # robust standard deviations of the smoothed volume (bead-free data peak at 6-10)
STREAK = 0.5  # a weaker blob in an accepted bead's plane is one of its streaks below this ratio
REACH = 128  # voxels: each bead's response is measured and subtracted within +-REACH in its plane
ANGLES, SHELLS = 180, 32  # bins of the transfer: 1 degree, shells up to the corner of the plane
BLOCK = 64  # z planes and y rows per block when streaming
RADIUS_SCALES = tuple(np.linspace(0.9, 1.4, 11))  # tried on find_beads' radii
ROUND = 2.0  # a bead's section: second moments at most this far apart (two touching beads: ~5)


@dataclass
class Bead:
    """One fiducial: centre (z, y, x) in voxels, radius in voxels, peak of the smoothed data."""

    z: float
    y: float
    x: float
    radius: float
    peak: float

    @property
    def center(self) -> np.ndarray:
        return np.array([self.z, self.y, self.x])


@dataclass
class BeadModel:
    """What chunk did: the beads, the tilt axis, and the transfer measured from them (per angle
    and shell, in the plane normal to the tilt axis), from which each bead's response (streaks)
    and its isotropic form are drawn."""

    beads: list[Bead]
    tilt_axis: str
    transfer: list[list[float]] = field(default_factory=list)  # ANGLES x SHELLS
    isotropic: list[float] = field(default_factory=list)  # SHELLS: the measured angles' mean

    def as_dict(self) -> dict[str, Any]:
        """What a tile store records: the beads and the isotropic transfer that draws them back
        (the full transfer is only needed to subtract them, and would swell the store's metadata)."""
        d = asdict(self)
        del d["transfer"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BeadModel:
        return cls([Bead(**b) for b in d["beads"]], d["tilt_axis"], d.get("transfer", []), d["isotropic"])


def _robust(values: np.ndarray) -> tuple[float, float]:
    med = float(np.median(values))
    return med, 1.4826 * float(np.median(np.abs(values - med)))


def find_beads(reader: MrcReader, voxel_size: float, tilt_axis: str = "y", progress: bool = False) -> list[Bead]:
    """The gold beads of the tomogram behind `reader`, streamed in blocks of z planes and y rows: peaks of the
    volume smoothed by one voxel that stand THRESHOLD robust standard deviations off its median and
    3x above the central crop's 99th percentile (beads are ~10x protein), all of the strongest
    one's sign, round and 5-25 nm across in the plane normal to the beam (where the wedge does not
    smear them) and at least half inside the volume, less the pieces of a stronger bead's streaks."""
    shape = reader.info.shape
    r_min = DIAMETERS_NM[0] * 5.0 / voxel_size
    r_max = DIAMETERS_NM[1] * 5.0 / voxel_size
    margin = math.ceil(r_max) + 4
    crop = gaussian_filter(read_central_crop(reader, CROP), 1.0, mode="nearest")  # smoothed as the blocks are
    med, scale = _robust(crop)
    if not scale > 0:  # a constant crop (or a bad voxel in it, which the blocks below name)
        scale = float("inf")
    threshold = max(THRESHOLD, 3.0 * float(np.percentile(np.abs(crop - med), 99.0)) / scale)
    found: list[Bead] = []
    pieces = [(z, y) for z in block_spans(shape[0], BLOCK) for y in block_spans(shape[1], BLOCK)]
    for (z0, z1), (y0, y1) in tqdm(pieces, desc="find beads", unit="block", disable=not progress):
        a, b = max(0, z0 - margin), min(shape[0], z1 + margin)
        c, d = max(0, y0 - margin), min(shape[1], y1 + margin)
        piece = reader.read_block(a, b, c, d)
        check_finite_block(piece, reader.path, a)  # bad voxels stop here, as chunk would stop on them
        dev = gaussian_filter(piece.astype(np.float32), 1.0, mode="nearest")
        dev = (dev - np.float32(med)) / np.float32(scale)
        mag = np.abs(dev)
        peaks = np.argwhere((mag > threshold) & (mag == maximum_filter(mag, size=3)))
        for z, y, x in peaks:
            if not (z0 <= z + a < z1 and y0 <= y + c < y1):  # the block that owns the peak counts it
                continue
            peak = float(dev[z, y, x])
            # its radius: the half-maximum area of its section normal to the beam
            ry = slice(max(0, y - margin), y + margin + 1)
            rx = slice(max(0, x - margin), x + margin + 1)
            blobs, _ = label(dev[z, ry, rx] * np.sign(peak) > abs(peak) / 2)
            section = np.argwhere(blobs == blobs[y - ry.start, x - rx.start])
            radius = math.sqrt(len(section) / math.pi)
            if not r_min <= radius <= r_max or not _round(section):
                continue
            # its centre: the centroid of its half-maximum voxels within 1.5 radii (not its streaks)
            reach = math.ceil(1.5 * radius)
            lo = np.maximum(np.array([z, y, x]) - reach, 0)
            box = dev[tuple(slice(int(v), int(v) + 2 * reach + 1) for v in lo)] * np.sign(peak)
            grid = np.indices(box.shape).reshape(3, -1) + lo[:, None]
            w = np.clip(box.ravel() - abs(peak) / 2, 0, None)
            w *= np.linalg.norm(grid - np.array([[z], [y], [x]]), axis=0) <= 1.5 * radius
            cz, cy, cx = (grid * w).sum(axis=1) / w.sum()
            bead = Bead(float(cz) + a, float(cy) + c, float(cx), radius, peak)
            inside = np.minimum(bead.center, np.array(shape) - 1 - bead.center)
            if np.all(inside >= radius / 2):  # a peak on a face is more often the reconstruction's edge
                found.append(bead)
    if not found:
        return []
    sign = np.sign(max(found, key=lambda bead: abs(bead.peak)).peak)
    return _without_streaks([bead for bead in found if np.sign(bead.peak) == sign], tilt_axis)


def _round(points: np.ndarray) -> bool:
    """Whether a section's voxels (N x 2) make a disc: its second moments within ROUND of each
    other. Two touching beads (a cluster, common on real grids) make a 5:1 section; one sphere
    drawn back for them would invent a bead between them, so a cluster is left as it is."""
    if len(points) < 3:
        return True
    eig = np.linalg.eigvalsh(np.cov(points.T.astype(np.float64)))
    return bool(eig[1] <= ROUND * max(eig[0], 1e-9))


def _without_streaks(candidates: list[Bead], tilt_axis: str) -> list[Bead]:
    """Strongest first; a candidate in the plane of an accepted bead (normal to the tilt axis) and
    less than STREAK of its peak is a piece of that bead's streaks."""
    axis = 1 if tilt_axis == "y" else 2
    kept: list[Bead] = []
    for cand in sorted(candidates, key=lambda b: -abs(b.peak)):
        if any(np.linalg.norm(cand.center - b.center) < b.radius + cand.radius for b in kept):
            continue  # the same bead (a plateau of its peak), or one overlapping it
        streak = any(
            abs(cand.center[axis] - b.center[axis]) <= b.radius + cand.radius and abs(cand.peak) < STREAK * abs(b.peak)
            for b in kept
        )
        if not streak:
            kept.append(cand)
    return sorted(kept, key=lambda b: (b.z, b.y, b.x))


# ----------------------------------------------------------------------------- the local boxes


def _half_sizes(bead: Bead, tilt_axis: str) -> tuple[int, int, int]:
    """Half sizes of a bead's box: REACH in the plane normal to the tilt axis, the bead along it."""
    along = math.ceil(bead.radius) + 4
    return (REACH, along, REACH) if tilt_axis == "y" else (REACH, REACH, along)


def _box(bead: Bead, tilt_axis: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The box's first voxel (global, may lie outside the volume) and its shape."""
    half = _half_sizes(bead, tilt_axis)
    lo = np.round(bead.center).astype(int) - np.array(half)
    return lo, tuple(2 * h for h in half)  # type: ignore[return-value]


def _sphere_spectrum(bead: Bead, lo: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Spectrum of a unit sphere of the bead's radius at its place in the box (partial-volume edge)."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d = np.sqrt(sum((g + o - c) ** 2 for g, o, c in zip(grids, lo, bead.center, strict=True)))
    return np.fft.fftn(np.clip(bead.radius + 0.5 - d, 0.0, 1.0).astype(np.float32))


def _bins(shape: tuple[int, int, int], tilt_axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Each frequency's (angle bin, shell bin) in the plane normal to the tilt axis."""
    kz = np.fft.fftfreq(shape[0])[:, None, None]
    other = np.fft.fftfreq(shape[2])[None, None, :] if tilt_axis == "y" else np.fft.fftfreq(shape[1])[None, :, None]
    angle = np.degrees(np.arctan2(kz, other)) % 180.0
    shell = np.hypot(kz, other)
    a = np.minimum((angle / 180.0 * ANGLES).astype(int), ANGLES - 1)
    s = np.minimum((shell / math.sqrt(0.5) * SHELLS).astype(int), SHELLS - 1)
    return np.broadcast_to(a, shape), np.broadcast_to(s, shape)


def _read_box(reader: MrcReader, lo: np.ndarray, shape: tuple[int, int, int], level: float) -> np.ndarray:
    """The volume in the box, less `level`, zero outside the volume."""
    vol = reader.info.shape
    out = np.zeros(shape, np.float32)
    a = np.maximum(lo, 0)
    b = np.minimum(lo + np.array(shape), vol)
    if np.any(b <= a):
        return out
    piece = reader.read_block(int(a[0]), int(b[0]), int(a[1]), int(b[1]))[:, :, a[2] : b[2]]
    out[a[0] - lo[0] : b[0] - lo[0], a[1] - lo[1] : b[1] - lo[1], a[2] - lo[2] : b[2] - lo[2]] = piece - level
    return out


def _normal_equations(reader: MrcReader, beads: list[Bead], tilt_axis: str, level: float) -> np.ndarray:
    """Per radius scale (RADIUS_SCALES) and bin (angle x shell): sum Re(D S*), sum |S|^2 and
    sum |D|^2 over the beads' boxes, (scales, 3, bins). Each box is read and transformed once
    per size it takes (the box follows the scaled radius along the tilt axis), not per scale."""
    sums = np.zeros((len(RADIUS_SCALES), 3, ANGLES * SHELLS))
    for bead in beads:
        boxes: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        for k, scale in enumerate(RADIUS_SCALES):
            scaled = replace(bead, radius=float(bead.radius * scale))
            lo, shape = _box(scaled, tilt_axis)
            if shape not in boxes:
                a, s = _bins(shape, tilt_axis)
                boxes[shape] = ((a * SHELLS + s).ravel(), np.fft.fftn(_read_box(reader, lo, shape, level)))
            idx, data = boxes[shape]
            sphere = _sphere_spectrum(scaled, lo, shape)
            sums[k, 0] += np.bincount(idx, (data * sphere.conj()).real.ravel(), ANGLES * SHELLS)
            sums[k, 1] += np.bincount(idx, (np.abs(sphere) ** 2).ravel(), ANGLES * SHELLS)
            sums[k, 2] += np.bincount(idx, (np.abs(data) ** 2).ravel(), ANGLES * SHELLS)
    return sums


def measure(reader: MrcReader, beads: list[Bead], wedge: Wedge) -> BeadModel:
    """The transfer H (angle x shell, normal to the tilt axis) that best maps the beads' spheres
    onto the data around them, least squares over all beads, with the beads' radii scaled by the
    one factor (RADIUS_SCALES) that leaves the least residual (a sphere's spectrum has zeros, and
    the half-maximum radius `find_beads` reads is biased by the blur); and H's isotropic form, its
    mean over the measured angles per shell (the data's resolution, without the wedge)."""
    level = float(np.median(read_central_crop(reader, CROP)))
    sums = _normal_equations(reader, beads, wedge.tilt_axis, level)
    best: tuple[float, int] | None = None
    for k, (num, den, power) in enumerate(sums):
        ok = den > 1e-6 * den.max()
        residual = float((power - np.where(ok, num**2 / np.maximum(den, 1e-30), 0.0)).sum())
        if best is None or residual < best[0]:
            best = (residual, k)
    assert best is not None
    num, den, _ = sums[best[1]]
    beads = [replace(b, radius=float(b.radius * RADIUS_SCALES[best[1]])) for b in beads]
    ok = den > 1e-6 * den.max()
    h = np.where(ok, num / np.maximum(den, 1e-30), 0.0).reshape(ANGLES, SHELLS)
    centres = np.radians((np.arange(ANGLES) + 0.5) * 180.0 / ANGLES)  # each bin's direction in the plane
    tilt = tilt_angle(np.sin(centres), np.cos(centres))
    measured = (tilt >= wedge.tilt_min + 2) & (tilt <= wedge.tilt_max - 2)
    num, den = num.reshape(ANGLES, SHELLS)[measured].sum(axis=0), den.reshape(ANGLES, SHELLS)[measured].sum(axis=0)
    iso = np.where(den > 0, num / np.maximum(den, 1e-30), 0.0)
    return BeadModel(beads, wedge.tilt_axis, h.tolist(), iso.tolist())


def _taper(shape: tuple[int, int, int], tilt_axis: str) -> np.ndarray:
    """1 over the inner three quarters of the box in the plane, a cosine to 0 at its faces (no hard cut of
    the streaks); 1 along the tilt axis."""
    axes = []
    for ax, n in enumerate(shape):
        if ax == (1 if tilt_axis == "y" else 2):
            axes.append(np.ones(n, np.float32))
            continue
        r = np.abs(np.arange(n) - n / 2) / (n / 2)
        axes.append(
            np.where(r < 0.75, 1.0, 0.5 + 0.5 * np.cos(np.pi * np.clip((r - 0.75) / 0.25, 0, 1))).astype(np.float32)
        )
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


def responses(model: BeadModel, isotropic: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each bead's (box origin, response), computed once for a streamed pass: through the
    measured transfer (its streaks, what `subtract_beads` removes), or the isotropic one in a
    small box (round, what `stitch` draws back)."""
    h = np.asarray(model.transfer)
    iso = np.asarray(model.isotropic)
    out = []
    for bead in model.beads:
        if isotropic:
            half = math.ceil(bead.radius) + 8
            lo = np.round(bead.center).astype(int) - half
            shape = (2 * half,) * 3
            grids = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij", sparse=True)
            k = np.sqrt(sum(g**2 for g in grids))
            t = iso[np.minimum((k / math.sqrt(0.5) * SHELLS).astype(int), SHELLS - 1)]
            resp = np.fft.ifftn(t * _sphere_spectrum(bead, lo, shape)).real.astype(np.float32)
        else:
            lo, shape = _box(bead, model.tilt_axis)
            a, s = _bins(shape, model.tilt_axis)
            resp = np.fft.ifftn(h[a, s] * _sphere_spectrum(bead, lo, shape)).real.astype(np.float32)
            resp *= _taper(shape, model.tilt_axis)
        out.append((lo, resp))
    return out


def render_beads(
    drawn: list[tuple[np.ndarray, np.ndarray]], block: tuple[int, int, int, int], width: int
) -> np.ndarray:
    """The beads' `responses` in planes z0:z1, rows y0:y1 (all `width` columns) of the volume."""
    z0, z1, y0, y1 = block
    out = np.zeros((z1 - z0, y1 - y0, width), np.float32)
    for lo, resp in drawn:
        hi = lo + np.array(resp.shape)
        a = np.maximum(lo, (z0, y0, 0))
        b = np.minimum(hi, (z1, y1, width))
        if np.any(b <= a):
            continue
        out[a[0] - z0 : b[0] - z0, a[1] - y0 : b[1] - y0, a[2] : b[2]] += resp[
            a[0] - lo[0] : b[0] - lo[0], a[1] - lo[1] : b[1] - lo[1], a[2] - lo[2] : b[2] - lo[2]
        ]
    return out


def model_beads(
    path: str | Path, wedge: Wedge, voxel_size: float, beads: list[Bead] | None = None, progress: bool = False
) -> BeadModel:
    """The beads of the MRC at `path` (found, unless `beads` gives them: the halves take the
    tomogram's) and the transfer measured from them; no beads, no transfer."""
    with MrcReader(path) as reader:
        if beads is None:
            beads = find_beads(reader, voxel_size, wedge.tilt_axis, progress)
        model = measure(reader, beads, wedge) if beads else BeadModel([], wedge.tilt_axis)
    if not np.isfinite(np.asarray(model.transfer)).all():
        raise CryogenError("the gold beads' measured transfer is not finite", path)
    return model


def subtract_beads(
    in_path: str | Path,
    out_path: str | Path,
    model: BeadModel,
    voxel_size: tuple[float, float, float],
    progress: bool = True,
) -> None:
    """Write the MRC `in_path` less its beads' responses (`model`) to `out_path`, streamed by
    blocks of z planes, with `voxel_size` and the header's origin and labels (a label added)."""
    in_path, out_path = Path(in_path), Path(out_path)
    drawn = responses(model, isotropic=False)
    with MrcReader(in_path) as reader:
        info = reader.info
        note = f"cryogen: the responses of {len(model.beads)} gold beads subtracted"
        with MrcWriter(out_path, info.shape, voxel_size, info.origin, [*info.labels, note]) as writer:
            pieces = [(z, y) for z in block_spans(info.shape[0], BLOCK // 2) for y in block_spans(info.shape[1], BLOCK)]
            for (z0, z1), (y0, y1) in tqdm(
                pieces, desc=f"subtract beads {in_path.name}", unit="block", disable=not progress
            ):
                piece = reader.read_block(z0, z1, y0, y1)
                check_finite_block(piece, in_path, z0)
                piece -= render_beads(drawn, (z0, z1, y0, y1), info.shape[2])
                writer.write_block(z0, y0, piece)
