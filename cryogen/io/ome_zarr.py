"""Export a restored tomogram as OME-Zarr (NGFF 0.4 on Zarr v2), the layout of the CryoET Data
Portal and copick, which napari (napari-ome-zarr), copick and ome-zarr-py open directly.

Layout of `OUT.zarr` (one image, one multiscale):

    OUT.zarr/.zattrs     multiscales (version 0.4, axes z/y/x of type space in angstrom, one
                         dataset per level with a scale = voxel size x 2^level and, for binned
                         levels, the translation that puts each binned voxel at the centre of the
                         2x2x2 block it averages), omero (a display window), cryogen (provenance:
                         source file, its MRC origin, what the values are)
    OUT.zarr/0, 1, ...   float32 arrays, chunks 256^3 (capped at the shape), Blosc-lz4, '/' keys

Level l + 1 is the mean of 2x2x2 blocks of level l (a block cut by an odd edge averages the
voxels it has), and levels are added until the last one fits in one chunk. The MRC origin is not
put into the coordinate transformations: copick and the Data Portal place annotations relative to
the tomogram's first voxel, so a translation there would shift every pick; it is kept in the
`cryogen` attributes instead.

The per-voxel uncertainty (a std MRC from `stitch --std`) goes into a sibling image with the same
layout, `OUT_std.zarr` (`OUT_std.ome.zarr` for `OUT.ome.zarr`): napari opens it as a second layer
on the same grid, and copick sees it as another tomogram type of the same voxel spacing. (NGFF
`labels` are for integer segmentations, so they are no place for a float map.)

Streaming: level 0 is copied from the MRC in blocks of one chunk of z planes x one chunk of rows
x the full width; each coarser level is built from the previous level's array in blocks of the
same size, reading at most an equal amount of the finer level at a time. Memory is therefore
about chunk^2 x width voxels whatever the tomogram's depth and height, and the whole output is
written under a temporary name and renamed only when complete.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import CryogenError, setting
from .binning import bin2
from .files import atomic_output
from .mrc import MrcReader, RunningStats, check_finite_block

__all__ = [
    "AXES",
    "CHUNK",
    "NGFF_VERSION",
    "bin2",
    "chunk_blocks",
    "create_levels",
    "display_window",
    "fill_levels",
    "multiscales",
    "pyramid_shapes",
    "read_level",
    "std_sibling",
    "write_ome_zarr",
]

NGFF_VERSION = "0.4"
#: Chunk edge of every level, as written by the CryoET Data Portal.
CHUNK = 256
AXES = ("z", "y", "x")


def pyramid_shapes(shape: tuple[int, int, int], chunk: int = CHUNK) -> list[tuple[int, int, int]]:
    """Shapes of the levels: halved (rounding up) until the last one fits in one chunk."""
    if chunk < 1:
        raise CryogenError(f"chunk size must be positive, not {chunk}")
    shapes = [tuple(int(n) for n in shape)]
    while max(shapes[-1]) > chunk:
        shapes.append(tuple(math.ceil(n / 2) for n in shapes[-1]))
    return shapes  # type: ignore[return-value]


def multiscales(
    shapes: list[tuple[int, int, int]], voxel_size: tuple[float, float, float], name: str
) -> list[dict[str, Any]]:
    """The NGFF 0.4 `multiscales` attribute for a pyramid of `shapes` (voxel size z, y, x in A)."""
    datasets = []
    for level in range(len(shapes)):
        f = 2**level
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [float(v) * f for v in voxel_size]}]
        if level > 0:
            # voxel i of this level averages voxels f*i .. f*i + f - 1 of level 0: its centre
            transforms.append({"type": "translation", "translation": [float(v) * (f - 1) / 2 for v in voxel_size]})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    return [
        {
            "version": NGFF_VERSION,
            "name": name,
            "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in AXES],
            "datasets": datasets,
            "type": "mean",
            "metadata": {"description": "2x2x2 block mean per level", "method": "cryogen.io.ome_zarr.bin2"},
        }
    ]


def display_window(name: str, stats: RunningStats) -> dict[str, Any]:
    """A display window (mean +- 3 std, within the data range), so viewers open with a useful
    contrast instead of the full range of a few outliers."""
    lo, hi = float(stats.min), float(stats.max)
    start = max(lo, stats.mean - 3 * stats.std)
    end = min(hi, stats.mean + 3 * stats.std)
    return {
        "name": name,
        "version": NGFF_VERSION,
        "channels": [
            {
                "label": name,
                "color": "FFFFFF",
                "active": True,
                "window": {"min": lo, "max": hi, "start": start, "end": end},
            }
        ],
        "rdefs": {"model": "greyscale"},
    }


def std_sibling(out: str | Path) -> Path:
    """Where the uncertainty image of `out` goes: NAME_std.zarr (NAME_std.ome.zarr)."""
    p = Path(out)
    for suffix in (".ome.zarr", ".zarr"):
        if p.name.endswith(suffix):
            return p.with_name(p.name[: -len(suffix)] + "_std" + suffix)
    return p.with_name(p.name + "_std")


def _voxel_size(reader: MrcReader, override: float | None) -> tuple[float, float, float]:
    if override is not None:
        if not (override > 0 and np.isfinite(override)):
            raise CryogenError(f"voxel size must be positive, not {override}")
        return (float(override),) * 3
    vs = reader.info.voxel_size
    if min(vs) <= 0:
        raise CryogenError(
            f"voxel size in the header is 0 (unknown); give it with {setting('voxel_size')}", reader.path
        )
    return vs


def create_levels(group: Any, shapes: list[tuple[int, int, int]], chunk: int) -> list[Any]:
    """The float32 arrays "0", "1", ... of a multiscale in `group`, one per shape: chunks of `chunk`
    (capped at the shape), Blosc-lz4 and '/' keys, as NGFF 0.4 and the Data Portal have them."""
    import numcodecs

    return [
        group.create_array(
            str(level),
            shape=shape,
            chunks=tuple(min(chunk, n) for n in shape),
            dtype="float32",
            compressors=numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
            fill_value=0.0,
            chunk_key_encoding={"name": "v2", "separator": "/"},  # NGFF 0.4 requires '/'
        )
        for level, shape in enumerate(shapes)
    ]


def chunk_blocks(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """(z0, z1, y0, y1) of the blocks (one chunk of z x one chunk of y x all x) covering `shape`."""
    return [
        (z0, min(z0 + chunks[0], shape[0]), y0, min(y0 + chunks[1], shape[1]))
        for z0 in range(0, shape[0], chunks[0])
        for y0 in range(0, shape[1], chunks[1])
    ]


def fill_levels(
    reader: MrcReader,
    levels: list[Any],
    shapes: list[tuple[int, int, int]],
    desc: str,
    progress: bool,
    constant_error: str | None,
) -> RunningStats:
    """Stream `reader` into the first of the pyramid's `levels` (checked finite) and average each
    level into the next (2 x 2 x 2 means), a block of one output chunk at a time; return level
    0's running statistics. `constant_error`: the error to raise on a constant volume (None: allowed)."""
    stats = RunningStats()
    plan = [chunk_blocks(s, a.chunks) for s, a in zip(shapes, levels, strict=True)]
    with tqdm(total=sum(map(len, plan)), desc=desc, unit="block", disable=not progress, mininterval=2) as bar:
        for z0, z1, y0, y1 in plan[0]:
            block = reader.read_block(z0, z1, y0, y1)
            check_finite_block(block, reader.path, z0)
            stats.update(block)
            levels[0][z0:z1, y0:y1, :] = block
            bar.update()
        if constant_error is not None and stats.min == stats.max:
            raise CryogenError(constant_error, reader.path)
        for level in range(1, len(shapes)):
            fine, coarse = levels[level - 1], levels[level]
            fz, fy, _ = shapes[level - 1]
            step = max(1, coarse.chunks[0] // 8)  # reads of the finer level stay <= one output block
            for z0, z1, y0, y1 in plan[level]:
                out = np.empty((z1 - z0, y1 - y0, shapes[level][2]), dtype=np.float32)
                for zs in range(z0, z1, step):
                    ze = min(zs + step, z1)
                    src = np.asarray(fine[2 * zs : min(2 * ze, fz), 2 * y0 : min(2 * y1, fy), :], dtype=np.float32)
                    out[zs - z0 : ze - z0] = bin2(src)
                coarse[z0:z1, y0:y1, :] = out
                bar.update()
    return stats


def _write_image(
    target: Path,
    reader: MrcReader,
    voxel_size: tuple[float, float, float],
    chunk: int,
    name: str,
    provenance: dict[str, Any],
    progress: bool,
    allow_constant: bool = False,
) -> list[tuple[int, int, int]]:
    """Write one OME-Zarr image at `target` (a temporary path) from `reader`; return level shapes."""
    import zarr

    shapes = pyramid_shapes(reader.shape, chunk)
    group = zarr.open_group(str(target), mode="w", zarr_format=2)
    levels = create_levels(group, shapes, chunk)
    constant = None if allow_constant else "volume is constant: nothing to show"
    stats = fill_levels(reader, levels, shapes, f"export {Path(reader.path).name}", progress, constant)
    group.attrs.update(
        {
            "multiscales": multiscales(shapes, voxel_size, name),
            "omero": display_window(name, stats),
            "cryogen": provenance,
        }
    )
    return shapes


def write_ome_zarr(
    mrc_path: str | Path,
    out_path: str | Path,
    std_path: str | Path | None = None,
    voxel_size: float | None = None,
    chunk: int = CHUNK,
    progress: bool = True,
) -> list[Path]:
    """Export an MRC volume (and optionally its std map) as OME-Zarr; return the paths written.

    Inputs are checked (readable, same shape, finite, not constant, known voxel size) before or
    while writing; on any error nothing is left at the output paths.
    """
    out = Path(out_path)
    if not out.name.endswith(".zarr"):
        raise CryogenError(
            "an OME-Zarr output is a folder whose name ends in .zarr (e.g. tomo.zarr or tomo.ome.zarr)", out
        )
    if chunk < 8:
        raise CryogenError(f"chunk size {chunk} is too small (at least 8)")
    targets = [(Path(mrc_path), out, "restored")]
    if std_path is not None:
        targets.append((Path(std_path), std_sibling(out), "std"))
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(MrcReader(src)) for src, _, _ in targets]
        main = readers[0]
        vsize = _voxel_size(main, voxel_size)
        for r in readers[1:]:
            if r.shape != main.shape:
                raise CryogenError(f"shape {r.shape} differs from the volume's {main.shape} ({main.path})", r.path)
        written = []
        for reader, (src, dest, kind) in zip(readers, targets, strict=False):
            tmp = stack.enter_context(atomic_output(dest))
            name = dest.name[: -len(".zarr")].removesuffix(".ome")
            provenance = {
                "source": str(src),
                "kind": kind,
                "origin_xyz_angstrom": list(reader.info.origin),
                "source_voxel_size_zyx_angstrom": list(reader.info.voxel_size),
                "labels": [lab for lab in reader.info.labels if lab],
            }
            # a std map may be constant (e.g. zero without posterior samples); a volume may not
            _write_image(tmp, reader, vsize, chunk, name, provenance, progress, allow_constant=kind == "std")
            written.append(dest)
    # the ExitStack renamed the temporaries (the std image first, then the main one)
    return written


def read_level(path: str | Path, level: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Level `level` of an OME-Zarr image as float32 and the image's attributes (small data:
    tests, notebooks)."""
    import zarr

    from .store import zarr_array

    group = zarr.open_group(str(path), mode="r")
    return np.asarray(zarr_array(group, str(level), path)[:], dtype=np.float32), dict(group.attrs)
