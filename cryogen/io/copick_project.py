"""copick projects on a local file system: find their runs and tomograms, stream a tomogram out
into an MRC that the pipeline reads, and write a restored tomogram (and its std map) back in as
new tomogram types, in the layout and metadata copick itself writes.

What copick 1.31 reads and writes (its `impl/filesystem.py`, `util/ome.py`, `ops/add.py`):

    config JSON     {"config_type": "filesystem", "overlay_root": URL, "static_root": URL (optional), ...}
                    URL: a local path or local:// / file:// (copick opens it with fsspec); a
                    relative path is relative to the working directory, as fsspec reads it
    ROOT/ExperimentRuns/RUN/VoxelSpacing{spacing:.3f}/TYPE.zarr
                    one OME-Zarr image (NGFF 0.4, Zarr format 2, '/' chunk keys), arrays "0", "1",
                    "2": level l is the 2x2x2 local mean of level l-1, its only coordinate
                    transformation the scale spacing x 2^l per axis (z, y, x, unit angstrom);
                    float32, chunks 256^3, Blosc lz4
    static root     read-only; the overlay root is where copick writes (the same folder when
                    static_root is absent). A tomogram is looked up in the static root first.

Names of runs, types and folders starting with '.' are hidden from copick, so the temporary
`.TYPE.zarr.tmp-HOST-PID` that an export writes under stays invisible until it is renamed.
Tomogram types follow copick's rule for names (no spaces, underscores or `<>:"/\\|?*`) and must
not contain "features", which copick takes for a feature map. Nothing is ever written into the
static root or into an existing tomogram of another type.

Streaming: reading copies blocks of one chunk of z x one chunk of y x all x; writing builds each
level from the previous one in blocks of that size, as cryogen.io.ome_zarr does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import CryogenError
from .files import atomic_output
from .mrc import MrcReader, MrcWriter, check_finite_block
from .ome_zarr import AXES, CHUNK, NGFF_VERSION, chunk_blocks, create_levels, display_window, fill_levels

__all__ = [
    "LEVELS",
    "CopickProject",
    "check_type_name",
    "export_tomogram",
    "import_tomogram",
    "level0_shape",
    "open_project",
    "spacing_folder",
    "written_by_cryogen",
]

log = logging.getLogger(__name__)

#: pyramid levels of a tomogram, as copick's `from_numpy` and `add_tomogram` write them
LEVELS = 3
_BAD_NAME = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f\s_]')
_LOCAL = ("local://", "file://")


def spacing_folder(voxel_spacing: float) -> str:
    """The folder of a voxel spacing in a run, named as copick names it (three decimals)."""
    return f"VoxelSpacing{voxel_spacing:.3f}"


def check_type_name(name: str, what: str = "tomogram type") -> str:
    """`name` if copick accepts it as a tomogram type unchanged, else a one-line error."""
    if not name or _BAD_NAME.search(name) or name.startswith((".", "-")) or name.endswith("-"):
        raise CryogenError(
            f"{what} {name!r} is not a copick name: use letters, digits and '-' (no spaces, underscores, "
            "leading '.' or '-')"
        )
    if "features" in name:
        raise CryogenError(f"{what} {name!r}: copick takes a type containing 'features' for a feature map")
    return name


def _root(url: Any, key: str, config: Path) -> Path:
    if not isinstance(url, str) or not url.strip():
        raise CryogenError(f"key {key} must be a folder (a path or local:// URL), not {url!r}", config)
    for prefix in _LOCAL:
        if url.startswith(prefix):
            url = url[len(prefix) :]
            break
    else:
        if "://" in url:
            raise CryogenError(
                f"key {key}: {url} is not on the local file system; CryoGEN reads and writes local copick "
                "projects only (copy or mount the project first)",
                config,
            )
    return Path(url).expanduser().absolute()


@dataclass(frozen=True)
class CopickProject:
    """A local copick project: its config file and its static (read-only) and overlay roots."""

    config: Path
    static_root: Path
    overlay_root: Path

    @property
    def separate_overlay(self) -> bool:
        return self.static_root != self.overlay_root

    def runs(self) -> list[str]:
        """Run names in either root (copick's union), sorted; hidden folders left out."""
        names: set[str] = set()
        for root in {self.static_root, self.overlay_root}:
            runs = root / "ExperimentRuns"
            if runs.is_dir():
                names |= {p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")}
        return sorted(names)

    def _spacing_dirs(self, run: str, voxel_spacing: float) -> list[Path]:
        folder = spacing_folder(voxel_spacing)
        return [root / "ExperimentRuns" / run / folder for root in dict.fromkeys((self.static_root, self.overlay_root))]

    def voxel_spacings(self, run: str) -> list[float]:
        """The voxel spacings (angstrom) of a run in either root."""
        found: set[float] = set()
        for root in {self.static_root, self.overlay_root}:
            d = root / "ExperimentRuns" / run
            if d.is_dir():
                for p in d.glob("VoxelSpacing*"):
                    with contextlib.suppress(ValueError):
                        found.add(float(p.name[len("VoxelSpacing") :]))
        return sorted(found)

    def tomogram_types(self, run: str, voxel_spacing: float) -> list[str]:
        """The tomogram types of a run at a voxel spacing, as copick lists them."""
        types: set[str] = set()
        for d in self._spacing_dirs(run, voxel_spacing):
            if d.is_dir():
                types |= {
                    p.name[: -len(".zarr")]
                    for p in d.glob("*.zarr")
                    if p.is_dir() and not p.name.startswith(".") and "features" not in p.name
                }
        return sorted(types)

    def tomogram(self, run: str, voxel_spacing: float, tomo_type: str) -> Path | None:
        """The OME-Zarr folder of a tomogram (static root first, as copick looks), or None."""
        for d in self._spacing_dirs(run, voxel_spacing):
            p = d / f"{tomo_type}.zarr"
            if p.is_dir():
                return p
        return None

    def output_path(self, run: str, voxel_spacing: float, tomo_type: str) -> Path:
        """Where copick writes a tomogram of this type: in the overlay root."""
        return self.overlay_root / "ExperimentRuns" / run / spacing_folder(voxel_spacing) / f"{tomo_type}.zarr"

    def source(self, run: str, voxel_spacing: float, tomo_type: str) -> Path:
        """The tomogram's folder, or a one-line error saying what the run has instead."""
        path = self.tomogram(run, voxel_spacing, tomo_type)
        if path is not None:
            return path
        if run not in self.runs():
            raise CryogenError(f"copick project has no run {run!r}", self.config)
        have = self.tomogram_types(run, voxel_spacing)
        if have:
            raise CryogenError(
                f"run {run} has no {tomo_type!r} tomogram at {voxel_spacing:g} A (types there: {', '.join(have)})",
                self.config,
            )
        spacings = ", ".join(f"{v:g}" for v in self.voxel_spacings(run)) or "none"
        raise CryogenError(
            f"run {run} has no tomogram at {voxel_spacing:g} A (voxel spacings there: {spacings})", self.config
        )


def open_project(config: str | Path) -> CopickProject:
    """The local copick project of a config JSON file; one-line errors for what copick would refuse."""
    path = Path(config)
    if not path.is_file():
        raise CryogenError("copick config not found", path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CryogenError(f"not a copick config: invalid JSON ({exc})", path) from None
    if not isinstance(data, dict):
        raise CryogenError("not a copick config: the JSON is not an object", path)
    kind = data.get("config_type", "filesystem")
    if kind != "filesystem":
        raise CryogenError(
            f"copick config_type {kind!r} is not supported; CryoGEN works on local 'filesystem' projects", path
        )
    if "overlay_root" not in data:
        raise CryogenError("copick config has no overlay_root", path)
    overlay = _root(data["overlay_root"], "overlay_root", path)
    static = _root(data["static_root"], "static_root", path) if data.get("static_root") else overlay
    return CopickProject(path, static, overlay)


# ----------------------------------------------------------------------------- reading


def _level0(path: Path) -> tuple[Any, list[float] | None]:
    """The full-resolution array of an OME-Zarr image, checked, and its scale (None if absent)."""
    import zarr

    from .store import zarr_array

    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is not a store
        raise CryogenError(f"not an OME-Zarr image ({type(exc).__name__})", path) from None
    attrs: dict[str, Any] = dict(group.attrs)
    try:
        dataset = attrs["multiscales"][0]["datasets"][0]
        name = str(dataset["path"])
    except (KeyError, IndexError, TypeError):
        raise CryogenError("not an OME-Zarr image: no multiscales datasets in its attributes", path) from None
    array = zarr_array(group, name, path)
    if array.ndim != 3 or min(array.shape) < 2:
        raise CryogenError(f"level {name} has shape {array.shape}, not a 3-D tomogram", path)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise CryogenError(f"level {name} holds {array.dtype}, not real numbers", path)
    transforms = dataset.get("coordinateTransformations") if isinstance(dataset, dict) else None
    scales = [t["scale"] for t in transforms or [] if isinstance(t, dict) and t.get("type") == "scale" and "scale" in t]
    return array, [float(v) for v in scales[0]] if scales else None


def level0_shape(path: Path) -> tuple[int, int, int]:
    """The full-resolution shape of an OME-Zarr tomogram (its metadata only)."""
    return tuple(int(n) for n in _level0(path)[0].shape)  # type: ignore[return-value]


def import_tomogram(
    project: CopickProject,
    run: str,
    tomo_type: str,
    voxel_spacing: float,
    out: str | Path,
    progress: bool = True,
) -> Path:
    """Copy a project's tomogram (full resolution) into an MRC with its voxel spacing; return it.

    Reads only; streams blocks of one chunk of z x one chunk of y x all x."""
    source = project.source(run, voxel_spacing, tomo_type)
    array, scale = _level0(source)
    if scale is not None and not np.allclose(scale[-3:], voxel_spacing, rtol=1e-3):
        log.warning(
            "%s: its scale %s differs from its folder's voxel spacing %g A; using the folder's, as copick does",
            source,
            scale,
            voxel_spacing,
        )
    label = f"cryogen: copick {run} {tomo_type} {voxel_spacing:g}A"
    shape = tuple(int(n) for n in array.shape)
    blocks = chunk_blocks(shape, tuple(int(c) for c in array.chunks))
    with (
        MrcWriter(out, shape, float(voxel_spacing), labels=[label]) as writer,  # type: ignore[arg-type]
        tqdm(total=len(blocks), desc=f"import {run}", unit="block", disable=not progress, mininterval=2) as bar,
    ):
        for z0, z1, y0, y1 in blocks:
            try:
                block = np.asarray(array[z0:z1, y0:y1, :], dtype=np.float32)
            except Exception as exc:
                raise CryogenError(f"cannot read z {z0}..{z1 - 1} ({type(exc).__name__}); damaged?", source) from None
            check_finite_block(block, source, z0)
            writer.write_block(z0, y0, block)
            bar.update()
    return Path(out)


# ----------------------------------------------------------------------------- writing


def level_shapes(shape: tuple[int, int, int], levels: int = LEVELS) -> list[tuple[int, int, int]]:
    """Shapes of `levels` levels, each half the previous (rounded up), as copick's local mean gives."""
    shapes = [shape]
    for _ in range(1, levels):
        shapes.append(tuple(math.ceil(n / 2) for n in shapes[-1]))  # type: ignore[arg-type]
    return shapes


def copick_multiscales(voxel_spacing: float, levels: int) -> list[dict[str, Any]]:
    """The `multiscales` attribute copick writes (through ome-zarr-py) for a tomogram."""
    return [
        {
            "version": NGFF_VERSION,
            "name": "/",
            "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in AXES],
            "datasets": [
                {
                    "path": str(level),
                    "coordinateTransformations": [{"scale": [float(voxel_spacing) * 2**level] * 3, "type": "scale"}],
                }
                for level in range(levels)
            ],
            "metadata": {},
        }
    ]


def _write_pyramid(
    target: Path,
    reader: MrcReader,
    voxel_spacing: float,
    levels: int,
    chunk: int,
    provenance: dict[str, Any],
    progress: bool,
    allow_constant: bool,
) -> None:
    import zarr

    shapes = level_shapes(reader.shape, levels)
    group = zarr.open_group(str(target), mode="w", zarr_format=2)
    arrays = create_levels(group, shapes, chunk)
    constant = None if allow_constant else "volume is constant: nothing to export"
    stats = fill_levels(reader, arrays, shapes, f"export {provenance['type']}", progress, constant)
    group.attrs.update(
        {
            "multiscales": copick_multiscales(voxel_spacing, levels),
            "omero": display_window(provenance["type"], stats),
            "cryogen": provenance,
        }
    )


def written_by_cryogen(image: Path) -> bool:
    """Whether an OME-Zarr image carries CryoGEN's provenance: the only kind an export replaces."""
    try:
        return "cryogen" in json.loads((image / ".zattrs").read_text())
    except (OSError, ValueError):
        return False


def _mark(folder: Path) -> None:
    """The `.meta` file copick puts in a run or voxel-spacing folder it creates in the overlay."""
    meta = folder / ".meta"
    if not meta.exists():
        meta.write_text("meta")


def export_tomogram(
    project: CopickProject,
    run: str,
    voxel_spacing: float,
    restored: str | Path,
    tomo_type: str = "cryogen",
    std: str | Path | None = None,
    std_type: str = "cryogen-std",
    source_type: str | None = None,
    overwrite: bool = False,
    levels: int = LEVELS,
    chunk: int = CHUNK,
    progress: bool = True,
) -> list[Path]:
    """Write a restored MRC (and its std map) into a run of the project as new tomogram types at
    `voxel_spacing`, in the overlay root; return the folders written.

    With `source_type`, the volume must be on that tomogram's grid (same shape), so that picks
    made on either line up. The MRC's voxel size, when its header has one, must be the spacing.
    Each image is written under a hidden temporary name and renamed when complete; an existing
    image of the same type is replaced only with `overwrite`, and never one in the static root."""
    if levels < 1:
        raise CryogenError(f"levels must be at least 1, not {levels}")
    if chunk < 8:
        raise CryogenError(f"chunk size {chunk} is too small (at least 8)")
    if run not in project.runs():
        raise CryogenError(f"copick project has no run {run!r}", project.config)
    targets = [(Path(restored), check_type_name(tomo_type), "restored")]
    if std is not None:
        targets.append((Path(std), check_type_name(std_type, "std type"), "std"))
    if std is not None and std_type == tomo_type:
        raise CryogenError(f"the std map needs a type of its own, not {tomo_type!r} again")
    source_shape = None
    if source_type is not None:
        source_shape = level0_shape(project.source(run, voxel_spacing, source_type))
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(MrcReader(src)) for src, _, _ in targets]
        for reader, (src, kind, _) in zip(readers, targets, strict=True):  # kind: the tomogram type
            if kind == source_type:
                raise CryogenError(f"type {kind!r} is the source tomogram's: it would be replaced", project.config)
            if source_shape is not None and reader.shape != source_shape:
                raise CryogenError(
                    f"shape {reader.shape} differs from the {source_type!r} tomogram's {source_shape} at "
                    f"{voxel_spacing:g} A in run {run}: picks would not line up",
                    src,
                )
            vs = reader.info.voxel_size
            if min(vs) > 0 and not np.allclose(vs, voxel_spacing, rtol=1e-3):
                raise CryogenError(
                    f"voxel size {vs[2]:g} A in the header differs from the voxel spacing {voxel_spacing:g} A", src
                )
            static = project.static_root / project.output_path(run, voxel_spacing, kind).relative_to(
                project.overlay_root
            )
            dest = project.output_path(run, voxel_spacing, kind)
            if project.separate_overlay and static.exists():
                raise CryogenError(f"the read-only static root already has a {kind!r} tomogram", static)
            if dest.exists() and not overwrite:
                raise CryogenError(f"a {kind!r} tomogram is already there (overwrite to replace it)", dest)
            if dest.exists() and not written_by_cryogen(dest):
                raise CryogenError(f"the {kind!r} tomogram there was not written by CryoGEN: not replacing it", dest)
        if project.separate_overlay:
            run_dir = project.overlay_root / "ExperimentRuns" / run
            spacing_dir = run_dir / spacing_folder(voxel_spacing)
            spacing_dir.mkdir(parents=True, exist_ok=True)
            _mark(run_dir)
            _mark(spacing_dir)
        written = []
        for reader, (src, kind, what) in zip(readers, targets, strict=True):
            dest = project.output_path(run, voxel_spacing, kind)
            tmp = stack.enter_context(atomic_output(dest))
            provenance = {
                "type": kind,
                "kind": what,
                "source": str(src),
                "run": run,
                "source_type": source_type,
                "labels": [lab for lab in reader.info.labels if lab],
            }
            _write_pyramid(
                tmp, reader, voxel_spacing, levels, chunk, provenance, progress, allow_constant=what == "std"
            )
            written.append(dest)
    return written
