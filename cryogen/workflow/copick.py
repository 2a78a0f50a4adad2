"""The runs of the copick project at config key copick, as tomograms of the workflow: each run's
tomogram (copick.tomo_type at copick.voxel_spacing) is copied into RESULTS/RUN/copick_input.mrc
by the copick_import rule, restored like any tomogram of the sheet, and written back by the
copick_export rule as copick.output_type (and copick.std_type). Problems raise CryogenError with
one line naming the config key or the project (common.smk shows it as a WorkflowError)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CryogenError
from ..io.copick_project import CopickProject, check_type_name, level0_shape, open_project, written_by_cryogen
from ..io.ome_zarr import CHUNK

if TYPE_CHECKING:
    from .sheet import Tomogram

__all__ = ["CopickRuns", "check_copick", "copick_runs", "copick_tomograms"]

INPUT = "copick_input.mrc"


def check_copick(settings: dict[str, Any]) -> None:
    """The tomogram types of config key copick: copick names, and none that would overwrite another."""
    for key in ("tomo_type", "output_type", "std_type"):
        try:
            check_type_name(settings[key], key)
        except CryogenError as exc:
            raise CryogenError(f"invalid config: key copick.{key}: {exc}") from None
    if settings["output_type"] == settings["tomo_type"]:
        raise CryogenError(
            f"invalid config: key copick.output_type: {settings['output_type']!r} is the source type; the restored "
            "volumes need a type of their own"
        )
    if settings["std_type"] in (settings["tomo_type"], settings["output_type"]):
        raise CryogenError(f"invalid config: key copick.std_type: {settings['std_type']!r} is already used")


@dataclass(frozen=True)
class CopickRuns:
    """The project, its settings (config key copick) and the runs to restore, by tomogram name."""

    project: CopickProject
    settings: dict[str, Any]
    runs: list[str]

    def mem_mb(self, run: str, attempt: int = 1) -> int:
        """Memory for importing or exporting `run`'s tomogram: both hold blocks of one chunk of z x
        one chunk of y x the full width (measured peak: 556 MB import, 1089 MB export at a width
        of 512, the same at 2x the depth), so 300 MB plus 8 such blocks, doubled per attempt."""
        source = self.project.source(run, self.settings["voxel_spacing"], self.settings["tomo_type"])
        nz, ny, nx = level0_shape(source)
        block_mb = min(nz, CHUNK) * min(ny, CHUNK) * nx * 4 / 2**20
        return int((300 + 8 * block_mb) * 2 ** (attempt - 1))

    def targets(self, with_std: bool) -> list[str]:
        """Every OME-Zarr folder the workflow writes into the project (rule all's copick inputs)."""
        return [path for run in self.runs for path in self.outputs(run, with_std).values()]

    def outputs(self, run: str, with_std: bool) -> dict[str, str]:
        """The OME-Zarr folders the export of `run` writes: restored (and std)."""
        spacing = self.settings["voxel_spacing"]
        out = {"restored": str(self.project.output_path(run, spacing, self.settings["output_type"]))}
        if with_std:
            out["std"] = str(self.project.output_path(run, spacing, self.settings["std_type"]))
        return out


def copick_runs(config: dict[str, Any]) -> CopickRuns | None:
    """The runs of the copick project at config key copick (None without one). Listed runs must
    have the tomogram; with none listed, every run that has it is taken (at least one must)."""
    settings = config.get("copick") or {}
    if not settings.get("config"):
        return None
    check_copick(settings)
    project = open_project(settings["config"])
    spacing, ttype = settings["voxel_spacing"], settings["tomo_type"]
    if settings["runs"]:
        for run in settings["runs"]:
            try:
                project.source(run, spacing, ttype)
            except CryogenError as exc:
                raise CryogenError(f"invalid config: key copick.runs: {exc}") from None
        runs = list(dict.fromkeys(settings["runs"]))
    else:
        runs = [r for r in project.runs() if project.tomogram(r, spacing, ttype) is not None]
        if not runs:
            raise CryogenError(f"no run has a {ttype!r} tomogram at {spacing:g} A (config key copick)", project.config)
    found = CopickRuns(project, settings, runs)
    # Snakemake removes a job's old outputs before it runs: refuse now what the export would refuse
    for path in found.targets(with_std=True):
        if Path(path).exists() and not written_by_cryogen(Path(path)):
            raise CryogenError(
                "a tomogram of this type is there and CryoGEN did not write it; choose another copick.output_type "
                "or copick.std_type",
                path,
            )
    return found


def copick_tomograms(config: dict[str, Any]) -> list[Tomogram]:
    """The copick runs as tomograms named after their runs, read from RESULTS/RUN/copick_input.mrc."""
    from .sheet import Tomogram

    found = copick_runs(config)
    if found is None:
        return []
    s = found.settings
    tilt: tuple[float, float] | tuple[str, str] = ("auto", "auto")
    if s["tilt_range"] != "auto":
        lo, hi = (float(v) for v in s["tilt_range"])
        if lo >= hi:
            raise CryogenError(f"invalid config: key copick.tilt_range: min ({lo:g}) must be below max ({hi:g})")
        tilt = (lo, hi)
    results = config.get("results", "results").rstrip("/")  # as common.smk spells RESULTS, so the paths match its rules
    return [
        Tomogram(
            name=run,
            path=f"{results}/{run}/{INPUT}",
            tilt_min=tilt[0],
            tilt_max=tilt[1],
            tilt_axis=s["tilt_axis"],
            group=s["group"],
        )
        for run in found.runs
    ]
