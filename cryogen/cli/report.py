"""`cryogen report`: figures of a tomogram before and after restoration (cryogen.qc.figures.report_figures)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .common import EPILOG, add_wedge_args, wedge_of

if TYPE_CHECKING:
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "report",
        help="figures of a tomogram before and after restoration (PNG)",
        description="Write the central XY/XZ/YZ slices before and after restoration, and the power spectra in the plane "
        "of the missing wedge before and after (PNG). With --truth, also the truth and, in --summary, the metrics.",
        epilog=EPILOG,
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("before", metavar="OBS.mrc", help="the observed tomogram")
    p.add_argument("after", metavar="RESTORED.mrc", help="the restored tomogram")
    p.add_argument("--slices", required=True, metavar="PNG", help="where to write the slices figure")
    p.add_argument("--spectra", required=True, metavar="PNG", help="where to write the power spectra figure")
    add_wedge_args(p, required=False, auto=True)
    p.add_argument(
        "--truth", metavar="TRUTH.mrc", default=None, help="ground truth (simulated data), shown and evaluated"
    )
    p.add_argument(
        "--summary",
        metavar="JSON",
        default=None,
        help="also write shape, voxel size, tilt and (with --truth) cc, FSC and wedge recovery before and after",
    )
    p.add_argument("--name", default="", help="name of the tomogram, for the titles")


def run(args: argparse.Namespace) -> None:
    from ..qc.figures import measures_line, report_figures

    wedge = wedge_of(args, args.before)
    summary = report_figures(
        args.before,
        args.after,
        args.slices,
        args.spectra,
        (wedge.tilt_min, wedge.tilt_max),
        args.tilt_axis,
        truth=args.truth,
        summary_json=args.summary,
        name=args.name,
    )
    print(measures_line(summary["measures"]))
    print(f"wrote {args.slices} and {args.spectra}" + (f" and {args.summary}" if args.summary else ""))
