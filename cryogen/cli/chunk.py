"""`cryogen chunk`: cut a tomogram into overlapping tiles in Zarr (cryogen.tiling.chunk)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .common import (
    EPILOG,
    add_beads_arg,
    add_ctf_args,
    add_halves_arg,
    add_wedge_args,
    deconvolution_of,
    default_of,
    wedge_of,
)

if TYPE_CHECKING:
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "chunk",
        help="cut a tomogram into overlapping tiles (Zarr)",
        description="Cut an MRC tomogram into overlapping cubic tiles stored in Zarr, recording the tilt geometry and "
        "voxel size. Streams: memory does not grow with the tomogram.",
        epilog=EPILOG,
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    from ..tiling import chunk

    p.add_argument("input", metavar="IN.mrc")
    p.add_argument("output", metavar="OUT.zarr")
    tile, overlap = default_of(chunk, "tile"), default_of(chunk, "overlap")
    p.add_argument("--tile", type=int, default=tile, help=f"tile edge in voxels (default {tile})")
    p.add_argument(
        "--overlap",
        type=int,
        default=overlap,
        help=f"overlap between neighbouring tiles in voxels (default {overlap})",
    )
    add_wedge_args(p, required=True, auto=True)
    p.add_argument("--voxel-size", type=float, default=None, help="voxel size in angstrom, overriding the MRC header")
    add_halves_arg(p)
    add_beads_arg(p)
    add_ctf_args(p)


def run(args: argparse.Namespace) -> None:
    from ..tiling import chunk

    halves = tuple(args.halves) if args.halves else None
    meta = chunk(
        args.input,
        args.output,
        tile=args.tile,
        overlap=args.overlap,
        wedge=wedge_of(args, args.input),
        voxel_size=args.voxel_size,
        halves=halves,
        deconvolution=deconvolution_of(args),
        beads=args.beads,
    )
    gz, gy, gx = meta.grid_shape
    print(f"wrote {meta.n_tiles} tiles ({gz} x {gy} x {gx}) of {meta.tile}^3 to {args.output}")
