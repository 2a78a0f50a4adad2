"""Cutting a tomogram into overlapping cubic tiles and blending them back without seams.

Grid: along each axis of length n, tiles of size T start every T - overlap voxels from -margin;
the last tile is shifted back to end exactly at n + margin, so every voxel is covered for any n.
The margin (overlap // 2) keeps the volume's faces inside the outermost tiles: g is trained on
patches whose faces across the tilt axis lie outside the compared cylinder (`recorrupted_loss`),
so a tile's outermost voxels are the network's least trusted, and at the volume's border no
neighbour would blend them away (they showed as a speckled first/last plane in z and x). An axis
shorter than a tile plus its margins gets one tile, centred. Voxels beyond the volume are filled
by mirror reflection.

Blending: each tile has a separable window, flat in the middle and rising as sin^2 over the
overlap at its faces. Along each axis the 1-D windows are divided by their sum, so they form a
partition of unity; the 3-D weights are products of the 1-D ones and therefore also sum to one
at every voxel. Stitching identical tiles is exact, and a smooth disagreement between neighbours
is cross-faded over the overlap instead of showing as a seam.

Both directions stream: chunk reads a slab of T z-planes x T rows at a time, stitch writes an
output block of about `block_voxels` at a time, so memory depends on the tile size and the
tomogram's width, not on its size.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from .beads import BeadModel, model_beads, render_beads, responses, subtract_beads
from .deconvolve import Deconvolution, deconvolve
from .errors import CryogenError
from .io.binning import bin_mrc
from .io.files import atomic_output
from .io.mrc import MrcReader, MrcWriter, RunningStats, check_finite_block, voxel_size_of
from .io.store import COARSE_LEVEL, TILE_ARRAY, TileMeta, create_store, open_store, read_tiles, zarr_array
from .model.content import tile_content
from .model.imaging import Wedge
from .model.noise import NoiseModel
from .model.noise_estimate import NOISE_CROP, check_halves, estimate_for_tomogram
from .qc.geometry import warn_geometry
from .qc.warnings import check_volume

log = logging.getLogger(__name__)

#: the thinnest axis, in binned voxels, a coarse level is made for
MIN_COARSE = 8


def axis_starts(n: int, tile: int, overlap: int, margin: int = 0) -> tuple[int, ...]:
    """Tile origins along one axis of length n, covering [-margin, n + margin)."""
    if n + 2 * margin <= tile:
        return (-((tile - n) // 2),)
    stride = tile - overlap
    starts = list(range(-margin, n + margin - tile, stride))
    starts.append(n + margin - tile)
    return tuple(starts)


def grid_margin(overlap: int) -> int:
    """Voxels of mirrored context beyond each face of the volume (see the module's docstring)."""
    return overlap // 2


def axis_window(tile: int, overlap: int) -> np.ndarray:
    """Un-normalised 1-D window: sin^2 ramps over `overlap` voxels at both ends, never zero."""
    w = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        w[:overlap] = ramp
        w[tile - overlap :] = ramp[::-1]
    return w


def axis_weights(n: int, tile: int, overlap: int, starts: tuple[int, ...]) -> list[np.ndarray]:
    """Per-tile 1-D weights (length `tile`) that sum to one at every voxel of [0, n)."""
    window = axis_window(tile, overlap)
    total = np.zeros(n, dtype=np.float64)
    for s in starts:
        lo, hi = max(s, 0), min(s + tile, n)
        total[lo:hi] += window[lo - s : hi - s]
    weights = []
    for s in starts:
        w = np.zeros(tile, dtype=np.float64)
        lo, hi = max(s, 0), min(s + tile, n)
        w[lo - s : hi - s] = window[lo - s : hi - s] / total[lo:hi]
        weights.append(w)
    return weights


def owned_ranges(n: int, tile: int, starts: tuple[int, ...]) -> list[tuple[int, int]]:
    """A partition of [0, n) into one range per tile, each inside its tile: the voxels nearer its
    centre than any other tile's (not simply start to next start: margins can put two starts below 0)."""
    inner = [(a + b + tile) // 2 for a, b in pairwise(starts)]  # between centres
    bounds = [0, *[min(max(b, 0), n) for b in inner], n]
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


@dataclass(frozen=True)
class TileGrid:
    shape: tuple[int, int, int]
    tile: int
    overlap: int

    def __post_init__(self) -> None:
        if self.tile < 8:
            raise CryogenError(f"tile size {self.tile} is too small (at least 8)")
        if not 0 <= self.overlap <= self.tile // 2:
            raise CryogenError(f"overlap {self.overlap} must be between 0 and half the tile size ({self.tile // 2})")

    @property
    def starts(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        margin = grid_margin(self.overlap)
        return tuple(axis_starts(n, self.tile, self.overlap, margin) for n in self.shape)  # type: ignore[return-value]


def tile_index(grid_shape: tuple[int, int, int], iz: int, iy: int, ix: int) -> int:
    return (iz * grid_shape[1] + iy) * grid_shape[2] + ix


def _pad_axis(block: np.ndarray, axis: int, start: int, tile: int, n: int) -> np.ndarray:
    before, after = max(0, -start), max(0, start + tile - n)
    if before == 0 and after == 0:
        return block
    pad = [(0, 0)] * block.ndim
    pad[axis] = (before, after)
    return np.pad(block, pad, mode="symmetric")


def chunk(
    mrc_path: str | Path,
    out_path: str | Path,
    tile: int = 64,
    overlap: int = 16,
    wedge: Wedge = Wedge(),
    voxel_size: float | None = None,
    progress: bool = True,
    check_geometry: bool = True,
    halves: tuple[str | Path, str | Path] | None = None,
    deconvolution: Deconvolution | None = None,
    beads: bool = True,
    coarse: bool = True,
) -> TileMeta:
    """Stream an MRC tomogram into a tile store at `out_path` (written atomically).

    Every tile is checked for NaN/Inf as it is read; global statistics are accumulated over a
    partition of the volume, so each voxel counts once. With `check_geometry`, a central crop's
    power spectrum is compared with the configured wedge and a warning is logged if the tilt
    axis or the beam direction looks different (see `cryogen.qc.geometry`); it never stops chunk.
    With `deconvolution`, the tomogram (and its halves) are first CTF-deconvolved into temporary
    files beside the output (`cryogen.deconvolve`), and the tiles are those of the deconvolved
    volume; its noise model is the halves' (deconvolved alike) or, without halves, the raw
    tomogram's carried through the filter (`_deconvolved_noise`); the store records what was done.
    With `beads`, gold fiducials are looked for, and where there are any, the tiles are those of
    the tomogram (and halves) less the beads' responses, their streaks (`cryogen.beads`); the
    store records the beads, and `stitch` draws them back round.
    With `coarse`, the store also holds its coarse level (`COARSE_LEVEL`): the prepared tomogram
    (and halves) binned 2x and chunked alike, with a noise model of its own (`_coarse_level`).
    """
    plain = (mrc_path, mrc_path, out_path, tile, overlap, wedge, voxel_size, progress, check_geometry, halves)
    if deconvolution is None and not beads:
        return _chunk(*plain, coarse=coarse)
    with MrcReader(mrc_path) as reader:  # bad input stops before the preparation's work
        TileGrid(reader.info.shape, tile, overlap)
        vsize = voxel_size_of(reader.info.voxel_size, voxel_size, mrc_path)
    if halves is not None:
        check_halves(mrc_path, halves)
    found = None
    if beads and deconvolution is None:  # most tomograms have none: then no temporary copy at all
        found = model_beads(mrc_path, wedge, vsize[2], progress=progress)
        if not found.beads:
            return _chunk(*plain, coarse=coarse)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.prepare-", dir=out.parent) as tmp:
        sources = [Path(mrc_path), *(Path(h) for h in halves or ())]
        if deconvolution is not None:
            done = [Path(tmp) / f"{i}.mrc" for i in range(len(sources))]
            for i, (src, dst) in enumerate(zip(sources, done, strict=True)):
                # the tomogram keeps its header's voxel size (unless overridden); the halves' are not read
                deconvolve(src, dst, deconvolution, voxel_size=vsize[2] if i or voxel_size else None, progress=progress)
            sources = done
        if beads and found is None:  # on the deconvolved tomogram
            found = model_beads(sources[0], wedge, vsize[2], progress=progress)
        if found is not None and found.beads:
            log.info("%s: %d gold beads found; their streaks are subtracted", Path(mrc_path).name, len(found.beads))
            subtracted = [Path(tmp) / f"beads{i}.mrc" for i in range(len(sources))]
            for i, (src, dst) in enumerate(zip(sources, subtracted, strict=True)):
                model = found if i == 0 else model_beads(src, wedge, vsize[2], found.beads)  # each half's own
                subtract_beads(src, dst, model, vsize, progress=progress)
            sources = subtracted
        return _chunk(
            sources[0],
            mrc_path,
            out_path,
            tile,
            overlap,
            wedge,
            voxel_size,
            progress,
            check_geometry,
            (sources[1], sources[2]) if halves is not None else None,
            deconvolution.as_dict() if deconvolution is not None else None,
            found.as_dict() if found is not None and found.beads else None,
            coarse=coarse,
        )


def _chunk(
    read_path: str | Path,
    source: str | Path,
    out_path: str | Path,
    tile: int,
    overlap: int,
    wedge: Wedge,
    voxel_size: float | None,
    progress: bool,
    check_geometry: bool,
    halves: tuple[str | Path, str | Path] | None,
    deconvolution: dict | None = None,
    beads: dict | None = None,
    coarse: bool = True,
    warn: bool = True,
) -> TileMeta:
    """`chunk` of the volume at `read_path`, recorded as coming from `source`; `warn`: check the
    volume for what would mislead training (off for the coarse level: said once, at full size)."""
    with MrcReader(read_path) as reader:
        info = reader.info
        grid = TileGrid(info.shape, tile, overlap)
        vsize = voxel_size_of(info.voxel_size, voxel_size, source)
        if halves is not None:
            check_halves(read_path, halves)
        if check_geometry:
            warn_geometry(reader, wedge)
        meta = TileMeta(
            source=str(source),
            source_shape=info.shape,
            tile=tile,
            overlap=overlap,
            starts=grid.starts,
            voxel_size=vsize,
            origin=info.origin,
            wedge=wedge,
            labels=info.labels,
            deconvolution=deconvolution,
            beads=beads,
        )
        with atomic_output(out_path) as tmp:
            group = create_store(tmp, meta)
            stats, meta.content = _write_tiles(reader, source, zarr_array(group, TILE_ARRAY, tmp), meta, progress)
            if stats.min == stats.max:
                raise CryogenError("volume is constant: there is nothing to restore", source)
            meta.stats = {"mean": stats.mean, "std": stats.std, "min": stats.min, "max": stats.max}
            # the noise model, from the even/odd halves when given, for training and MAP
            noise = estimate_for_tomogram(read_path, wedge, halves)
            if deconvolution is not None and halves is None:
                deconv = Deconvolution.from_dict(deconvolution)
                noise = _deconvolved_noise(source, info.shape, noise, wedge, deconv, vsize[2])
            meta.noise = noise.to_dict()
            group.attrs["cryogen"] = meta.to_json()
            if coarse:
                _coarse_level(read_path, info.shape, source, Path(tmp), tile, overlap, wedge, vsize, halves)
        if warn:
            check_volume(reader, wedge, meta.stats, noise)  # warnings only: no signal, unstable sigma, noise model
    return meta


def _coarse_level(
    read_path: str | Path,
    shape: tuple[int, int, int],
    source: str | Path,
    store: Path,
    tile: int,
    overlap: int,
    wedge: Wedge,
    voxel_size: tuple[float, float, float],
    halves: tuple[str | Path, str | Path] | None,
) -> None:
    """Write the coarse level into `store` (being written): the volume at `read_path` (of `shape`; already
    deconvolved, beads subtracted) and its halves binned 2x, into temporary files beside the
    store, then chunked with the same tile grid settings. Training learns the coarse network from
    it (`cryogen.method.step.coarse_step`): binned, the data are less noisy and a patch spans twice the
    specimen, so the wedge's low frequencies, most of its power, are learned from far more of the
    specimen per step (README, Quality: the coarse network). Skipped, with a note in the log,
    where a binned axis would be thinner than MIN_COARSE voxels. The noise model is estimated on
    the binned data (from the binned halves where given); after a CTF deconvolution without
    halves it is not carried through the filter as the full-size one is."""
    if min(shape) < 2 * MIN_COARSE:
        log.info("%s: too thin for a coarse level (%s voxels): the two-scale fill uses g", Path(source).name, shape)
        return
    with tempfile.TemporaryDirectory(prefix=f".{store.name}.coarse-", dir=store.parent) as tmp:
        paths = [Path(read_path), *(Path(h) for h in halves or ())]
        binned = [Path(tmp) / f"{i}.mrc" for i in range(len(paths))]
        for src, dst in zip(paths, binned, strict=True):
            bin_mrc(src, dst, voxel_size)
        _chunk(
            binned[0],
            source,
            store / COARSE_LEVEL,
            tile,
            overlap,
            wedge,
            None,
            False,
            False,
            (binned[1], binned[2]) if halves is not None else None,
            coarse=False,
            warn=False,
        )


def _deconvolved_noise(
    source: str | Path,
    shape: tuple[int, int, int],
    deconvolved: NoiseModel,
    wedge: Wedge,
    deconv: Deconvolution,
    voxel_size: float,
) -> NoiseModel:
    """The noise model of a CTF-deconvolved tomogram without halves: estimated on the raw tomogram
    at `source` (where the noise is flat enough for the data-alone estimate) and carried through
    the filter; the diagnostics are those of the deconvolved data (`deconvolved`'s). On the
    deconvolved data the flat estimate, made at 0.4-0.5 cycles/voxel, is wrong wherever the
    filter boosts the noise less or more than there (README: it inverted bands). `shape`: the
    tomogram's (its central crop is what the model was estimated on)."""
    transfer = deconv.kernel_transfer(voxel_size)
    raw = estimate_for_tomogram(source, wedge)
    crop = tuple(min(NOISE_CROP, n) for n in shape)
    shaped = raw.filtered(lambda k: transfer(k) ** 2, crop, wedge)
    return replace(
        shaped,
        data_variance=deconvolved.data_variance,
        data_psd=deconvolved.data_psd,
        data_missing_psd=deconvolved.data_missing_psd,
    )


def _write_tiles(
    reader: MrcReader, path: str | Path, array: zarr.Array, meta: TileMeta, progress: bool
) -> tuple[RunningStats, list[float]]:
    """Stream the volume into `array`, (n_tiles, T, T, T), one row of tiles (T z-planes x T rows
    of voxels) at a time, checking every block for NaN/Inf; returns the volume's statistics,
    accumulated over a partition of it (each voxel counts once), and each tile's content
    (`cryogen.model.content.tile_content`)."""
    shape, tile, starts, gshape = meta.source_shape, meta.tile, meta.starts, meta.grid_shape
    own = [owned_ranges(n, tile, s) for n, s in zip(shape, starts, strict=False)]
    stats = RunningStats()
    content: list[float] = []
    rows = [(iz, iy) for iz in range(gshape[0]) for iy in range(gshape[1])]
    for iz, iy in tqdm(rows, desc=f"chunk {Path(path).name}", unit="row", disable=not progress, mininterval=2):
        sz, sy = starts[0][iz], starts[1][iy]
        z0, z1 = max(sz, 0), min(sz + tile, shape[0])
        y0, y1 = max(sy, 0), min(sy + tile, shape[1])
        block = reader.read_block(z0, z1, y0, y1)
        check_finite_block(block, path, z0)
        (oz0, oz1), (oy0, oy1) = own[0][iz], own[1][iy]
        stats.update(block[oz0 - z0 : oz1 - z0, oy0 - y0 : oy1 - y0])
        block = _pad_axis(_pad_axis(block, 0, sz, tile, shape[0]), 1, sy, tile, shape[1])
        row = np.empty((gshape[2], tile, tile, tile), dtype=np.float32)
        for ix, sx in enumerate(starts[2]):
            x0, x1 = max(sx, 0), min(sx + tile, shape[2])
            row[ix] = _pad_axis(block[:, :, x0:x1], 2, sx, tile, shape[2])
            content.append(tile_content(row[ix]))
        first = tile_index(gshape, iz, iy, 0)
        array[first : first + gshape[2]] = row
    return stats, content


def stitch(
    store_path: str | Path,
    out_path: str | Path,
    array_name: str = TILE_ARRAY,
    block_voxels: int = 2_000_000,
    progress: bool = True,
) -> None:
    """Blend the tiles of a store back into an MRC volume (written atomically, streaming); the
    gold beads chunk subtracted (if any) are drawn back into the restored volume, round."""
    group, meta = open_store(store_path)
    if array_name not in group:
        raise CryogenError(f"store has no '{array_name}' array (was it reconstructed with samples?)", store_path)
    array = zarr_array(group, array_name, store_path)
    shape, tile, starts = meta.source_shape, meta.tile, meta.starts
    gshape = meta.grid_shape
    weights = [
        [w.astype(np.float32) for w in axis_weights(n, tile, meta.overlap, s)]
        for n, s in zip(shape, starts, strict=False)
    ]
    own = [owned_ranges(n, tile, s) for n, s in zip(shape, starts, strict=False)]
    # merge consecutive y ranges into blocks of at most ~block_voxels voxels
    z_blocks = own[0]
    y_blocks: list[tuple[int, int]] = []
    for lo, hi in own[1]:
        if y_blocks and (hi - y_blocks[-1][0]) * tile * shape[2] <= block_voxels:
            y_blocks[-1] = (y_blocks[-1][0], hi)
        else:
            y_blocks.append((lo, hi))
    labels = [*[lab for lab in meta.labels if lab][-9:], f"cryogen stitch of {Path(store_path).name}"]
    beads = BeadModel.from_dict(meta.beads) if meta.beads and array_name == TILE_ARRAY else None
    drawn = responses(beads, isotropic=True) if beads is not None else []
    total = len(z_blocks) * len(y_blocks)
    with (
        MrcWriter(out_path, shape, meta.voxel_size, meta.origin, labels) as writer,
        tqdm(
            total=total, desc=f"stitch {Path(out_path).name}", unit="block", disable=not progress, mininterval=2
        ) as bar,
    ):
        for bz0, bz1 in z_blocks:
            tz = [i for i, s in enumerate(starts[0]) if s < bz1 and s + tile > bz0]
            for by0, by1 in y_blocks:
                ty = [i for i, s in enumerate(starts[1]) if s < by1 and s + tile > by0]
                out = np.zeros((bz1 - bz0, by1 - by0, shape[2]), dtype=np.float32)
                for iz in tz:
                    sz = starts[0][iz]
                    z0, z1 = max(sz, bz0), min(sz + tile, bz1)
                    wz = weights[0][iz][z0 - sz : z1 - sz]
                    for iy in ty:
                        sy = starts[1][iy]
                        y0, y1 = max(sy, by0), min(sy + tile, by1)
                        wzy = wz[:, None] * weights[1][iy][y0 - sy : y1 - sy][None, :]
                        first = tile_index(gshape, iz, iy, 0)
                        for ix, sx in enumerate(starts[2]):
                            # one tile at a time: memory holds one tile, not a row of them
                            t = read_tiles(array, first + ix, first + ix + 1, store_path)[0]
                            x0, x1 = max(sx, 0), min(sx + tile, shape[2])
                            w = wzy[:, :, None] * weights[2][ix][x0 - sx : x1 - sx][None, None, :]
                            out[z0 - bz0 : z1 - bz0, y0 - by0 : y1 - by0, x0:x1] += (
                                w * t[z0 - sz : z1 - sz, y0 - sy : y1 - sy, x0 - sx : x1 - sx]
                            )
                if drawn:
                    out += render_beads(drawn, (bz0, bz1, by0, by1), shape[2])
                writer.write_block(bz0, by0, out)
                bar.update()
