"""`cryogen reconstruct`: restore every tile under a trained prior, serially or on Dask
(cryogen.restore.reconstruct, cryogen.restore.parallel)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from .common import add_device_args, add_solve_args, at_least_one, default_of, solve_config

if TYPE_CHECKING:
    from .common import Subparsers

log = logging.getLogger(__name__)


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "reconstruct",
        help="restore every tile under a trained prior",
        description="Restore each tile: the network's estimate, refined by MAP steps under the prior; with --samples, "
        "also the per-voxel standard deviation of posterior samples. A killed run resumes where it stopped.",
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    from ..restore.reconstruct import reconstruct

    p.add_argument("tiles", metavar="TILES.zarr")
    p.add_argument("--prior", required=True, metavar="prior.pt")
    p.add_argument("--out", required=True, metavar="RECON.zarr")
    batch = default_of(reconstruct, "batch")
    p.add_argument("--batch", type=int, default=batch, help=f"tiles per batch (default {batch})")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="restore batches in parallel on a local Dask cluster of this many worker processes, one thread each "
        "(default 1: serially in this process)",
    )
    p.add_argument(
        "--memory-mb",
        type=float,
        default=None,
        help="memory shared by the local Dask workers, in MB (default: Dask's automatic limit)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="run on an existing Dask cluster at this scheduler address (e.g. tcp://node:8786) instead; its workers "
        "must see the same paths",
    )
    add_solve_args(p)
    add_device_args(p)


def run(args: argparse.Namespace) -> None:
    at_least_one("--batch", args.batch)
    solve = solve_config(args)
    if args.scheduler is None and args.workers > args.cpu_threads:
        # each local worker runs one torch thread: more workers than CPUs only compete for them
        log.warning("--workers %d is more than the CPU threads given; using %d", args.workers, args.cpu_threads)
        args.workers = args.cpu_threads
    if args.scheduler is None and args.workers <= 1:
        from ..restore.reconstruct import reconstruct

        reconstruct(args.tiles, args.prior, args.out, solve, device=args.device, batch=args.batch, seed=args.seed)
    else:
        from ..restore.parallel import reconstruct_parallel

        reconstruct_parallel(
            args.tiles,
            args.prior,
            args.out,
            solve,
            device=args.device,
            batch=args.batch,
            seed=args.seed,
            workers=max(args.workers, 1),
            memory_mb=args.memory_mb,
            scheduler_address=args.scheduler,
        )
    print(f"wrote {args.out}")
