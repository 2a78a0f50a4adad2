"""`cryogen info`: describe an MRC file, a CryoGEN tile store or an OME-Zarr image, as text or JSON.

Reads headers and metadata only, except for MRC files whose header has no statistics: their value
range is computed block by block, so memory stays small whatever the tomogram's size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CryogenError
from .common import TILT_LABEL

if TYPE_CHECKING:
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "info",
        help="describe an MRC file or a CryoGEN Zarr store",
        description="Print shape, voxel size, data type, value range and tilt metadata of an MRC file or a CryoGEN "
        "store.",
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def mrc_info(path: str) -> dict[str, Any]:
    import numpy as np

    from ..io.mrc import MrcReader

    with MrcReader(path) as r:
        info = r.info
        if info.header_stats is not None:
            lo, hi, mean = info.header_stats
            source = "header"
        else:
            lo, hi, total = np.inf, -np.inf, 0.0
            step = max(1, 8_000_000 // (info.shape[1] * info.shape[2]))
            for z0 in range(0, info.shape[0], step):
                b = r.read_block(z0, min(z0 + step, info.shape[0]))
                lo, hi, total = min(lo, float(b.min())), max(hi, float(b.max())), total + float(b.sum(dtype=np.float64))
            mean, source = total / float(np.prod(info.shape)), "computed"
    tilt = None
    for lab in info.labels:
        m = TILT_LABEL.search(lab)
        if m:
            tilt = {"tilt_min": float(m.group(1)), "tilt_max": float(m.group(2)), "tilt_axis": m.group(3)}
    return {
        "file": path,
        "format": "MRC",
        "shape_zyx": list(info.shape),
        "voxel_size_zyx_angstrom": list(info.voxel_size),
        "origin_xyz_angstrom": list(info.origin),
        "dtype": f"{info.dtype.name} (mode {info.mode})",
        "value_range": [lo, hi],
        "mean": mean,
        "stats_from": source,
        "tilt": tilt,
        "labels": [lab for lab in info.labels if lab],
    }


def zarr_info(path: str) -> dict[str, Any]:
    from ..io.store import open_store

    group, meta = open_store(path)
    return {
        "file": path,
        "format": f"CryoGEN {meta.kind} store (Zarr)",
        "shape_zyx": list(meta.source_shape),
        "voxel_size_zyx_angstrom": list(meta.voxel_size),
        "origin_xyz_angstrom": list(meta.origin),
        "dtype": "float32",
        "value_range": [meta.stats.get("min"), meta.stats.get("max")] if meta.stats else None,
        "mean": meta.stats.get("mean") if meta.stats else None,
        "tilt": meta.wedge.as_dict(),
        "tiles": {"size": meta.tile, "overlap": meta.overlap, "grid_zyx": list(meta.grid_shape), "count": meta.n_tiles},
        "arrays": {name: list(array.shape) for name, array in group.arrays()},
        "noise": meta.noise,
        "ctf_deconvolution": meta.deconvolution,
        "source": meta.source,
    }


def ome_info(path: str) -> dict[str, Any] | None:
    """What `info` says of an OME-Zarr image (e.g. from `cryogen export`); None if it is not one."""
    attrs_file = Path(path) / ".zattrs"
    if not attrs_file.is_file():
        return None
    import zarr

    try:
        attrs = json.loads(attrs_file.read_text())
        ms = attrs["multiscales"][0]
        group = zarr.open_group(path, mode="r")
        levels = [group[d["path"]] for d in ms["datasets"]]
        scale = next(t["scale"] for t in ms["datasets"][0]["coordinateTransformations"] if t["type"] == "scale")
    except (OSError, ValueError, KeyError, IndexError, StopIteration) as exc:
        raise CryogenError(f"not a readable OME-Zarr image ({type(exc).__name__}: {exc})", path) from None
    arrays = [a for a in levels if isinstance(a, zarr.Array)]
    if len(arrays) < len(levels):
        raise CryogenError("not a readable OME-Zarr image (a level is a group, not an array)", path)
    extra = attrs.get("cryogen", {})
    return {
        "file": path,
        "format": f"OME-Zarr (NGFF {ms.get('version', '?')})",
        "shape_zyx": list(arrays[0].shape),
        "voxel_size_zyx_angstrom": scale,
        "origin_xyz_angstrom": extra.get("origin_xyz_angstrom", extra.get("origin")),
        "dtype": str(arrays[0].dtype),
        "levels": [list(a.shape) for a in arrays],
        "chunks": list(arrays[0].chunks),
        "tilt": None,
        "source": extra.get("source"),
    }


def run(args: argparse.Namespace) -> None:
    path = Path(args.file)
    if not path.exists():
        raise CryogenError("file not found", path)
    zarr_like = path.is_dir() and (
        (path / "zarr.json").exists() or (path / ".zgroup").exists() or path.suffix == ".zarr"
    )
    result = (ome_info(str(path)) or zarr_info(str(path))) if zarr_like else mrc_info(str(path))
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        if key == "tilt" and value is None:
            value = "unknown (not recorded in this file)"
        elif key == "tilt":
            value = f"{value['tilt_min']:g} .. {value['tilt_max']:g} degrees, tilt axis {value['tilt_axis']}"
        print(f"{key:26s} {value}")
