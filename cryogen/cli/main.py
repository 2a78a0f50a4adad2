"""The `cryogen` command line: thin verbs over library functions.

Every user-facing problem is a `CryogenError` and is printed as one line naming the file and the
problem, with a non-zero exit and no traceback (set CRYOGEN_DEBUG=1 to see one). Heavy imports
(torch) happen inside the verbs that need them, so `chunk`, `stitch` and `info` start fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import __version__
from ..errors import CryogenError

TILT_LABEL = re.compile(r"tilt (-?[\d.]+) (-?[\d.]+) axis ([xy])")

EPILOG = "Axes are (z, y, x); the beam is along z and the tilt axis is y unless --tilt-axis x is given."


def _wedge(args: argparse.Namespace, source: str | None = None):
    """The Wedge of --tilt-range and --tilt-axis; with `--tilt-range auto` (verbs that read a
    tomogram), the range is read off the missing wedge of `source`."""
    from ..model.imaging import Wedge

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


def tilt_label(wedge) -> str:
    """The MRC label that records the tilt geometry, read back by `info`."""
    return f"cryogen: tilt {wedge.tilt_min:g} {wedge.tilt_max:g} axis {wedge.tilt_axis}"


def _add_wedge_args(p: argparse.ArgumentParser, required: bool, auto: bool = False) -> None:
    p.add_argument(
        "--tilt-range",
        nargs="+" if auto else 2,
        type=str if auto else float,
        metavar=("MIN|auto", "MAX") if auto else ("MIN", "MAX"),
        required=required,
        default=None if required else (-60.0, 60.0),
        help="tilt range of the tilt series in degrees, e.g. -60 60 or -54 62"
        + (", or auto: read it off the tomogram's missing wedge (central crop's power spectrum)" if auto else "")
        + ("" if required else " (default -60 60)"),
    )
    p.add_argument(
        "--tilt-axis",
        choices=("y", "x"),
        default="y",
        help="axis the specimen was tilted about (default y, IMOD convention)",
    )


def cmd_simulate(args: argparse.Namespace) -> None:
    from ..io.mrc import write_mrc
    from ..sim.simulate import simulate

    wedge = _wedge(args)
    if not args.voxel_size > 0:
        raise CryogenError(f"--voxel-size must be positive, not {args.voxel_size}")
    sim = simulate(
        tuple(args.shape), wedge, snr=args.snr, seed=args.seed, voxel_size=args.voxel_size, halves=args.halves
    )
    note = f"{tilt_label(wedge)} snr {args.snr:g} seed {args.seed}"
    outputs = [(args.output, sim.observation, "observation"), (args.truth, sim.truth, "ground truth")]
    if args.halves:
        stem = Path(args.output)
        outputs += [
            (stem.with_name(stem.stem + "_even" + stem.suffix), sim.even, "even half"),
            (stem.with_name(stem.stem + "_odd" + stem.suffix), sim.odd, "odd half"),
        ]
    for path, data, what in outputs:
        if path is None:
            continue
        write_mrc(path, data, args.voxel_size, labels=[f"cryogen simulate: {what}", note])
        print(f"wrote {what}: {path}")
    print(f"noise sigma {sim.sigma:.4g}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ..io.mrc import read_mrc
    from ..qc.metrics import evaluate
    from .tables import format_table

    recon, _rinfo = read_mrc(args.recon)
    truth, tinfo = read_mrc(args.truth)
    if recon.shape != truth.shape:
        raise CryogenError(f"shape {recon.shape} differs from the truth's {truth.shape} ({args.truth})", args.recon)
    voxel = tinfo.voxel_size[2] if tinfo.voxel_size[2] > 0 else None
    result = evaluate(recon, truth, _wedge(args), voxel_size=voxel)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table([{"volume": Path(args.recon).name, **result}], ["volume", *result.keys()]))


def cmd_chunk(args: argparse.Namespace) -> None:
    from ..tiling import chunk

    halves = tuple(args.halves) if args.halves else None
    meta = chunk(
        args.input,
        args.output,
        tile=args.tile,
        overlap=args.overlap,
        wedge=_wedge(args, args.input),
        voxel_size=args.voxel_size,
        halves=halves,
    )
    gz, gy, gx = meta.grid_shape
    print(f"wrote {meta.n_tiles} tiles ({gz} x {gy} x {gx}) of {meta.tile}^3 to {args.output}")


def cmd_stitch(args: argparse.Namespace) -> None:
    from ..tiling import stitch

    stitch(args.tiles, args.output, array_name="std" if args.std else "tiles")
    print(f"wrote {args.output}")


def cmd_export(args: argparse.Namespace) -> None:
    from ..io.ome_zarr import write_ome_zarr

    written = write_ome_zarr(args.input, args.output, std_path=args.std, voxel_size=args.voxel_size, chunk=args.chunk)
    for path in written:
        print(f"wrote {path}")


def _solve_config(args: argparse.Namespace):
    from ..method.solver import SolveConfig

    if args.map_steps < 0 or args.samples < 0:
        raise CryogenError("--map-steps and --samples must not be negative")
    return SolveConfig(map_steps=args.map_steps, samples=args.samples, prior_weight=args.prior_weight)


def _at_least_one(flag: str, value: int) -> None:
    if value < 1:
        raise CryogenError(f"{flag} must be at least 1, not {value}")


def _train_config(args: argparse.Namespace):
    from ..method.config import TrainConfig

    _at_least_one("--batch", args.batch)

    budget = None if args.time_budget is None else args.time_budget * 60.0
    if budget is not None and budget <= 0:
        raise CryogenError("--time-budget must be positive (minutes)")
    steps = args.steps if args.steps is not None else (10**9 if budget is not None else TrainConfig.steps)
    return TrainConfig(steps=steps, time_budget=budget, seed=args.seed, batch=args.batch, patch=args.patch)


def cmd_train(args: argparse.Namespace) -> None:
    from ..method.loop import train

    cfg = _train_config(args)
    result = train(args.tiles, args.out, cfg, device=args.device, resume=args.resume, tag=args.tag)
    print(f"wrote prior {args.out} after {result['step']} steps")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    _at_least_one("--batch", args.batch)
    solve = _solve_config(args)
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


def cmd_run(args: argparse.Namespace) -> None:
    from ..method.config import TrainConfig
    from ..restore.pipeline import run_one

    run_one(
        args.input,
        args.output,
        _wedge(args, args.input),
        std_path=args.std,
        time_budget=None if args.time_budget is None else args.time_budget * 60.0,
        steps=args.steps,
        solve=_solve_config(args),
        device=args.device,
        seed=args.seed,
        tile=args.tile,
        overlap=args.overlap,
        voxel_size=args.voxel_size,
        train_config=TrainConfig(seed=args.seed, batch=args.batch, patch=args.patch),
    )
    print(f"wrote {args.output}" + (f" and {args.std}" if args.std else ""))


def cmd_report(args: argparse.Namespace) -> None:
    from ..qc.figures import report_figures

    wedge = _wedge(args, args.before)
    report_figures(
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
    print(f"wrote {args.slices} and {args.spectra}" + (f" and {args.summary}" if args.summary else ""))


def cmd_benchmark(args: argparse.Namespace) -> None:
    if args.speed:
        from ..bench.speed import run_speed

        run_speed(args)
        return
    from ..bench.quality import run_benchmark

    run_benchmark(args)


def _mrc_info(path: str) -> dict:
    import numpy as np

    from ..io.mrc import MrcReader

    with MrcReader(path) as r:
        info = r.info
        if info.header_stats is not None:
            lo, hi, mean = info.header_stats
            source = "header"
        else:
            lo, hi, total = np.inf, -np.inf, 0.0
            step = max(1, 8_000_000 // (info.shape[1] * info.shape[2]))
            for z0 in range(0, info.shape[0], step):
                b = r.read_block(z0, min(z0 + step, info.shape[0]))
                lo, hi, total = min(lo, float(b.min())), max(hi, float(b.max())), total + float(b.sum(dtype=np.float64))
            mean, source = total / float(np.prod(info.shape)), "computed"
    tilt = None
    for lab in info.labels:
        m = TILT_LABEL.search(lab)
        if m:
            tilt = {"tilt_min": float(m.group(1)), "tilt_max": float(m.group(2)), "tilt_axis": m.group(3)}
    return {
        "file": path,
        "format": "MRC",
        "shape_zyx": list(info.shape),
        "voxel_size_zyx_angstrom": list(info.voxel_size),
        "origin_xyz_angstrom": list(info.origin),
        "dtype": f"{info.dtype.name} (mode {info.mode})",
        "value_range": [lo, hi],
        "mean": mean,
        "stats_from": source,
        "tilt": tilt,
        "labels": [lab for lab in info.labels if lab],
    }


def _zarr_info(path: str) -> dict:
    from ..io.store import open_store

    group, meta = open_store(path)
    arrays = {name: list(group[name].shape) for name in group.array_keys()}
    return {
        "file": path,
        "format": f"CryoGEN {meta.kind} store (Zarr)",
        "shape_zyx": list(meta.source_shape),
        "voxel_size_zyx_angstrom": list(meta.voxel_size),
        "origin_xyz_angstrom": list(meta.origin),
        "dtype": "float32",
        "value_range": [meta.stats.get("min"), meta.stats.get("max")] if meta.stats else None,
        "mean": meta.stats.get("mean") if meta.stats else None,
        "tilt": meta.wedge.as_dict(),
        "tiles": {"size": meta.tile, "overlap": meta.overlap, "grid_zyx": list(meta.grid_shape), "count": meta.n_tiles},
        "arrays": arrays,
        "noise": meta.noise,
        "source": meta.source,
    }


def _ome_info(path: str) -> dict | None:
    """What `info` says of an OME-Zarr image (e.g. from `cryogen export`); None if it is not one."""
    attrs_file = Path(path) / ".zattrs"
    if not attrs_file.is_file():
        return None
    try:
        attrs = json.loads(attrs_file.read_text())
        ms = attrs["multiscales"][0]
        import zarr

        group = zarr.open_group(path, mode="r")
        levels = [group[d["path"]] for d in ms["datasets"]]
        scale = next(t["scale"] for t in ms["datasets"][0]["coordinateTransformations"] if t["type"] == "scale")
    except (OSError, ValueError, KeyError, IndexError, StopIteration) as exc:
        raise CryogenError(f"not a readable OME-Zarr image ({type(exc).__name__}: {exc})", path) from None
    extra = attrs.get("cryogen", {})
    return {
        "file": path,
        "format": f"OME-Zarr (NGFF {ms.get('version', '?')})",
        "shape_zyx": list(levels[0].shape),
        "voxel_size_zyx_angstrom": scale,
        "origin_xyz_angstrom": extra.get("origin_xyz_angstrom", extra.get("origin")),
        "dtype": str(levels[0].dtype),
        "levels": [list(a.shape) for a in levels],
        "chunks": list(levels[0].chunks),
        "tilt": None,
        "source": extra.get("source"),
    }


def cmd_info(args: argparse.Namespace) -> None:
    path = Path(args.file)
    if not path.exists():
        raise CryogenError("file not found", path)
    zarr_like = path.is_dir() and (
        (path / "zarr.json").exists() or (path / ".zgroup").exists() or path.suffix == ".zarr"
    )
    result = (_ome_info(str(path)) or _zarr_info(str(path))) if zarr_like else _mrc_info(str(path))
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        if key == "tilt" and value is None:
            value = "unknown (not recorded in this file)"
        elif key == "tilt":
            value = f"{value['tilt_min']:g} .. {value['tilt_max']:g} degrees, tilt axis {value['tilt_axis']}"
        print(f"{key:26s} {value}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryogen",
        description="CryoGEN restores cryo-electron tomograms: it removes noise and fills the missing wedge "
        "with a prior learned from the data itself, without any ground truth.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"cryogen {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = sub.add_parser(
        "simulate",
        help="make a synthetic tomogram with known ground truth",
        description="Make a synthetic cellular tomogram (vesicles, filaments, complexes in an ice slab) and degrade it "
        "by the missing wedge and noise, to try CryoGEN or measure it against the truth.",
        epilog=EPILOG,
    )
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
    _add_wedge_args(p, required=False)
    p.add_argument(
        "--snr", type=float, default=0.5, help="signal-to-noise ratio, as a ratio of variances (default 0.5)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same tomogram (default 0)")
    p.add_argument("--voxel-size", type=float, default=10.0, help="voxel size in angstrom (default 10)")
    p.add_argument(
        "--halves", action="store_true", help="also write even/odd half tomograms (OBS_even.mrc, OBS_odd.mrc)"
    )
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "evaluate",
        help="compare a restored volume with the ground truth",
        description="Compare a volume with the ground truth: real-space correlation (cc), FSC 0.5 / 0.143 resolution, "
        "and how much of the missing wedge (wedge_recovery) and of the measured region (measured_recovery) is recovered "
        "(1 is perfect, 0 is no better than leaving the wedge empty).",
        epilog=EPILOG,
    )
    p.add_argument("recon", metavar="RECON.mrc")
    p.add_argument("truth", metavar="TRUTH.mrc")
    _add_wedge_args(p, required=False)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "chunk",
        help="cut a tomogram into overlapping tiles (Zarr)",
        description="Cut an MRC tomogram into overlapping cubic tiles stored in Zarr, recording the tilt geometry and "
        "voxel size. Streams: memory does not grow with the tomogram.",
        epilog=EPILOG,
    )
    p.add_argument("input", metavar="IN.mrc")
    p.add_argument("output", metavar="OUT.zarr")
    p.add_argument("--tile", type=int, default=64, help="tile edge in voxels (default 64)")
    p.add_argument("--overlap", type=int, default=16, help="overlap between neighbouring tiles in voxels (default 16)")
    _add_wedge_args(p, required=True, auto=True)
    p.add_argument("--voxel-size", type=float, default=None, help="voxel size in angstrom, overriding the MRC header")
    p.add_argument(
        "--halves",
        nargs=2,
        metavar=("EVEN.mrc", "ODD.mrc"),
        default=None,
        help="even/odd half tomograms (e.g. from even and odd tilts or frames): the noise level and spectrum are "
        "measured from their difference instead of assumed flat",
    )
    p.set_defaults(func=cmd_chunk)

    p = sub.add_parser(
        "stitch",
        help="blend tiles back into an MRC volume",
        description="Blend the tiles of a store back into one MRC volume with smooth weights (no seams), keeping the "
        "source's voxel size and origin. Streams: memory does not grow with the tomogram.",
    )
    p.add_argument("tiles", metavar="TILES.zarr")
    p.add_argument("output", metavar="OUT.mrc")
    p.add_argument(
        "--std", action="store_true", help="stitch the per-voxel uncertainty (std) instead of the restored volume"
    )
    p.set_defaults(func=cmd_stitch)

    p = sub.add_parser(
        "export",
        help="write a volume as OME-Zarr for napari, copick and the CryoET Data Portal",
        description="Write an MRC volume (e.g. the restored tomogram from stitch) as OME-Zarr (NGFF 0.4): a "
        "multi-resolution pyramid (each level 2x smaller, chunks of 256^3 voxels) with the voxel size in angstrom, "
        "which napari, copick and the CryoET Data Portal tools open directly. With --std, the uncertainty map is "
        "written beside it as OUT_std.zarr on the same grid. Streams: memory depends on the tomogram's width, not its size.",
    )
    p.add_argument("input", metavar="RECON.mrc", help="volume to export (MRC or IMOD .rec, any real-valued mode)")
    p.add_argument("output", metavar="OUT.zarr", help="OME-Zarr folder to write (name ending in .zarr or .ome.zarr)")
    p.add_argument(
        "--ome", action="store_true", help="write OME-Zarr (NGFF 0.4); the only export format, so also the default"
    )
    p.add_argument(
        "--std", metavar="STD.mrc", default=None, help="uncertainty map (from stitch --std) to write as OUT_std.zarr"
    )
    p.add_argument(
        "--voxel-size", type=float, default=None, metavar="A", help="voxel size in angstrom, overriding the MRC header"
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=256,
        metavar="N",
        help="chunk edge in voxels (default 256, as the CryoET Data Portal)",
    )
    p.set_defaults(func=cmd_export)

    def add_device(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", help="auto (a CUDA GPU when torch sees one, else CPU), cpu or cuda")
        p.add_argument(
            "--seed", type=int, default=0, help="random seed; the same seed on the same hardware gives the same result"
        )

    def add_solve(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--map-steps",
            type=int,
            default=0,
            help="MAP refinement steps per tile after the network's warm start (default 0: the network alone; see the README's Quality section)",
        )
        p.add_argument(
            "--samples",
            type=int,
            default=0,
            help="posterior samples per tile for the uncertainty (std) map (default 0: none)",
        )
        p.add_argument(
            "--prior-weight",
            type=float,
            default=0.01,
            help="weight lambda (per voxel) of the learned prior against the data in the MAP steps (default 0.01)",
        )

    def add_train(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--steps", type=int, default=None, help="training steps (default 2000, or unlimited within --time-budget)"
        )
        p.add_argument(
            "--time-budget", type=float, default=None, metavar="MINUTES", help="stop training after this many minutes"
        )
        p.add_argument("--batch", type=int, default=4, help="patches per training step (default 4)")
        p.add_argument("--patch", type=int, default=32, help="training patch edge in voxels (default 32)")

    p = sub.add_parser(
        "train",
        help="learn the prior from tiles of one or more tomograms",
        description="Learn the energy prior and the reconstruction network from the observed tiles alone (no ground "
        "truth). Checkpoints as it goes; --resume continues a killed run. Writes training curves (CSV, PNG) beside the prior.",
    )
    p.add_argument("tiles", nargs="+", metavar="TILES.zarr")
    p.add_argument("--out", required=True, metavar="prior.pt", help="where to write the trained prior")
    add_train(p)
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
    add_device(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "reconstruct",
        help="restore every tile under a trained prior",
        description="Restore each tile: the network's estimate, refined by MAP steps under the prior; with --samples, "
        "also the per-voxel standard deviation of posterior samples. A killed run resumes where it stopped.",
    )
    p.add_argument("tiles", metavar="TILES.zarr")
    p.add_argument("--prior", required=True, metavar="prior.pt")
    p.add_argument("--out", required=True, metavar="RECON.zarr")
    p.add_argument("--batch", type=int, default=4, help="tiles per batch (default 4)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="restore batches in parallel on a local Dask cluster of this many worker processes, one thread each (default 1: serially in this process)",
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
        help="run on an existing Dask cluster at this scheduler address (e.g. tcp://node:8786) instead; its workers must see the same paths",
    )
    add_solve(p)
    add_device(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser(
        "run",
        help="restore one tomogram in one command (chunk, train, reconstruct, stitch)",
        description="Restore one tomogram without Snakemake: chunk, train a prior on it, reconstruct and stitch. "
        "--time-budget bounds the whole run: training gets what is left after a measured estimate of the rest.",
        epilog=EPILOG,
    )
    p.add_argument("input", metavar="IN.mrc")
    p.add_argument("output", metavar="OUT.mrc")
    _add_wedge_args(p, required=True, auto=True)
    p.add_argument(
        "--std", metavar="STD.mrc", help="also write the per-voxel uncertainty (needs --samples > 0; default 8 then)"
    )
    p.add_argument("--tile", type=int, default=64, help="tile edge in voxels (default 64)")
    p.add_argument("--overlap", type=int, default=16, help="tile overlap in voxels (default 16)")
    p.add_argument("--voxel-size", type=float, default=None, help="voxel size in angstrom, overriding the MRC header")
    add_train(p)
    add_solve(p)
    add_device(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "benchmark",
        help="measure restoration quality against ground truth on simulated tomograms",
        description="Simulate phantoms with known truth and compare the input, the best Gaussian low-pass (sigma "
        "chosen with the truth), the network alone and the full MAP: cc, FSC, wedge and measured recovery, wall time.",
    )
    p.add_argument("--shape", nargs=3, type=int, default=(96, 192, 192), metavar=("Z", "Y", "X"))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument(
        "--tilts", nargs="+", type=float, default=[60.0, 45.0], help="half tilt ranges, e.g. 60 45 for +-60 and +-45"
    )
    p.add_argument("--snrs", nargs="+", type=float, default=[0.5, 0.25])
    p.add_argument(
        "--time-budget",
        type=float,
        default=10.0,
        metavar="MINUTES",
        help="per-tomogram budget for the method (default 10)",
    )
    p.add_argument("--steps", type=int, default=None, help="fixed training steps instead of the time budget")
    p.add_argument("--map-steps", type=int, default=10)
    p.add_argument("--prior-weight", type=float, default=0.01)
    p.add_argument("--samples", type=int, default=0)
    p.add_argument("--workdir", default="bench", help="folder for the simulated data and results (default bench/)")
    p.add_argument(
        "--speed",
        action="store_true",
        help="measure speed and memory instead of quality: throughput of reconstruct and "
        "train, peak memory of every stage at 1x, 4x and 16x the voxels, Dask scaling, CUDA when available",
    )
    p.add_argument("--train-steps", type=int, default=20, help="with --speed: training steps to time (default 20)")
    p.add_argument(
        "--full-size",
        action="store_true",
        help="with --speed: also run chunk, reconstruct and stitch on a real "
        "1000 x 1000 x 300 tomogram (1.2 GB; ~6 GB of disk in --workdir) and time them end to end",
    )
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    add_device(p)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser(
        "report",
        help="figures of a tomogram before and after restoration (PNG)",
        description="Write the central XY/XZ/YZ slices before and after restoration, and the power spectra in the plane "
        "of the missing wedge before and after (PNG). With --truth, also the truth and, in --summary, the metrics.",
        epilog=EPILOG,
    )
    p.add_argument("before", metavar="OBS.mrc", help="the observed tomogram")
    p.add_argument("after", metavar="RESTORED.mrc", help="the restored tomogram")
    p.add_argument("--slices", required=True, metavar="PNG", help="where to write the slices figure")
    p.add_argument("--spectra", required=True, metavar="PNG", help="where to write the power spectra figure")
    _add_wedge_args(p, required=False, auto=True)
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
    p.set_defaults(func=cmd_report)
    p = sub.add_parser(
        "info",
        help="describe an MRC file or a CryoGEN Zarr store",
        description="Print shape, voxel size, data type, value range and tilt metadata of an MRC file or a CryoGEN store.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)
    return parser


# verbs that run the networks; the others (chunk, stitch, export, ...) keep glibc's defaults,
# which return freed memory at once and keep their peaks lower (measured: chunk 1.7x its 1x peak
# at 16x with the tuning, 1.47x without)
NETWORK_VERBS = ("train", "reconstruct", "run", "benchmark")


def main(argv: Sequence[str] | None = None) -> int:
    import errno
    import logging

    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    if args.verb in NETWORK_VERBS:
        from ..runtime import tune_malloc

        tune_malloc()  # before torch allocates: 1.7x faster networks on the CPU (see cryogen.runtime)
    prefix = f"cryogen {args.verb}: error:"
    # what the stages log (progress milestones, resumes, warnings about the data) goes to stderr,
    # one line each, prefixed like the errors; the handler lives only as long as this call
    handler = logging.StreamHandler(sys.stderr)

    class _Format(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            return f"cryogen {args.verb}: {level}{record.getMessage()}"

    handler.setFormatter(_Format())
    logger = logging.getLogger("cryogen")
    old_level = logger.level
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        func(args)
    except CryogenError as exc:
        print(f"{prefix} {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prefix} interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if os.environ.get("CRYOGEN_DEBUG"):
            raise
        from ..io.files import output_error, output_of_temporary

        # an error about a temporary is about the output it stands for; one without a file
        # name (a full disk, mostly) is about what the verb writes
        output = output_of_temporary(exc.filename) if exc.filename else None
        if output is not None:
            print(f"{prefix} {output_error(output, exc)}", file=sys.stderr)
            return 1
        target = exc.filename or getattr(args, "output", None) or getattr(args, "out", None)
        where = f"{os.fsdecode(target)}: " if target else ""
        what = exc.strerror or str(exc) or type(exc).__name__
        if exc.errno == errno.ENOSPC:
            what = f"cannot write: {what.lower()} (disk full)"
        print(f"{prefix} {where}{what}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, not bad input: still one line unless debugging
        if os.environ.get("CRYOGEN_DEBUG"):
            raise
        print(f"{prefix} unexpected {type(exc).__name__}: {exc} (set CRYOGEN_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
