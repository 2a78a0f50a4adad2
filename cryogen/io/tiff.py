"""TIFF stacks into MRC: the one way a TIFF tomogram (Fiji/ImageJ, napari, cylindra exports)
enters the pipeline, since every stage streams MRC (`io.mrc`).

Why a conversion rather than a second reader in every stage: chunk (the tiles, the noise
estimate, the beads, the wedge read off the spectrum) and the report all stream the source MRC;
one converted file keeps them on one format. The stack is read one plane (TIFF page) at a time,
so memory stays one plane whatever the tomogram's size (a stack stored as one page is read
whole), and the MRC appears under its name only when complete. The voxel size comes from
ImageJ's metadata (its unit and the pixels per unit of the resolution tags, which Fiji and
tifffile write) unless given; a TIFF without it needs `--voxel-size`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ..errors import CryogenError
from .mrc import MrcWriter, check_finite_block

if TYPE_CHECKING:
    import tifffile

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
#: angstrom per unit, for the units ImageJ writes in its metadata
_ANGSTROM_PER = {
    **dict.fromkeys(("nm", "nanometer", "nanometers"), 10.0),
    **dict.fromkeys(("um", "\u00b5m", "\u03bcm", "micron", "microns"), 1e4),
    **dict.fromkeys(("a", "\u00e5", "angstrom", "angstroms"), 1.0),
}


def is_tiff(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TIFF_SUFFIXES


def imagej_voxel_size(tif: tifffile.TiffFile) -> float | None:
    """The in-plane voxel size in angstrom from an ImageJ TIFF (`tifffile.TiffFile`): 1 / the
    XResolution tag (pixels per unit) in ImageJ's unit; None without both or with another unit."""
    meta = tif.imagej_metadata or {}
    scale = _ANGSTROM_PER.get(str(meta.get("unit", "")).strip().lower())
    tags = getattr(tif.pages[0], "tags", None)  # a TiffPage; frames (later pages) carry none
    tag = tags.get("XResolution") if tags is not None else None
    if scale is None or tag is None:
        return None
    num, den = tag.value
    if not num or not den:
        return None
    return scale * den / num


def convert_tiff(src: str | Path, dst: str | Path, voxel_size: float | None = None, progress: bool = True) -> float:
    """Write the 3-D (z, y, x) TIFF stack `src` as a float32 MRC `dst`, one page at a time;
    return the voxel size written (angstrom: `voxel_size`, else ImageJ's metadata)."""
    import tifffile

    if voxel_size is not None and not (np.isfinite(voxel_size) and voxel_size > 0):
        raise CryogenError(f"--voxel-size must be a positive number of angstrom, not {voxel_size:g}")
    src = Path(src)
    if not src.exists():
        raise CryogenError("no such file", src)
    try:
        tif = tifffile.TiffFile(src)
    except Exception as exc:  # tifffile raises its own and ValueError/struct errors on junk
        raise CryogenError(f"not a readable TIFF ({str(exc).splitlines()[0][:120]})", src) from None
    with tif:
        series = tif.series[0]
        shape = tuple(int(s) for s in series.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise CryogenError(f"expected a 3-D (z, y, x) stack, not shape {shape}", src)
        if series.dtype.kind not in "uif":
            raise CryogenError(f"voxels of type {series.dtype} are not real numbers", src)
        voxel = voxel_size if voxel_size is not None else imagej_voxel_size(tif)
        if voxel is None or not np.isfinite(voxel) or voxel <= 0:
            raise CryogenError("holds no voxel size (no ImageJ unit and resolution): pass --voxel-size", src)
        # one page per plane (Fiji, ImageJ hyperstacks, most writers): read page by page; a stack
        # stored in one page (planar samples) is read whole, as it was written
        per_page = len(series.pages) == shape[0]
        whole = None if per_page else np.asarray(series.asarray(), dtype=np.float32)
        with MrcWriter(dst, shape, float(voxel), labels=[f"cryogen convert {src.name}"]) as writer:
            for z in tqdm(range(shape[0]), desc=f"convert {src.name}", unit="plane", disable=not progress):
                plane = np.asarray(tif.asarray(key=z, series=0), dtype=np.float32) if whole is None else whole[z]
                check_finite_block(plane[None], src, z)
                writer.write_block(z, 0, plane[None])
    return float(voxel)


@contextlib.contextmanager
def as_mrc(path: str | Path, beside: str | Path, voxel_size: float | None = None) -> Iterator[Path]:
    """`path` itself when it is not a TIFF; else the TIFF converted into a hidden MRC beside
    `beside` (an output's path), removed afterwards: for verbs that take one tomogram end to end."""
    if not is_tiff(path):
        yield Path(path)
        return
    beside = Path(beside)
    mrc = beside.with_name(f".{beside.name}.input.mrc")
    try:
        voxel = convert_tiff(path, mrc, voxel_size)
        log.info("%s: a TIFF stack, converted to %s (%g A/voxel) for this run", Path(path).name, mrc.name, voxel)
        yield mrc
    finally:
        mrc.unlink(missing_ok=True)
