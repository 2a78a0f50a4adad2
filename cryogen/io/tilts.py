"""Tilt angles from the files that tilt-series software already writes, so that a user gives the
file instead of copying a tilt range out of it: IMOD `.tlt` / `.rawtlt` (one angle a line),
SerialEM `.mdoc` (the `TiltAngle` of each `[ZValue = n]` section) and AreTomo `.aln` (the TILT
column of the global alignment table, whose rows leave out the dark frames AreTomo dropped).

Each format is read by a few lines of our own rather than by teamtomo's `mdocfile` / `alnfile`:
those return pandas tables (pandas and pydantic as dependencies) for one column we need, and a
bad file must give one line naming the file and the line, which we can only say if we read the
lines. The angles keep the file's order (the stack's: acquisition order for a SerialEM stack, the
aligned stack's for `.aln`), for the tilt-series forward model; the library takes a `Wedge`,
made by `TiltAngles.wedge`, and the CLI and the sheet read the file (`--tilt-file`, `tilt_file`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CryogenError
from ..model.imaging import Wedge

__all__ = ["FORMATS", "TiltAngles", "read_tilt_angles"]

#: file name suffix -> format name
FORMATS = {".tlt": "imod", ".rawtlt": "imod", ".mdoc": "serialem", ".aln": "aretomo"}

_NAMES = {"imod": "an IMOD tilt", "serialem": "a SerialEM .mdoc", "aretomo": "an AreTomo .aln"}
_Lines = list[tuple[int, str]]  # (1-based line number, stripped text)


@dataclass(frozen=True)
class TiltAngles:
    """The tilt angles of one tilt series in degrees, in the file's order, and where they came from."""

    angles: tuple[float, ...]
    path: str
    format: str  # one of FORMATS' values

    def wedge(self, tilt_axis: str = "y") -> Wedge:
        """The tilt range the angles span, about `tilt_axis` (the files do not say which volume axis it is)."""
        lo, hi = min(self.angles), max(self.angles)
        if lo == hi:
            raise CryogenError(f"all {len(self.angles)} tilt angles are {lo:g}: no tilt range", self.path)
        return Wedge(lo, hi, tilt_axis)


def read_tilt_angles(path: str | Path) -> TiltAngles:
    """The angles of an IMOD `.tlt`/`.rawtlt`, SerialEM `.mdoc` or AreTomo `.aln` file (by its suffix).

    A file that cannot be read, holds no angle, or has an entry that is not a number or lies beyond
    +-90 degrees raises CryogenError "PATH: line N: problem".
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        suffix = repr(path.suffix) if path.suffix else "(none)"
        raise CryogenError(f"unknown tilt file suffix {suffix}: give one of {', '.join(FORMATS)}", path)
    lines = _read_lines(path)
    if not any(line for _, line in lines):
        raise CryogenError("empty: no tilt angles", path)
    parse: Callable[[_Lines, Path], list[float]] = {"imod": _imod, "serialem": _mdoc, "aretomo": _aln}[fmt]
    angles = parse(lines, path)
    if not angles:
        raise CryogenError(f"no tilt angles in its {len(lines)} lines (not {_NAMES[fmt]} file?)", path)
    return TiltAngles(tuple(angles), str(path), fmt)


def _read_lines(path: Path) -> _Lines:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CryogenError("tilt file not found", path) from None
    except IsADirectoryError:
        raise CryogenError("is a folder, not a tilt file", path) from None
    except OSError as exc:
        raise CryogenError(f"cannot read the tilt file: {exc.strerror or exc}", path) from None
    if b"\0" in raw:
        raise CryogenError("not a text file (binary data): not a tilt file", path)
    # Windows tools may write a BOM or latin-1 (paths, comments); the numbers are ASCII either way
    text = raw.decode("utf-8-sig", errors="replace")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]


def _angle(text: str, n: int, path: Path) -> float:
    """One tilt angle in degrees, or the one-line error for line `n`."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise CryogenError(f"line {n}: {text!r} is not a tilt angle (a number in degrees)", path)
    if abs(value) > 90.0:
        raise CryogenError(f"line {n}: tilt angle {value:g} is beyond +-90 degrees", path)
    return value


def _imod(lines: _Lines, path: Path) -> list[float]:
    """IMOD .tlt/.rawtlt: one angle a line, blank lines skipped."""
    angles = []
    for n, line in lines:
        if not line:
            continue
        fields = line.split()
        if len(fields) != 1:
            raise CryogenError(f"line {n}: {len(fields)} values, an IMOD tilt file has one angle a line", path)
        angles.append(_angle(fields[0], n, path))
    return angles


def _mdoc(lines: _Lines, path: Path) -> list[float]:
    """SerialEM .mdoc: `key = value` lines in `[name = value]` sections; one TiltAngle per
    [ZValue = n] section (title, montage and frame-set sections hold no tilt of the stack)."""
    sections: list[int] = []  # lines of the [ZValue] sections, in file order
    angles: dict[int, float] = {}  # section line -> its TiltAngle
    section: int | None = None  # line of the [ZValue] section being read, None outside one
    for n, line in lines:
        if line.startswith("["):
            section = n if line[1:].partition("=")[0].strip() == "ZValue" else None
            if section is not None:
                sections.append(section)
            continue
        key, _, value = line.partition("=")
        if section is None or key.strip() != "TiltAngle":
            continue
        if section in angles:
            raise CryogenError(f"line {n}: a second TiltAngle in the [ZValue] section of line {section}", path)
        angles[section] = _angle(value.strip(), n, path)
    missing = [s for s in sections if s not in angles]
    if missing:
        raise CryogenError(f"line {missing[0]}: the [ZValue] section has no TiltAngle", path)
    return [angles[s] for s in sections]


def _aln(lines: _Lines, path: Path) -> list[float]:
    """AreTomo .aln: `#` header lines, then `# SEC ROT ... TILT` and one row per kept tilt, up to
    the next `#` line (`# Local Alignment`, whose rows are patches, not tilts)."""
    start = next((i for i, (_, line) in enumerate(lines) if line.lstrip("#").split()[:1] == ["SEC"]), None)
    if start is None:
        raise CryogenError("no '# SEC ... TILT' alignment table (not an AreTomo .aln file?)", path)
    header_line, header = lines[start]
    columns = header.lstrip("#").split()
    if "TILT" not in columns:
        raise CryogenError(f"line {header_line}: the alignment table has no TILT column", path)
    angles = []
    for n, line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(columns):
            raise CryogenError(
                f"line {n}: {len(fields)} values, the table header of line {header_line} names {len(columns)}", path
            )
        angles.append(_angle(fields[columns.index("TILT")], n, path))
    if not angles:
        raise CryogenError(f"line {header_line}: the alignment table has no rows", path)
    return angles
