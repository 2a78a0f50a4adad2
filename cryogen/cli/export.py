"""`cryogen export`: a volume as OME-Zarr for napari, copick and the CryoET Data Portal
(cryogen.io.ome_zarr.write_ome_zarr)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .common import default_of

if TYPE_CHECKING:
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "export",
        help="write a volume as OME-Zarr for napari, copick and the CryoET Data Portal",
        description="Write an MRC volume (e.g. the restored tomogram from stitch) as OME-Zarr (NGFF 0.4): a "
        "multi-resolution pyramid (each level 2x smaller, chunks of 256^3 voxels) with the voxel size in angstrom, "
        "which napari, copick and the CryoET Data Portal tools open directly. With --std, the uncertainty map is "
        "written beside it as OUT_std.zarr on the same grid. Streams: memory depends on the tomogram's width, not its "
        "size.",
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    from ..io.ome_zarr import write_ome_zarr

    p.add_argument("input", metavar="RECON.mrc", help="volume to export (MRC or IMOD .rec, any real-valued mode)")
    p.add_argument("output", metavar="OUT.zarr", help="OME-Zarr folder to write (name ending in .zarr or .ome.zarr)")
    p.add_argument(
        "--ome", action="store_true", help="write OME-Zarr (NGFF 0.4); the only export format, so also the default"
    )
    p.add_argument(
        "--std", metavar="STD.mrc", default=None, help="uncertainty map (from stitch --std) to write as OUT_std.zarr"
    )
    p.add_argument(
        "--voxel-size", type=float, default=None, metavar="A", help="voxel size in angstrom, overriding the MRC header"
    )
    edge = default_of(write_ome_zarr, "chunk")
    p.add_argument(
        "--chunk",
        type=int,
        default=edge,
        metavar="N",
        help=f"chunk edge in voxels (default {edge}, as the CryoET Data Portal)",
    )


def run(args: argparse.Namespace) -> None:
    from ..io.ome_zarr import write_ome_zarr

    written = write_ome_zarr(args.input, args.output, std_path=args.std, voxel_size=args.voxel_size, chunk=args.chunk)
    for path in written:
        print(f"wrote {path}")
