"""`cryogen run`: restore one tomogram in one command, without Snakemake (cryogen.restore.pipeline.run_one)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .common import (
    EPILOG,
    add_beads_arg,
    add_ctf_args,
    add_device_args,
    add_halves_arg,
    add_solve_args,
    add_train_args,
    add_wedge_args,
    deconvolution_of,
    default_of,
    solve_config,
    wedge_of,
)

if TYPE_CHECKING:
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "run",
        help="restore one tomogram in one command (chunk, train, reconstruct, stitch)",
        description="Restore one tomogram without Snakemake: chunk, train a prior on it, reconstruct and stitch. "
        "--time-budget bounds the whole run: training gets what is left after a measured estimate of the rest.",
        epilog=EPILOG,
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    from ..restore.pipeline import run_one

    p.add_argument("input", metavar="IN.mrc", help="the tomogram: MRC, or a TIFF stack (converted first)")
    p.add_argument("output", metavar="OUT.mrc")
    add_wedge_args(p, required=True, auto=True)
    p.add_argument(
        "--std", metavar="STD.mrc", help="also write the per-voxel uncertainty (needs --samples > 0; default 8 then)"
    )
    tile, overlap = default_of(run_one, "tile"), default_of(run_one, "overlap")
    p.add_argument("--tile", type=int, default=tile, help=f"tile edge in voxels (default {tile})")
    p.add_argument("--overlap", type=int, default=overlap, help=f"tile overlap in voxels (default {overlap})")
    p.add_argument("--voxel-size", type=float, default=None, help="voxel size in angstrom, overriding the MRC header")
    add_halves_arg(p)
    add_beads_arg(p)
    add_ctf_args(p)
    add_train_args(p)
    add_solve_args(p)
    add_device_args(p)


def run(args: argparse.Namespace) -> None:
    from ..io.tiff import as_mrc
    from ..method.config import TrainConfig
    from ..qc.figures import measures_line, truth_free_measures
    from ..restore.pipeline import run_one

    with as_mrc(args.input, args.output, args.voxel_size) as source:  # a TIFF converted first
        wedge = wedge_of(args, str(source))
        run_one(
            source,
            args.output,
            wedge,
            std_path=args.std,
            time_budget=None if args.time_budget is None else args.time_budget * 60.0,
            steps=args.steps,
            solve=solve_config(args),
            device=args.device,
            seed=args.seed,
            tile=args.tile,
            overlap=args.overlap,
            voxel_size=args.voxel_size,
            halves=None if args.halves is None else (args.halves[0], args.halves[1]),
            train_config=TrainConfig(seed=args.seed, batch=args.batch, patch=args.patch),
            deconvolution=deconvolution_of(args),
            beads=args.beads,
        )
        # what a user of real data judges the result by, at once (as `cryogen report` and the workflow's report give it)
        print(measures_line(truth_free_measures(source, args.output, wedge)))
    print(f"wrote {args.output}" + (f" and {args.std}" if args.std else ""))
