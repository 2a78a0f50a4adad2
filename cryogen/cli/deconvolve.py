"""`cryogen deconvolve`: a tomogram deconvolved by its CTF, to look at (cryogen.deconvolve.deconvolve)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .common import add_ctf_args, deconvolution_of

if TYPE_CHECKING:
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "deconvolve",
        help="deconvolve a tomogram by its CTF (what chunk and run --defocus do first)",
        description="Deconvolve an MRC tomogram by the CTF of its tilt series up to the CTF's first peak (a Wiener "
        "filter, as IsoNet's), giving back the low frequencies the microscope took away: the outlines of "
        "membranes and filaments. chunk and run do this themselves with --defocus; this verb writes the result "
        "to look at. Streams: memory does not grow with the tomogram.",
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN.mrc")
    p.add_argument("output", metavar="OUT.mrc")
    p.add_argument("--voxel-size", type=float, default=None, help="voxel size in angstrom, overriding the MRC header")
    add_ctf_args(p, required=True)


def run(args: argparse.Namespace) -> None:
    from ..deconvolve import deconvolve

    deconv = deconvolution_of(args)
    assert deconv is not None  # --defocus is required here
    margin = deconvolve(args.input, args.output, deconv, voxel_size=args.voxel_size)
    print(f"wrote {args.output} (the filter's kernel has a radius of {margin} voxels)")
