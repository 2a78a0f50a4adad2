"""`cryogen benchmark`: quality against ground truth on simulated tomograms, or with --speed, speed
and memory of every stage (cryogen.bench.quality, cryogen.bench.speed). The benchmarks return rows;
this verb prints them as tables, as they come and at the end, with the command and the machine."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .common import add_ctf_args, add_device_args, check_flips, deconvolution_of

if TYPE_CHECKING:
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "benchmark",
        help="measure restoration quality against ground truth on simulated tomograms",
        description="Simulate phantoms with known truth and compare the input, the best Gaussian low-pass (sigma "
        "chosen with the truth), the network alone and the full MAP: cc, FSC, wedge and measured recovery, wall time.",
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    from ..bench.dataset import DatasetOptions
    from ..bench.quality import QualityOptions
    from ..bench.real import REAL_CROP, RealOptions
    from ..bench.speed import SpeedOptions
    from ..sim.tube import TUBE_EFFECTS

    q, s = QualityOptions(), SpeedOptions()
    p.add_argument("--shape", nargs=3, type=int, default=q.shape, metavar=("Z", "Y", "X"))
    p.add_argument("--seeds", nargs="+", type=int, default=list(q.seeds))
    p.add_argument(
        "--tilts", nargs="+", type=float, default=list(q.tilts), help="half tilt ranges, e.g. 60 45 for +-60 and +-45"
    )
    p.add_argument("--snrs", nargs="+", type=float, default=list(q.snrs))
    p.add_argument(
        "--models",
        nargs="+",
        choices=("ideal", "tilt-series"),
        default=list(q.models),
        help="forward models of the phantoms, side by side (default: " + " ".join(q.models) + ")",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=q.time_budget,
        metavar="MINUTES",
        help=f"per-tomogram budget for the method (default {q.time_budget:g})",
    )
    p.add_argument("--steps", type=int, default=q.steps, help="fixed training steps instead of the time budget")
    p.add_argument("--map-steps", type=int, default=q.map_steps)
    p.add_argument("--prior-weight", type=float, default=q.prior_weight)
    p.add_argument("--samples", type=int, default=q.samples)
    p.add_argument("--flips", type=int, default=q.flips, help="g(y) averaged over this many wedge-preserving flips")
    p.add_argument(
        "--workdir", default=str(q.workdir), help=f"folder for the simulated data and results (default {q.workdir}/)"
    )
    p.add_argument(
        "--speed",
        action="store_true",
        help="measure speed and memory instead of quality: throughput of reconstruct and "
        "train, peak memory of every stage at 1x, 4x and 16x the voxels, Dask scaling, CUDA when available",
    )
    p.add_argument(
        "--train-steps",
        type=int,
        default=s.train_steps,
        help=f"with --speed: training steps to time (default {s.train_steps})",
    )
    p.add_argument(
        "--full-size",
        action="store_true",
        help="with --speed: also run chunk, reconstruct and stitch on a real "
        "1000 x 1000 x 300 tomogram (1.2 GB; ~6 GB of disk in --workdir) and time them end to end",
    )
    p.add_argument(
        "--real",
        nargs="?",
        const=str(REAL_CROP),
        default=None,
        metavar="TOMOGRAM",
        help="judge the default method on a real tomogram, without ground truth: data consistency, the "
        "microtubule's top/bottom-to-side wall contrast, the missing wedge's fill, D's separation, and figures "
        f"(TIFF or MRC; default {REAL_CROP}); the time budget is --time-budget, results in WORKDIR/real",
    )
    p.add_argument(
        "--tube",
        nargs="*",
        default=None,
        choices=[*TUBE_EFFECTS, "all"],
        metavar="EFFECT",
        help="judge the default method as --real does, on a simulated twin of the real crop (two microtubules, "
        "44 x 136 x 84, truth known) made with these effects of real acquisition: "
        + "; ".join(f"{k}: {v}" for k, v in TUBE_EFFECTS.items())
        + "; or all of them (none: the tilt series alone). Adds cc and wedge recovery against the truth; results "
        "in WORKDIR/tube",
    )
    p.add_argument(
        "--curve-every",
        type=int,
        default=RealOptions().curve_every,
        metavar="STEPS",
        help="with --real: also restore and measure the tomogram with the prior as it stood every STEPS "
        "training steps (WORKDIR/real/learning_curve.csv and .png)",
    )
    p.add_argument(
        "--keep-run",
        action="store_true",
        help="with --real or --tube: keep WORKDIR/real/run (or WORKDIR/tube/run), the tiles and the trained prior, "
        "to restore the tomogram again with other settings (cryogen reconstruct, stitch) without training again",
    )
    d = DatasetOptions()
    p.add_argument(
        "--dataset",
        type=int,
        nargs="?",
        const=d.count,
        default=None,
        metavar="N",
        help=f"run the whole Snakemake workflow on N (default {d.count}) simulated "
        f"{' x '.join(map(str, d.shape))} tomograms on this machine (training --steps, default {d.steps}; "
        "snakemake --cores: --threads): wall time, per-tomogram overhead outside the networks, and the SLURM "
        "profile's job count with and without groups; results in WORKDIR/dataset",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="with --dataset: only count the SLURM jobs (dry runs of Snakemake), run nothing",
    )
    p.add_argument(
        "--workflow",
        metavar="DIR",
        default=None,
        help="with --dataset: the CryoGEN checkout holding the Snakefile (default: the one CryoGEN runs from)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    add_ctf_args(p)  # with --real: deconvolve the tomogram by its CTF first, as run --defocus
    add_device_args(p)


def run(args: argparse.Namespace) -> None:
    if args.dataset is not None:
        _dataset(args)
    elif args.speed:
        _speed(args)
    elif args.real:
        _real(args)
    elif args.tube is not None:
        _tube(args)
    else:
        _quality(args)


def _restoring(args: argparse.Namespace, folder: str) -> dict:
    """The settings --real and --tube share: how the tomogram is restored, and where."""
    return {
        "workdir": Path(args.workdir) / folder,
        "time_budget": args.time_budget,
        "steps": args.steps,
        "device": args.device,
        "seed": args.seed,
        "deconvolution": deconvolution_of(args),
        "keep_run": args.keep_run,
    }


def _real(args: argparse.Namespace) -> None:
    from ..bench.real import COLUMNS, RealOptions, run_real_benchmark

    options = RealOptions(input=Path(args.real), curve_every=args.curve_every, **_restoring(args, "real"))
    _restored_rows(lambda: run_real_benchmark(options), COLUMNS, args, options.workdir)
    if options.curve_every:
        print(f"learning curve: {options.workdir}/learning_curve.csv, learning_curve.png")


def _tube(args: argparse.Namespace) -> None:
    from ..bench.tube import TUBE_COLUMNS, TubeOptions, run_tube_benchmark

    options = TubeOptions(effects=tuple(args.tube), **_restoring(args, "tube"))
    _restored_rows(lambda: run_tube_benchmark(options), TUBE_COLUMNS, args, options.workdir)


def _restored_rows(
    bench: Callable[[], list[dict]], columns: list[str], args: argparse.Namespace, workdir: Path
) -> None:
    """Run a benchmark that restores one tomogram, and print its command, rows and figures."""
    from ..bench.quality import machine
    from ..bench.real import CUES_FILE

    _say_command(machine())
    _print_rows(bench(), columns, args.json, gap=False)
    _print_cues(workdir / CUES_FILE)
    print(f"figures: {workdir}/real_slices.png, real_spectra.png, real_tube.png")
    if args.keep_run:
        print(f"kept: {workdir}/run/tiles.zarr and prior.pt (cryogen reconstruct TILES PRIOR OUT, then stitch)")


def _print_cues(path: Path) -> None:
    """What D tells real tiles from simulated ones by (`cryogen.qc.cues`), under the table."""
    cues = json.loads(path.read_text())
    shares = ", ".join(f"{name} {share:.2f}" for name, share in cues["judged_real"].items())
    print(f"D judges real: {shares} ({path.name})")
    print(f"{cues['verdict']}")


def _say_command(machine_line: str) -> None:
    """The benchmark's first lines: how it was run, and on what."""
    print(f"command: cryogen {' '.join(sys.argv[1:]) if len(sys.argv) > 1 else 'benchmark'}")
    print(f"machine: {machine_line}", flush=True)


def _print_rows(rows: list[dict], columns: list[str], json_path: str | None, gap: bool = True) -> None:
    """The final table (after a blank line, below the rows shown as they came), and the rows as
    JSON where --json asks for them."""
    from .tables import format_table

    if gap:
        print()
    print(format_table(rows, columns))
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))


def _show(columns: list[str]) -> Callable[[list[dict]], None]:
    """A callback printing the rows a benchmark reports as it goes."""
    from .tables import format_table

    return lambda rows: print(format_table(rows, columns), flush=True)


def _quality(args: argparse.Namespace) -> None:
    from ..bench.quality import COLUMNS, QualityOptions, machine, run_benchmark
    from ..method.devices import pick_device

    check_flips(args.flips)
    options = QualityOptions(
        shape=tuple(args.shape),
        seeds=tuple(args.seeds),
        tilts=tuple(args.tilts),
        snrs=tuple(args.snrs),
        models=tuple(args.models),
        time_budget=args.time_budget,
        steps=args.steps,
        map_steps=args.map_steps,
        prior_weight=args.prior_weight,
        samples=args.samples,
        flips=args.flips,
        workdir=Path(args.workdir),
        device=args.device,
    )
    device = pick_device(args.device)  # a missing GPU is an error before anything is printed
    _say_command(f"{machine()}; device: {device}")
    _print_rows(run_benchmark(options, on_rows=_show(COLUMNS)), COLUMNS, args.json)


def _speed(args: argparse.Namespace) -> None:
    from ..bench.quality import machine
    from ..bench.speed import COLUMNS, SpeedOptions, devices, run_speed

    options = SpeedOptions(
        workdir=Path(args.workdir), map_steps=args.map_steps, train_steps=args.train_steps, full_size=args.full_size
    )
    _say_command(f"{machine()}; devices: {', '.join(devices())}")
    _print_rows(run_speed(options, on_rows=_show(COLUMNS)), COLUMNS, None)


def _dataset(args: argparse.Namespace) -> None:
    from ..bench.dataset import COLUMNS, DatasetOptions, run_dataset
    from ..bench.quality import machine

    options = DatasetOptions(
        count=args.dataset,
        steps=args.steps if args.steps is not None else DatasetOptions.steps,
        cores=args.cpu_threads,
        workdir=Path(args.workdir),
        workflow=None if args.workflow is None else Path(args.workflow),
        run=not args.dry_run,
    )
    _say_command(machine())
    _print_rows(run_dataset(options, on_rows=_show(COLUMNS)), COLUMNS, args.json)
