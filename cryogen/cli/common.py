"""What several verbs share: the lazy verb parser, the argument groups used by more than one verb
(tilt geometry, device and seed, training and MAP options) and their conversion into library
objects (Wedge, TrainConfig, SolveConfig).

Defaults are read from the library (its dataclasses and signatures), never restated, so changing
a library default changes the CLI and its help. The modules holding them import torch, so groups
read them only when a verb's arguments are added, which `VerbParser` defers to the verb being run.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import CryogenError

if TYPE_CHECKING:
    from ..deconvolve import Deconvolution
    from ..method.solver import SolveConfig
    from ..model.imaging import Wedge

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger(__name__)

EPILOG = "Axes are (z, y, x); the beam is along z and the tilt axis is y unless --tilt-axis x is given."

#: the MRC label that records the tilt geometry (written by `simulate`, read back by `info`)
TILT_LABEL = re.compile(r"tilt (-?[\d.]+) (-?[\d.]+) axis ([xy])")


def tilt_label(wedge: Wedge) -> str:
    """The MRC label that records the tilt geometry, read back by `info` (TILT_LABEL)."""
    return f"cryogen: tilt {wedge.tilt_min:g} {wedge.tilt_max:g} axis {wedge.tilt_axis}"


class VerbParser(argparse.ArgumentParser):
    """The parser of one verb; its arguments are added only when that verb is parsed or its help
    shown, so that `chunk`, `stitch` and `info` do not import torch for the defaults of `train`."""

    def __init__(self, *args: Any, arguments: Callable[[argparse.ArgumentParser], None] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        # --threads is added even to a verb without arguments
        self._pending: Callable[[argparse.ArgumentParser], None] | None = arguments or (lambda _: None)

    def _add_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending(self)
            add_threads_arg(self)  # every verb

    def parse_known_args(  # type: ignore[override]  # typeshed's overloads only narrow the namespace type
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._add_pending()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._add_pending()
        return super().format_usage()

    def format_help(self) -> str:
        self._add_pending()
        return super().format_help()


def default_of(func: Callable[..., Any], name: str) -> Any:
    """The default of parameter `name` of library function `func`, for a CLI default that says the same."""
    return inspect.signature(func).parameters[name].default


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """--threads N: the CPU threads a verb may use (applied by cli.main before the verb runs)."""
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads to use (default: OMP_NUM_THREADS, else SLURM_CPUS_PER_TASK, else the CPUs this process "
        "may run on, e.g. a SLURM job's; never more than those)",
    )


def at_least_one(flag: str, value: int) -> None:
    if value < 1:
        raise CryogenError(f"{flag} must be at least 1, not {value}")


# ----------------------------------------------------------------------------- tilt geometry


def add_halves_arg(p: argparse.ArgumentParser) -> None:
    """--halves EVEN ODD: the even/odd half tomograms that measure the noise (chunk, run)."""
    p.add_argument(
        "--halves",
        nargs=2,
        metavar=("EVEN.mrc", "ODD.mrc"),
        default=None,
        help="even/odd half tomograms (e.g. from even and odd tilts or frames): the noise level and spectrum are "
        "measured from their difference instead of assumed flat",
    )


def add_beads_arg(p: argparse.ArgumentParser) -> None:
    """--no-beads: leave gold fiducials as they are (chunk, run)."""
    p.add_argument(
        "--no-beads",
        dest="beads",
        action="store_false",
        help="do not look for gold fiducials (by default, beads found have their X-shaped streaks subtracted before "
        "training and are drawn back round into the result)",
    )


def add_ctf_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """--defocus and the microscope's optics: CTF deconvolution of the input (`cryogen.deconvolve`)."""
    from ..deconvolve import Deconvolution

    d = Deconvolution()
    c = d.ctf
    g = p.add_argument_group("CTF deconvolution (give the low frequencies the microscope took away back first)")
    g.add_argument(
        "--defocus",
        type=float,
        required=required,
        default=None,
        metavar="UM",
        help="the tilt series' defocus in um (underfocus positive; e.g. the mean of CTFFIND's per tilt): deconvolve "
        "the tomogram by its CTF up to the CTF's first peak (a Wiener filter, as IsoNet's) before restoring it"
        + ("" if required else " (default: no deconvolution)"),
    )
    g.add_argument(
        "--amplitude-contrast", type=float, default=c.amplitude_contrast, help=f"(default {c.amplitude_contrast:g})"
    )
    g.add_argument("--voltage", type=float, default=c.voltage_kv, metavar="KV", help=f"(default {c.voltage_kv:g})")
    g.add_argument(
        "--cs", type=float, default=c.cs_mm, metavar="MM", help=f"spherical aberration (default {c.cs_mm:g})"
    )
    g.add_argument(
        "--wiener",
        type=float,
        default=d.wiener,
        help=f"the Wiener term, 1/SNR: smaller gives back more of the low frequencies and their noise (default {d.wiener:g})",
    )
    g.add_argument(
        "--whole-ctf",
        action=argparse.BooleanOptionalAction,
        default=d.whole,
        help="deconvolve the whole CTF (every frequency, beyond its zeros too: IsoNet's filter), not only up to its "
        "first peak; then say whether the tilt series was phase-flipped (default: %(default)s)",
    )
    g.add_argument(
        "--phase-flipped",
        action=argparse.BooleanOptionalAction,
        default=c.phase_flip,
        help="the tilt series was phase-flipped (CTF-corrected) before the reconstruction; matters with --whole-ctf "
        "only (default: %(default)s)",
    )


def deconvolution_of(args: argparse.Namespace) -> Deconvolution | None:
    """The CTF deconvolution the command line asks for, or None without --defocus."""
    from ..deconvolve import Deconvolution
    from ..sim.ctf import CTF

    if args.defocus is None:
        return None
    ctf = CTF(args.defocus, args.amplitude_contrast, args.voltage, args.cs, args.phase_flipped)
    return Deconvolution(ctf, args.wiener, args.whole_ctf)


def add_wedge_args(p: argparse.ArgumentParser, required: bool, auto: bool = False) -> None:
    """--tilt-range and --tilt-axis; with `auto` (the verbs that read a tomogram: chunk, run, report),
    --tilt-range also takes `auto` (read off the data) and --tilt-file FILE (read off the tilt
    series' angle file) may replace it. `required`: one of the two must be given."""
    from ..model.imaging import Wedge

    w = Wedge()
    # with --tilt-file, "one of the two" is the group's requirement, not --tilt-range's
    given = p.add_mutually_exclusive_group(required=required) if auto else p
    given.add_argument(
        "--tilt-range",
        nargs="+" if auto else 2,
        type=str if auto else float,
        metavar=("MIN|auto", "MAX") if auto else ("MIN", "MAX"),
        required=required and not auto,
        default=None if required else (w.tilt_min, w.tilt_max),
        help="tilt range of the tilt series in degrees, e.g. -60 60 or -54 62"
        + (", or auto: read it off the tomogram's missing wedge (central crop's power spectrum)" if auto else "")
        + ("" if required else f" (default {w.tilt_min:g} {w.tilt_max:g})"),
    )
    if auto:
        given.add_argument(
            "--tilt-file",
            metavar="FILE",
            default=None,
            help="instead of --tilt-range: the tilt series' angles, whose lowest and highest make the range: "
            "IMOD .tlt/.rawtlt, SerialEM .mdoc or AreTomo .aln",
        )
    p.add_argument(
        "--tilt-axis",
        choices=("y", "x"),
        default=w.tilt_axis,
        help=f"axis the specimen was tilted about (default {w.tilt_axis}, IMOD convention)",
    )


def wedge_of(args: argparse.Namespace, source: str | None = None) -> Wedge:
    """The Wedge of --tilt-range (or --tilt-file) and --tilt-axis; with `--tilt-range auto` (verbs
    that read a tomogram), the range is read off the missing wedge of `source`."""
    from ..model.imaging import Wedge

    if getattr(args, "tilt_file", None) is not None:
        from ..io.tilts import read_tilt_angles

        tilts = read_tilt_angles(args.tilt_file)
        wedge = tilts.wedge(args.tilt_axis)
        n, path = len(tilts.angles), tilts.path
        log.info("tilt range %g to %g degrees from the %d angles of %s", wedge.tilt_min, wedge.tilt_max, n, path)
        return wedge
    values = [str(v) for v in args.tilt_range]
    if values == ["auto"] and source is not None:
        from ..qc.geometry import wedge_from_spectrum

        return wedge_from_spectrum(source, args.tilt_axis)
    try:
        if len(values) != 2:
            raise ValueError
        lo, hi = (float(v) for v in values)
    except ValueError:
        choices = "MIN MAX in degrees, or auto" if source is not None else "MIN MAX in degrees"
        raise CryogenError(f"--tilt-range takes {choices}, not {' '.join(values)!r}") from None
    return Wedge(lo, hi, args.tilt_axis)


# ----------------------------------------------------------------------------- networks


def add_device_args(p: argparse.ArgumentParser) -> None:
    """--device and --seed, for the verbs that run the networks."""
    from ..method.config import TrainConfig
    from ..method.devices import pick_device

    p.add_argument(
        "--device",
        default=default_of(pick_device, "name"),
        help="auto (a CUDA GPU when torch sees one, else CPU), cpu or cuda",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=TrainConfig().seed,
        help="random seed; the same seed on the same hardware gives the same result",
    )


def add_solve_args(p: argparse.ArgumentParser) -> None:
    """The MAP options of SolveConfig (reconstruct, run)."""
    from ..method.solver import ENERGIES, SolveConfig

    s = SolveConfig()
    p.add_argument(
        "--map-steps",
        type=int,
        default=s.map_steps,
        help=f"MAP refinement steps per tile after the network's warm start (default {s.map_steps}; 0: the network "
        "alone; see the README's Quality section)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=s.samples,
        help=f"posterior samples per tile for the uncertainty (std) map (default {s.samples}: none)",
    )
    p.add_argument(
        "--prior-weight",
        type=float,
        default=s.prior_weight,
        help=f"weight lambda (per voxel) of the learned prior against the data in the MAP steps "
        f"(default {s.prior_weight:g})",
    )
    p.add_argument(
        "--flips",
        type=int,
        default=s.flips,
        help=f"average g(y) over this many axis flips that keep the missing wedge in place (1-8; 4 for an "
        f"asymmetric tilt range; default {s.flips}; each costs one network pass)",
    )
    p.add_argument(
        "--coarse-cutoff",
        type=float,
        default=s.coarse_cutoff,
        help=f"fill the missing wedge below this frequency (cycles per voxel) from the coarse network (trained on "
        f"the tomogram binned 2x) applied to each tile binned 2x, before the MAP steps (default "
        f"{s.coarse_cutoff:g}; 0: off, in the MAP steps' denoiser too; 0 to 0.25; with a prior trained without it, "
        f"g fills up to 0.03)",
    )
    p.add_argument(
        "--energy",
        choices=ENERGIES,
        default=s.energy,
        help="the energy of the MAP steps: denoiser (the network's own, regularisation by denoising: each step "
        f"moves only the missing wedge, by {s.denoiser_step:g} of g's residual there and up to "
        f"{s.denoiser_step + s.denoiser_low_step:g} at its lowest frequencies) or discriminator (D's, "
        f"with --prior-weight and --data-term; default {s.energy})",
    )
    p.add_argument(
        "--data-term",
        choices=("penalty", "discrepancy"),
        default=s.data_term,
        help="how the MAP steps treat the data: penalty (the Gaussian likelihood, which pulls the measured region "
        "back towards the noisy data) or discrepancy (the prior alone, keeping the data within the noise level; "
        f"default {s.data_term})",
    )


def check_flips(flips: int) -> None:
    """--flips names how many of the (at most 8) wedge-preserving flips g(y) is averaged over."""
    if not 1 <= flips <= 8:
        raise CryogenError(f"--flips must be between 1 and 8, not {flips}")


def solve_config(args: argparse.Namespace) -> SolveConfig:
    from ..method.solver import SolveConfig

    if args.map_steps < 0 or args.samples < 0:
        raise CryogenError("--map-steps and --samples must not be negative")
    check_flips(args.flips)
    if not 0 <= args.coarse_cutoff <= 0.25:
        raise CryogenError(f"--coarse-cutoff must be between 0 and 0.25 cycles per voxel, not {args.coarse_cutoff:g}")
    return SolveConfig(
        map_steps=args.map_steps,
        samples=args.samples,
        prior_weight=args.prior_weight,
        data_term=args.data_term,
        energy=args.energy,
        flips=args.flips,
        coarse_cutoff=args.coarse_cutoff,
    )


def add_train_args(p: argparse.ArgumentParser) -> None:
    """The training options of TrainConfig (train, run)."""
    from ..method.config import TrainConfig

    cfg = TrainConfig()
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training steps (default {cfg.steps}, or unlimited within --time-budget)",
    )
    p.add_argument(
        "--time-budget", type=float, default=None, metavar="MINUTES", help="stop training after this many minutes"
    )
    p.add_argument("--batch", type=int, default=cfg.batch, help=f"patches per training step (default {cfg.batch})")
    p.add_argument("--patch", type=int, default=cfg.patch, help=f"training patch edge in voxels (default {cfg.patch})")
