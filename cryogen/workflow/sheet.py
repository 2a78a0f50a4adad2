"""The tomogram sheet (config/tomograms.tsv): its rows as Tomogram records, validated against
workflow/schemas/tomograms.schema.yaml, the demo tomograms used when it lists none, and the
groups that each train one prior. Problems raise CryogenError with one line that names the
sheet, the data row and the column (common.smk re-raises it as a WorkflowError).

A row lists a tomogram (`path`) or an aligned tilt series (`tilt_series`, with its `tilt_file`);
the record of a tilt-series row names as its tomogram and halves the files the backproject rule
writes (`backprojected`), so every later stage treats it as a tomogram with even/odd halves."""

from __future__ import annotations

import csv
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CryogenError
from ..io.tilts import read_tilt_angles
from .config import Schema, validate
from .copick import copick_tomograms

__all__ = ["Dataset", "Tomogram", "backprojected", "demo_tomograms", "load_dataset", "read_sheet"]

_NUMBERS = ("tilt_min", "tilt_max", "voxel_size", "defocus")
_INTEGERS = ("binning", "thickness")
_BOOLS = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


@dataclass(frozen=True)
class Tomogram:
    """One row of the sheet; empty cells took the schema's defaults."""

    name: str
    path: str
    tilt_min: float | str | None = None  # a number, or "auto" (then both are); None with a tilt_file
    tilt_max: float | str | None = None
    tilt_axis: str = "y"
    even: str | None = None
    odd: str | None = None
    voxel_size: float | None = None
    group: str = "dataset"
    train: bool = True
    truth: str | None = None
    tilt_file: str | None = None  # the tilt series' angles (IMOD, SerialEM, AreTomo), instead of the range
    tilt_series: str | None = None  # an aligned tilt series that `path` (and the halves) are reconstructed from
    binning: int = 1  # of the tilt series' images, for its reconstruction
    thickness: int | None = None  # of the reconstruction, binned voxels (None: cryogen backproject's default)
    defocus: float | None = None  # um: chunk CTF-deconvolves the tomogram first (`cryogen.deconvolve`)

    def tilt_options(self) -> str:
        """--tilt-range (or --tilt-file) and --tilt-axis for the verbs that take them (chunk, report)."""
        if self.tilt_file is not None:
            tilt = f"--tilt-file {shlex.quote(self.tilt_file)}"
        elif self.tilt_min == "auto":
            tilt = "--tilt-range auto"
        else:
            tilt = f"--tilt-range {self.tilt_min:g} {self.tilt_max:g}"
        return f"{tilt} --tilt-axis {self.tilt_axis}"

    def chunk_options(self, ctf: dict[str, Any] | None = None) -> str:
        """`cryogen chunk` options beyond tile and overlap: geometry, voxel size, half tomograms, and
        with a defocus the CTF deconvolution, its optics from `ctf` (config key ctf)."""
        opts = self.tilt_options()
        if self.voxel_size is not None:
            opts += f" --voxel-size {self.voxel_size:g}"
        if self.even and self.odd:
            opts += f" --halves {shlex.quote(self.even)} {shlex.quote(self.odd)}"
        if self.defocus is not None:
            optics = ctf or {}
            opts += f" --defocus {self.defocus:g}" + "".join(
                f" --{flag} {optics[key]:g}"
                for key, flag in (
                    ("amplitude_contrast", "amplitude-contrast"),
                    ("voltage_kv", "voltage"),
                    ("cs_mm", "cs"),
                    ("wiener", "wiener"),
                )
                if key in optics
            )
            opts += "".join(
                f" --{'' if optics[key] else 'no-'}{flag}"
                for key, flag in (("whole", "whole-ctf"), ("phase_flipped", "phase-flipped"))
                if key in optics
            )
        return opts

    def backproject_options(self) -> str:
        """`cryogen backproject` options beyond its files: binning and thickness."""
        opts = f"--binning {self.binning}"
        return opts if self.thickness is None else f"{opts} --thickness {self.thickness}"


def backprojected(results: str, name: str) -> tuple[str, str, str]:
    """The tomogram and its even and odd halves that the backproject rule writes for the tilt-series
    row `name` (the rule passes its wildcard) under the `results` folder."""
    folder = f"{results.rstrip('/')}/{name}"
    return f"{folder}/tomogram.mrc", f"{folder}/tomogram_even.mrc", f"{folder}/tomogram_odd.mrc"


def _cell(column: str, text: str) -> Any:
    """A sheet cell as the schema expects it; left as text where it does not convert, so that
    validation names the column and the value."""
    if column in _NUMBERS:
        try:
            return float(text)
        except ValueError:
            return text
    if column in _INTEGERS:
        try:
            return int(text)
        except ValueError:
            return text
    if column == "train":
        return _BOOLS.get(text.lower(), text)
    return text


def read_sheet(path: str | Path, schema: Schema, results: str = "results") -> list[Tomogram]:
    """The rows of the tab-separated sheet (blank lines and lines starting with # skipped),
    each validated against `schema`; a sheet with no data row gives []. A tilt-series row's
    tomogram and halves are the files `backprojected` names under `results` (config key results)."""
    sheet = Path(path)
    if not sheet.is_file():
        raise CryogenError(f"tomogram sheet {sheet} not found (config key 'tomograms')")
    lines = [ln for ln in sheet.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    reader = csv.reader(lines, delimiter="\t")
    header = [h.strip() for h in next(reader)]
    rows = []
    for row, cells in enumerate(reader, start=1):
        if len(cells) > len(header):
            raise CryogenError(
                f"tomogram sheet {sheet}: data row {row} has {len(cells)} cells, the header {len(header)} (tab-separated?)"
            )
        record = {h: _cell(h, c.strip()) for h, c in zip(header, cells, strict=False) if c.strip() != ""}
        named = f" ({record['name']})" if isinstance(record.get("name"), str) else ""
        label = f"tomogram sheet {sheet}, data row {row}{named}"
        validate(record, schema, label)
        _check_tilts(record, label)
        if _check_source(record, label):
            record["path"], record["even"], record["odd"] = backprojected(results, record["name"])
        rows.append(Tomogram(**record))
    return rows


def _check_source(record: dict[str, Any], label: str) -> bool:
    """Whether a validated row lists an aligned tilt series (else a tomogram): one of path and
    tilt_series; a tilt series has its tilt axis along y and makes its own halves."""
    if ("path" in record) == ("tilt_series" in record):
        given = "not both" if "path" in record else "neither is given"
        raise CryogenError(f"{label}: give path (a tomogram) or tilt_series (an aligned tilt series), {given}")
    if "path" in record:
        return False
    if record["tilt_axis"] != "y":
        raise CryogenError(
            f"{label}: an aligned tilt series has its tilt axis along y (IMOD), not {record['tilt_axis']}: "
            "leave tilt_axis empty"
        )
    if "even" in record:
        raise CryogenError(
            f"{label}: even/odd halves are made from the tilt series' alternating tilts: leave them empty"
        )
    return True


def _check_tilts(record: dict[str, Any], label: str) -> None:
    """The tilt geometry of a validated row: a tilt_file or a range (both numbers, or both auto).
    The tilt file is read now (it is small), so that a missing or bad one stops the run before any job."""
    given = [k for k in ("tilt_min", "tilt_max") if k in record]
    if "tilt_file" in record:
        if given:
            raise CryogenError(
                f"{label}: give tilt_file or tilt_min/tilt_max, not both (tilt_file {record['tilt_file']}, "
                f"{given[0]} {record[given[0]]})"
            )
        try:
            read_tilt_angles(record["tilt_file"]).wedge(record["tilt_axis"])
        except CryogenError as exc:
            raise CryogenError(f"{label}: key tilt_file: {exc}") from None
        return
    if len(given) < 2:
        raise CryogenError(f"{label}: give tilt_min and tilt_max (degrees, or auto in both), or a tilt_file")
    autos = [record[k] == "auto" for k in given]
    if any(autos) and not all(autos):
        raise CryogenError(
            f"{label}: tilt_min and tilt_max are both auto or both numbers, not {record['tilt_min']} and {record['tilt_max']}"
        )
    if not any(autos) and record["tilt_min"] >= record["tilt_max"]:
        raise CryogenError(
            f"{label}: tilt_min ({record['tilt_min']:g}) must be below tilt_max ({record['tilt_max']:g})"
        )


def demo_tomograms(demo: dict[str, Any]) -> list[Tomogram]:
    """The demo's tomograms demo1..demoN (config key demo), with their ground truth."""
    lo, hi = demo["tilt_range"]
    if lo >= hi:
        raise CryogenError(f"invalid config: key demo.tilt_range: min ({lo:g}) must be below max ({hi:g})")
    return [
        Tomogram(
            name=f"demo{i}",
            path=f"{demo['dir']}/demo{i}.mrc",
            tilt_min=float(lo),
            tilt_max=float(hi),
            truth=f"{demo['dir']}/demo{i}_truth.mrc",
        )
        for i in range(1, demo["count"] + 1)
    ]


@dataclass(frozen=True)
class Dataset:
    """The tomograms to restore, by name, and the groups that each train one prior."""

    tomograms: dict[str, Tomogram]
    groups: dict[str, list[Tomogram]]


def load_dataset(config: dict[str, Any], schema: Schema) -> Dataset:
    """The tomograms of the sheet at config key tomograms (`schema`: its row schema), or the
    demo's when it lists none: names unique, every group with a tomogram to train on."""
    sheet = config["tomograms"]
    results = config.get("results", "results")  # where tilt-series rows' tomograms are made
    rows = read_sheet(sheet, schema, results) + copick_tomograms(config)  # the runs of config key copick
    names = [t.name for t in rows]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CryogenError(f"tomogram sheet {sheet}: names must be unique; repeated: " + ", ".join(repeated))
    tomograms = {t.name: t for t in (rows or demo_tomograms(config["demo"]))}
    groups: dict[str, list[Tomogram]] = {}
    for t in tomograms.values():
        groups.setdefault(t.group, []).append(t)
    for group, members in groups.items():
        if not any(t.train for t in members):
            raise CryogenError(
                f"tomogram sheet {sheet}: group {group!r} has no tomogram with train=yes to train its prior on"
            )
    return Dataset(tomograms, groups)
