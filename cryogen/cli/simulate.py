"""`cryogen simulate`: a synthetic tomogram with known ground truth (cryogen.sim.simulate)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CryogenError
from .common import EPILOG, add_wedge_args, default_of, tilt_label, wedge_of

if TYPE_CHECKING:
    import numpy as np

    from ..model.imaging import Wedge
    from ..sim.simulate import Simulation
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "simulate",
        help="make a synthetic tomogram with known ground truth",
        description="Make a synthetic cellular tomogram (vesicles, filaments, complexes in an ice slab) and degrade it "
        "by the missing wedge and noise, to try CryoGEN or measure it against the truth.",
        epilog=EPILOG,
        arguments=_arguments,
    ).set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    from ..sim.simulate import simulate

    p.add_argument("output", metavar="OBS.mrc", help="degraded observation to write")
    p.add_argument("--truth", metavar="TRUTH.mrc", help="also write the clean ground truth here")
    p.add_argument(
        "--shape",
        nargs=3,
        type=int,
        metavar=("Z", "Y", "X"),
        default=(96, 192, 192),
        help="size in voxels (default 96 192 192)",
    )
    add_wedge_args(p, required=False)
    p.add_argument(
        "--snr", type=float, default=0.5, help="signal-to-noise ratio, as a ratio of variances (default 0.5)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same tomogram (default 0)")
    voxel = default_of(simulate, "voxel_size")
    p.add_argument("--voxel-size", type=float, default=voxel, help=f"voxel size in angstrom (default {voxel:g})")
    p.add_argument(
        "--halves", action="store_true", help="also write even/odd half tomograms (OBS_even.mrc, OBS_odd.mrc)"
    )
    p.add_argument(
        "--beads",
        type=int,
        default=0,
        metavar="N",
        help="add N gold fiducials (10 nm, ~10x protein's contrast) at the ice's surfaces; the noise level is set "
        "without them (default 0)",
    )
    _tilt_series_arguments(p)


def _tilt_series_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the tilt-series forward model (cryogen.sim.tilt_series); each effect can be
    switched on alone, to measure which one a method is sensitive to."""
    from ..sim.ctf import CTF
    from ..sim.tilt_series import Dose, TiltScheme

    scheme, ctf, dose = TiltScheme(), CTF(), Dose()
    g = p.add_argument_group("forward model")
    g.add_argument(
        "--model",
        choices=("ideal", "tilt-series"),
        default="ideal",
        help="ideal: y = A x + n with the binary wedge (default); tilt-series: as real tomograms are made, "
        "projections at discrete tilts, noise on each projection, weighted back-projection",
    )
    g.add_argument(
        "--tilt-step",
        type=float,
        default=scheme.step,
        help=f"tilt-series: degrees between tilts (default {scheme.step:g})",
    )
    g.add_argument(
        "--tilt-order",
        choices=("dose-symmetric", "bidirectional", "sequential"),
        default=scheme.order,
        help=f"tilt-series: acquisition order, which matters with --dose (default {scheme.order})",
    )
    g.add_argument(
        "--defocus",
        type=float,
        default=None,
        metavar="UM",
        help=f"tilt-series: apply a CTF of this defocus in micrometres (e.g. {ctf.defocus_um:g}; default: no CTF)",
    )
    g.add_argument("--no-phase-flip", action="store_true", help="tilt-series: leave the CTF's sign uncorrected")
    g.add_argument(
        "--dose",
        type=float,
        default=None,
        metavar="E_PER_A2",
        help=f"tilt-series: electrons per square angstrom per tilt, for radiation damage in acquisition order "
        f"(e.g. {dose.electrons_per_tilt:g}; default: no damage)",
    )
    g.add_argument(
        "--dose-weighting",
        action="store_true",
        help="tilt-series: dose-weight the images (signal and noise) by their accumulated exposure, as processing "
        "pipelines do; needs --dose",
    )
    g.add_argument(
        "--misalign",
        type=float,
        default=0.0,
        metavar="PX",
        help="tilt-series: shift each image at random by this many pixels rms per axis, a residual alignment error "
        "(default 0)",
    )
    g.add_argument(
        "--binning",
        type=int,
        default=1,
        help="tilt-series: simulate this many times finer and decimate without anti-aliasing, as binned "
        "tomograms are (default 1)",
    )
    g.add_argument(
        "--recon-filter",
        choices=("ramp", "sirt"),
        default="ramp",
        help="tilt-series: weighted back-projection filter, ramp or SIRT-like (default ramp)",
    )


def run(args: argparse.Namespace) -> None:
    from ..io.mrc import write_mrc
    from ..sim.simulate import simulate

    wedge = wedge_of(args)
    if not args.voxel_size > 0:
        raise CryogenError(f"--voxel-size must be positive, not {args.voxel_size}")
    if args.model == "tilt-series":
        sim = _simulate_tilt_series(args, wedge)
        wedge = sim.wedge
    else:
        sim = simulate(tuple(args.shape), wedge, **_common(args))
    note = f"{tilt_label(wedge)} snr {args.snr:g} seed {args.seed} model {args.model}"
    if args.beads:
        note += f" beads {args.beads}"
    outputs: list[tuple[str | Path | None, np.ndarray | None, str]] = [
        (args.output, sim.observation, "observation"),
        (args.truth, sim.truth, "ground truth"),
    ]
    if args.halves:
        stem = Path(args.output)
        outputs += [
            (stem.with_name(stem.stem + "_even" + stem.suffix), sim.even, "even half"),
            (stem.with_name(stem.stem + "_odd" + stem.suffix), sim.odd, "odd half"),
        ]
    for path, data, what in outputs:
        if path is None or data is None:
            continue
        write_mrc(path, data, args.voxel_size, labels=[f"cryogen simulate: {what}", note])
        print(f"wrote {what}: {path}")
    print(f"noise sigma {sim.sigma:.4g}")


def _common(args: argparse.Namespace) -> dict[str, Any]:
    """The options both forward models take."""
    return {
        "snr": args.snr,
        "seed": args.seed,
        "voxel_size": args.voxel_size,
        "halves": args.halves,
        "beads": args.beads,
    }


def _simulate_tilt_series(args: argparse.Namespace, wedge: Wedge) -> Simulation:
    from ..sim.ctf import CTF
    from ..sim.tilt_series import Dose, TiltScheme, simulate_tilt_series

    tilts = TiltScheme(wedge.tilt_min, wedge.tilt_max, args.tilt_step, args.tilt_order, wedge.tilt_axis)
    ctf = None if args.defocus is None else CTF(defocus_um=args.defocus, phase_flip=not args.no_phase_flip)
    dose = None if args.dose is None else Dose(electrons_per_tilt=args.dose)
    return simulate_tilt_series(
        tuple(args.shape),
        tilts,
        **_common(args),
        ctf=ctf,
        dose=dose,
        binning=args.binning,
        recon_filter=args.recon_filter,
        dose_weighting=args.dose_weighting,
        misalignment=args.misalign,
    )
