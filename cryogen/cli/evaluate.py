"""`cryogen evaluate`: a restored volume against the ground truth (cryogen.qc.metrics.evaluate)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CryogenError
from .common import EPILOG, add_wedge_args, wedge_of

if TYPE_CHECKING:
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "evaluate",
        help="compare a restored volume with the ground truth",
        description="Compare a volume with the ground truth: real-space correlation (cc), FSC 0.5 / 0.143 resolution, "
        "and how much of the missing wedge (wedge_recovery) and of the measured region (measured_recovery) is recovered "
        "(1 is perfect, 0 is no better than leaving the wedge empty).",
        epilog=EPILOG,
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recon", metavar="RECON.mrc")
    p.add_argument("truth", metavar="TRUTH.mrc")
    add_wedge_args(p, required=False)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> None:
    from ..io.mrc import read_mrc
    from ..qc.metrics import evaluate
    from .tables import format_table

    recon, _rinfo = read_mrc(args.recon)
    truth, tinfo = read_mrc(args.truth)
    if recon.shape != truth.shape:
        raise CryogenError(f"shape {recon.shape} differs from the truth's {truth.shape} ({args.truth})", args.recon)
    voxel = tinfo.voxel_size[2] if tinfo.voxel_size[2] > 0 else None
    result = evaluate(recon, truth, wedge_of(args), voxel_size=voxel)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table([{"volume": Path(args.recon).name, **result}], ["volume", *result.keys()]))
