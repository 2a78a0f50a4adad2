"""`cryogen train`: learn the prior from tiles of one or more tomograms (cryogen.method.loop.train)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import CryogenError
from .common import add_device_args, add_train_args, at_least_one

if TYPE_CHECKING:
    from ..method.config import TrainConfig
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "train",
        help="learn the prior from tiles of one or more tomograms",
        description="Learn the energy prior and the reconstruction network from the observed tiles alone (no ground "
        "truth). Checkpoints as it goes; --resume continues a killed run. Writes training curves (CSV, PNG) beside the "
        "prior.",
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tiles", nargs="+", metavar="TILES.zarr")
    p.add_argument("--out", required=True, metavar="prior.pt", help="where to write the trained prior")
    add_train_args(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint (OUT.ckpt) if there is one from the same "
        "tile stores and settings (more steps or a longer budget may be given); otherwise start afresh",
    )
    p.add_argument(
        "--tag",
        default="",
        help="a label stored in the checkpoint; --resume only continues a checkpoint with the "
        "same tag (the workflow passes its code version)",
    )
    add_device_args(p)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the command line: --steps, else unlimited within --time-budget, else the default."""
    from ..method.config import TrainConfig

    at_least_one("--batch", args.batch)
    budget = None if args.time_budget is None else args.time_budget * 60.0
    if budget is not None and budget <= 0:
        raise CryogenError("--time-budget must be positive (minutes)")
    steps = args.steps if args.steps is not None else (10**9 if budget is not None else TrainConfig.steps)
    return TrainConfig(steps=steps, time_budget=budget, seed=args.seed, batch=args.batch, patch=args.patch)


def run(args: argparse.Namespace) -> None:
    from ..method.loop import train

    cfg = train_config(args)
    result = train(args.tiles, args.out, cfg, device=args.device, resume=args.resume, tag=args.tag)
    print(f"wrote prior {args.out} after {result['step']} steps")
