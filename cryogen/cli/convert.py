"""`cryogen convert`: a TIFF stack as an MRC volume (cryogen.io.tiff.convert_tiff)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "convert",
        help="write a TIFF stack as an MRC volume (what every other verb reads)",
        description="Write a 3-D TIFF stack (z, y, x; Fiji/ImageJ, napari or cylindra exports; any real-valued type) "
        "as a float32 MRC volume, which chunk, run and the workflow read. The voxel size comes from ImageJ's metadata "
        "(unit and resolution) unless --voxel-size gives it. Streams one plane at a time; the MRC appears only when "
        "complete.",
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN.tif")
    p.add_argument("output", metavar="OUT.mrc")
    p.add_argument(
        "--voxel-size", type=float, default=None, metavar="A", help="voxel size in angstrom (needed without ImageJ's)"
    )


def run(args: argparse.Namespace) -> None:
    from ..io.tiff import convert_tiff

    voxel = convert_tiff(args.input, args.output, args.voxel_size)
    print(f"wrote {args.output} ({voxel:g} A/voxel)")
