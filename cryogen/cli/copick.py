"""`cryogen copick runs | import | export`: list a local copick project's runs and tomograms, copy
one tomogram out as MRC for the pipeline, and write a restored tomogram (and its std map) back
into the project as new tomogram types (cryogen.io.copick_project)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .common import default_of

if TYPE_CHECKING:
    from .common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sub.add_parser(
        "copick",
        help="read tomograms from a copick project and write restored ones back into it",
        description="Work with a copick project on a local file system (its config JSON): `runs` lists its runs "
        "with their voxel spacings and tomogram types; `import` copies one tomogram (a type at a voxel spacing) into "
        "an MRC file the pipeline reads; `export` writes a restored MRC (and its std map) into the project's "
        "overlay as new tomogram types, in the OME-Zarr layout copick writes (Zarr format 2, 3 levels, scale in "
        "angstrom). Source tomograms are only read. All three stream: memory does not grow with the tomogram.",
        arguments=_arguments,
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="COPICK.json", help="the copick project's config file")


def _arguments(p: argparse.ArgumentParser) -> None:
    from ..io.copick_project import export_tomogram

    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    runs = actions.add_parser("runs", help="list the runs, their voxel spacings and tomogram types")
    _common(runs)
    runs.add_argument("--voxel-spacing", type=float, default=None, metavar="A", help="only this voxel spacing")
    runs.add_argument("--tomo-type", default=None, metavar="TYPE", help="only runs that have this tomogram type")
    runs.set_defaults(func=run_runs)

    imp = actions.add_parser("import", help="copy a run's tomogram into an MRC file")
    _common(imp)
    imp.add_argument("run", metavar="RUN", help="run name")
    imp.add_argument("output", metavar="OUT.mrc", help="MRC file to write (with the voxel spacing in its header)")
    imp.add_argument("--tomo-type", required=True, metavar="TYPE", help="tomogram type to read, e.g. wbp")
    imp.add_argument("--voxel-spacing", type=float, required=True, metavar="A", help="its voxel spacing, e.g. 10")
    imp.set_defaults(func=run_import)

    exp = actions.add_parser("export", help="write a restored tomogram into a run as a new tomogram type")
    _common(exp)
    exp.add_argument("run", metavar="RUN", help="run name")
    exp.add_argument("input", metavar="RESTORED.mrc", help="restored volume (from stitch)")
    exp.add_argument("--voxel-spacing", type=float, required=True, metavar="A", help="voxel spacing to file it under")
    ttype = default_of(export_tomogram, "tomo_type")
    exp.add_argument("--type", dest="tomo_type", default=ttype, metavar="TYPE", help=f"its type (default {ttype})")
    exp.add_argument("--std", metavar="STD.mrc", default=None, help="uncertainty map (from stitch --std) to add too")
    stype = default_of(export_tomogram, "std_type")
    exp.add_argument("--std-type", default=stype, metavar="TYPE", help=f"the std map's type (default {stype})")
    exp.add_argument(
        "--source-type",
        default=None,
        metavar="TYPE",
        help="the tomogram it was restored from (e.g. wbp): the volume must have its shape, and that type is never written",
    )
    exp.add_argument("--overwrite", action="store_true", help="replace tomograms of these types already there")
    exp.set_defaults(func=run_export)


def run_runs(args: argparse.Namespace) -> None:
    from ..io.copick_project import open_project

    project = open_project(args.config)
    shown = 0
    for name in project.runs():
        spacings = project.voxel_spacings(name)
        if args.voxel_spacing is not None:
            spacings = [v for v in spacings if f"{v:.3f}" == f"{args.voxel_spacing:.3f}"]
        cells = []
        for v in spacings:
            types = project.tomogram_types(name, v)
            if args.tomo_type is None or args.tomo_type in types:
                cells.append(f"{v:g} A: {', '.join(types) or '-'}")
        if cells or (args.voxel_spacing is None and args.tomo_type is None):
            print(f"{name}\t" + ("; ".join(cells) or "no tomograms"))
            shown += 1
    print(f"{shown} runs in {project.config}")


def run_import(args: argparse.Namespace) -> None:
    from ..io.copick_project import import_tomogram, open_project

    out = import_tomogram(open_project(args.config), args.run, args.tomo_type, args.voxel_spacing, args.output)
    print(f"wrote {out}")


def run_export(args: argparse.Namespace) -> None:
    from ..io.copick_project import export_tomogram, open_project

    written = export_tomogram(
        open_project(args.config),
        args.run,
        args.voxel_spacing,
        args.input,
        tomo_type=args.tomo_type,
        std=args.std,
        std_type=args.std_type,
        source_type=args.source_type,
        overwrite=args.overwrite,
    )
    for path in written:
        print(f"wrote {path}")
