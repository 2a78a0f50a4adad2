"""Tomograms from aligned tilt series: weighted back-projection, streamed slab by slab.

Many datasets hold aligned tilt series (IMOD `.ali`: an MRC stack of one image per tilt, (n_tilts,
ny, nx), the tilt axis along the images' y) and their angles (`.tlt`) rather than tomograms.
Alignment is not done here: it stays with IMOD or AreTomo. With the tilt axis along y every
y-row of the stack is an independent 2-D problem (`cryogen.sim.projection`), so the tomogram is
made a slab of rows at a time: those rows of every image are read (plain reads, as `MrcReader`
does), binned, filtered and back-projected by `weighted_backprojection` (the one implementation,
which the tilt-series simulation uses too), and written into the output MRC (`MrcWriter`:
renamed when complete). Memory depends on the thickness, the width and the number of tilts (the
projector), never on the number of rows.

Geometry and conventions, those of `cryogen.sim.tilt_series.reconstruct` with the tilt axis y:
image pixel (y, u) of tilt t is detector row y, pixel u; the output is (z, y, x), z the beam at
zero tilt, `thickness` voxels centred on the images' middle. Each tilt stands for the mean angular
step, (max - min) / (n - 1). Binning by `binning` averages binning x binning pixels (IMOD's
`newstack -bin`; the rows and columns left over at the far edges are dropped) and divides by
`binning`, so the line integrals are in binned voxels and a binned tomogram has the values of
the unbinned one. The voxel size is the stack's x pixel size (header) times `binning`.

The even and odd half tomograms come from alternating tilts in ascending angle order, not in
acquisition order: a dose-symmetric series alternates sides of zero, so alternating its
acquisitions would give one half all the negative tilts and the other all the positive ones
(two different wedges). Each half's tilts stand for twice the step, so the full tomogram is the
mean of the halves (back-projection is linear); made that way, the halves cost nothing extra.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import CryogenError, setting
from .io.mrc import MrcReader, MrcWriter
from .io.tilts import read_tilt_angles
from .sim.projection import MAX_TILT, RECON_FILTERS, SlabProjector, weighted_backprojection

__all__ = ["Backprojection", "TiltStackReader", "backproject", "default_thickness", "half_tilts"]

log = logging.getLogger(__name__)


class TiltStackReader(MrcReader):
    """Streaming reads of an MRC image stack, (n_images, ny, nx): `read_block(0, n, y0, y1)` gives
    rows y0:y1 of every image. MrcReader refuses a stack as a tomogram (MRC2014 stacks say space
    group 0, mz 1; IMOD's say mz = n); here it is what is wanted."""

    stack = True


@dataclass(frozen=True)
class Backprojection:
    """What `backproject` wrote: the tomogram's (z, y, x) shape and voxel size (angstrom), the
    angles in ascending order and the step each stands for, and the files (tomogram, halves)."""

    shape: tuple[int, int, int]
    voxel_size: float
    angles: tuple[float, ...]
    step: float
    outputs: tuple[Path, ...]


def default_thickness(width: int) -> int:
    """The tomogram's thickness when none is given: a quarter of its width (binned x), the order
    of a cellular specimen's; give the real one when known (thicker costs time, thinner cuts)."""
    return max(1, int(width) // 4)


def half_tilts(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the even and odd halves' tilts: alternating in ascending angle order."""
    order = np.argsort(np.asarray(angles), kind="stable")
    return np.sort(order[0::2]), np.sort(order[1::2])


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise CryogenError(f"{setting(name)} must be a positive integer, not {value!r}")
    return int(value)


def _bin(block: np.ndarray, binning: int) -> np.ndarray:
    """(tilt, binning * rows, nx) -> (tilt, rows, nx // binning): means of binning x binning
    pixels, divided by binning (line integrals in binned voxels)."""
    if binning == 1:
        return block
    n, rows, nx = block.shape
    width = nx // binning
    blocks = block[:, :, : width * binning].reshape(n, rows // binning, binning, width, binning)
    return (blocks.mean(axis=(2, 4), dtype=np.float32) / np.float32(binning)).astype(np.float32, copy=False)


def _check_finite(block: np.ndarray, angles: np.ndarray, row0: int, path: Path) -> None:
    if not np.isfinite(block).all():
        t, y, x = (int(i) for i in np.argwhere(~np.isfinite(block))[0])
        kind = "NaN" if np.isnan(block[t, y, x]) else "Inf"
        raise CryogenError(f"image {t} (tilt {angles[t]:g}) has {kind} pixels (first at y={row0 + y}, x={x})", path)


def _angles_for(stack: Path, tilt_file: str | Path, n_images: int) -> np.ndarray:
    """The tilt file's angles, one per image of the stack, within what the projector takes."""
    tilts = read_tilt_angles(tilt_file)
    if len(tilts.angles) != n_images:
        raise CryogenError(f"{n_images} images, but the tilt file {tilts.path} holds {len(tilts.angles)} angles", stack)
    beyond = [a for a in tilts.angles if abs(a) > MAX_TILT]
    if beyond:
        raise CryogenError(
            f"tilt angle {beyond[0]:g} is beyond +-{MAX_TILT:g} degrees (the beam would run along the slab)",
            tilts.path,
        )
    tilts.wedge()  # at least two different angles
    return np.asarray(tilts.angles, dtype=np.float64)


def backproject(
    stack: str | Path,
    tilt_file: str | Path,
    out: str | Path,
    halves: tuple[str | Path, str | Path] | None = None,
    *,
    binning: int = 1,
    thickness: int | None = None,
    recon_filter: str = "ramp",
    slab: int = 16,
    labels: list[str] | None = None,
    progress: bool = True,
) -> Backprojection:
    """Reconstruct the aligned tilt series `stack` (MRC, (n_tilts, ny, nx), tilt axis y) taken at
    the angles of `tilt_file` (IMOD, SerialEM or AreTomo; one per image, in the stack's order)
    into the tomogram `out`, and with `halves` (EVEN, ODD) the even/odd half tomograms, by
    weighted back-projection ('ramp' or 'sirt' `recon_filter`), `slab` binned rows at a time.

    `thickness` (z voxels of the binned tomogram) defaults to `default_thickness` of its width.
    A bad stack or tilt file (angle count, angles beyond MAX_TILT, a non-stack, NaN pixels) raises
    a one-line CryogenError naming it, and no output appears: all are renamed only when complete.
    """
    stack, out = Path(stack), Path(out)
    outputs = [out, *(Path(p) for p in halves)] if halves is not None else [out]
    if len({p.resolve() for p in [stack, *outputs]}) != len(outputs) + 1:
        raise CryogenError("the outputs must be different files, none of them the tilt series itself", out)
    binning, slab = _positive_int("binning", binning), _positive_int("slab", slab)
    if recon_filter not in RECON_FILTERS:
        raise CryogenError(f"reconstruction filter must be one of {', '.join(RECON_FILTERS)}, not {recon_filter!r}")
    with TiltStackReader(stack) as reader:
        n, ny, nx = reader.shape
        angles = _angles_for(stack, tilt_file, n)
        rows, width = ny // binning, nx // binning
        if rows < 1 or width < 1:
            raise CryogenError(f"binning {binning} leaves no pixel of its {ny} x {nx} images", stack)
        nz = default_thickness(width) if thickness is None else _positive_int("thickness", thickness)
        step = float(angles.max() - angles.min()) / (n - 1)
        voxel = reader.info.voxel_size[2] * binning
        if voxel <= 0:
            log.warning("%s: the header gives no pixel size; the tomogram's voxel size is 0 (unknown)", stack)
        # with halves, one projector per half (together the size of one for all tilts); the full
        # tomogram is their mean
        parts = list(half_tilts(angles)) if halves is not None else [np.arange(n)]
        weight = step * len(parts)  # each tilt of a half stands for two steps
        projectors = [SlabProjector(nz, width, angles[p]) for p in parts]
        shape = (nz, rows, width)
        log.info(
            "back-projecting %d tilts (%g to %g, step %.3g) of %s: %d x %d x %d voxels of %g A, binning %d, %s filter",
            n, angles.min(), angles.max(), step, stack, *shape, voxel, binning, recon_filter,
        )  # fmt: skip
        with contextlib.ExitStack() as files:
            writers = [files.enter_context(MrcWriter(p, shape, voxel, labels=labels)) for p in outputs]
            bar = files.enter_context(
                tqdm(total=rows, desc=f"backproject {stack.name}", unit="row", disable=not progress, mininterval=2)
            )
            for y0 in range(0, rows, slab):
                y1 = min(y0 + slab, rows)
                raw = reader.read_block(0, n, y0 * binning, y1 * binning)
                _check_finite(raw, angles, y0 * binning, stack)
                images = _bin(raw, binning)
                vols = [
                    weighted_backprojection(images[p], proj, weight, recon_filter)
                    for p, proj in zip(parts, projectors, strict=True)
                ]
                if halves is not None:
                    vols.insert(0, (vols[0] + vols[1]) * np.float32(0.5))
                for writer, vol in zip(writers, vols, strict=True):
                    writer.write_block(0, y0, vol)
                bar.update(y1 - y0)
    return Backprojection(shape, voxel, tuple(float(a) for a in np.sort(angles)), step, tuple(outputs))
