"""`cryogen stitch`: blend tiles back into one MRC volume (cryogen.tiling.stitch)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "stitch",
        help="blend tiles back into an MRC volume",
        description="Blend the tiles of a store back into one MRC volume with smooth weights (no seams), keeping the "
        "source's voxel size and origin. Streams: memory does not grow with the tomogram.",
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tiles", metavar="TILES.zarr")
    p.add_argument("output", metavar="OUT.mrc")
    p.add_argument(
        "--std", action="store_true", help="stitch the per-voxel uncertainty (std) instead of the restored volume"
    )


def run(args: argparse.Namespace) -> None:
    from ..tiling import stitch

    stitch(args.tiles, args.output, array_name="std" if args.std else "tiles")
    print(f"wrote {args.output}")
