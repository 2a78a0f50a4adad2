"""`cryogen backproject`: an aligned tilt series into a tomogram (cryogen.backproject.backproject)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .common import default_of

if TYPE_CHECKING:
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "backproject",
        help="reconstruct a tomogram (and its even/odd halves) from an aligned tilt series",
        description="Reconstruct an aligned tilt series (an MRC stack such as IMOD's .ali, one image per tilt, tilt "
        "axis along y) into a tomogram by weighted back-projection, and with --halves the even/odd half tomograms "
        "from alternating tilts (ascending angle order), which give chunk its measured noise model. Streams: a slab "
        "of rows at a time, memory does not grow with the number of rows. Alignment stays with IMOD or AreTomo.",
        epilog="Axes of the output are (z, y, x); the beam is along z at zero tilt. The voxel size is the stack's "
        "pixel size times --binning.",
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    from ..backproject import backproject

    p.add_argument("stack", metavar="STACK.ali", help="the aligned tilt series (MRC stack)")
    p.add_argument(
        "--tilt-file",
        required=True,
        metavar="FILE",
        help="its tilt angles, one per image in the stack's order: IMOD .tlt/.rawtlt, SerialEM .mdoc or AreTomo .aln",
    )
    p.add_argument("--out", required=True, metavar="TOMO.mrc", help="the tomogram to write")
    p.add_argument(
        "--halves",
        nargs=2,
        metavar=("EVEN.mrc", "ODD.mrc"),
        default=None,
        help="also write the half tomograms of the even and odd tilts (ascending angle order); the tomogram is "
        "their mean",
    )
    binning, slab = default_of(backproject, "binning"), default_of(backproject, "slab")
    p.add_argument(
        "--binning",
        type=int,
        default=binning,
        help=f"average N x N pixels of every image first (default {binning}: none); the voxel size grows N times",
    )
    p.add_argument(
        "--thickness",
        type=int,
        default=None,
        help="z size of the tomogram in (binned) voxels (default: a quarter of its width; give the specimen's)",
    )
    p.add_argument(
        "--filter",
        choices=("ramp", "sirt"),
        default=default_of(backproject, "recon_filter"),
        help="weighting: ramp (weighted back-projection) or sirt (SIRT-like, smoother; IMOD's and tomo3d's)",
    )
    p.add_argument("--slab", type=int, default=slab, help=f"binned rows reconstructed at a time (default {slab})")


def run(args: argparse.Namespace) -> None:
    from ..backproject import backproject
    from ..io.tilts import read_tilt_angles
    from .common import tilt_label

    wedge = read_tilt_angles(args.tilt_file).wedge("y")
    result = backproject(
        args.stack,
        args.tilt_file,
        args.out,
        tuple(args.halves) if args.halves else None,
        binning=args.binning,
        thickness=args.thickness,
        recon_filter=args.filter,
        slab=args.slab,
        labels=[tilt_label(wedge), f"cryogen backproject: binning {args.binning} filter {args.filter}"],
    )
    nz, ny, nx = result.shape
    what = ", ".join([args.out, *(args.halves or ())])
    print(f"wrote {what}: {nz} x {ny} x {nx} voxels of {result.voxel_size:g} A from {len(result.angles)} tilts")
