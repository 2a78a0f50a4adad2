"""`cryogen benchmark --real`: the default method on a real tomogram, judged without ground truth.

The input (by default the 44 x 136 x 84 microtubule crop in ../shared/real, an 8-bit TIFF at
10.52 A/voxel) is converted to MRC and restored the way a user would (`cryogen run` with
`--tilt-range auto` and a time budget: `cryogen.restore.pipeline.run_one`). Input and result
are then measured with the no-truth measures of `cryogen.qc.isotropy` (data consistency, the
microtubule's top/bottom-to-side wall contrast, the missing wedge's fill) and D's separation is
read off the training curves. Figures (PNG, in the work folder): central slices and (kz, kx)
power spectra before/after (`cryogen.qc.figures`), and the tube's cross-section before/after.
It returns the rows (COLUMNS); the CLI prints them.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CryogenError
from ..io.files import atomic_output
from ..io.mrc import read_mrc, write_mrc
from ..method.config import TrainConfig
from ..model.imaging import Wedge
from ..qc.figures import report_figures
from ..qc.geometry import wedge_from_spectrum
from ..qc.isotropy import TubeProfile, data_consistency, filament_isotropy, wall_contrast, wedge_fill
from ..qc.plotting import pyplot
from ..restore.pipeline import run_one

COLUMNS = [
    "volume",
    "tube_ratio",
    "tube_top_bottom",
    "tube_side",
    "wedge_fill",
    "consistency",
    "consistency_fsc_0.5_angstrom",
    "d_separation",
    "train_steps",
    "wall_s",
]
REAL_CROP = Path("../shared/real/14pf_MT.tif")
SEPARATION_AFTER = 300  # D's early steps, while it learns, do not count


@dataclass(frozen=True)
class RealOptions:
    """What the real-data benchmark runs; the defaults fit the microtubule crop and `cryogen run`."""

    input: Path = REAL_CROP  # TIFF or MRC, (z, y, x), beam along z
    workdir: Path = Path("bench_real")  # the MRC, the result, its training curves and the figures
    voxel_size: float | None = 10.52  # angstrom; None: the MRC header's
    time_budget: float = 10.0  # minutes for the whole run, as `cryogen run --time-budget`
    steps: int | None = None  # fixed training steps instead (still within the budget)
    tilt_range: tuple[float, float] | None = None  # None: read off the missing wedge (--tilt-range auto)
    tilt_axis: str = "y"
    tile: int = 64  # run_one's defaults: an axis shorter than a tile is mirror-padded into one tile
    overlap: int = 16
    device: str = "auto"
    seed: int = 0
    tube_radius_nm: float = 11.0  # a microtubule's wall centre line (outer diameter 25 nm)
    tube_wall_nm: float = 4.0
    filament_angle: float | None = None  # degrees from y towards x; None: estimated on the input


def d_separation(curves_csv: Path, after: int = SEPARATION_AFTER) -> tuple[float | None, int]:
    """The fraction of training steps after step `after` at which D classified every real and
    every simulated patch of its batch correctly (None if training stopped before), and the
    number of steps trained."""
    with open(curves_csv, newline="") as f:
        rows = [(int(float(r["step"])), float(r["d_acc_real"]), float(r["d_acc_fake"])) for r in csv.DictReader(f)]
    late = [(real, fake) for step, real, fake in rows if step > after]
    steps = max((r[0] for r in rows), default=0)
    if not late:
        return None, steps
    return sum(real == 1.0 and fake == 1.0 for real, fake in late) / len(late), steps


def read_volume(path: Path) -> tuple[np.ndarray, float | None]:
    """A (z, y, x) float32 volume from TIFF or MRC, with the MRC's voxel size (None for TIFF)."""
    if not path.exists():
        raise CryogenError("no such file", path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        data = tifffile.imread(path)
        if data.ndim != 3:
            raise CryogenError(f"expected a 3-D (z, y, x) stack, not shape {data.shape}", path)
        return np.ascontiguousarray(data, dtype=np.float32), None
    data, info = read_mrc(path)
    return np.ascontiguousarray(data, dtype=np.float32), info.isotropic_voxel_size or None


def _row(name: str, tube: TubeProfile, fill: float, wall_s: float | None = None) -> dict:
    return {
        "volume": name,
        "tube_ratio": tube.ratio,
        "tube_top_bottom": tube.top_bottom,
        "tube_side": tube.side,
        "wedge_fill": fill,
        "consistency": None,
        "consistency_fsc_0.5_angstrom": None,
        "d_separation": None,
        "train_steps": None,
        "wall_s": wall_s,
    }


def run_real_benchmark(options: RealOptions) -> list[dict]:
    """Restore `options.input` with the default method and measure it against the input: the rows
    (COLUMNS) of the input and of the result. Figures and the MRCs are left in `options.workdir`."""
    work = Path(options.workdir)
    work.mkdir(parents=True, exist_ok=True)
    volume, header_voxel = read_volume(Path(options.input))
    voxel = options.voxel_size or header_voxel
    if not voxel:
        raise CryogenError("the voxel size is unknown: give it", options.input)
    observed = work / "input.mrc"
    write_mrc(observed, volume, voxel)
    if options.tilt_range is None:
        wedge = wedge_from_spectrum(observed, options.tilt_axis)
    else:
        wedge = Wedge(*options.tilt_range, options.tilt_axis)
    restored_path = work / "restored.mrc"
    t0 = time.monotonic()
    run_one(
        observed,
        restored_path,
        wedge,
        time_budget=options.time_budget * 60.0,
        steps=options.steps,
        device=options.device,
        seed=options.seed,
        tile=options.tile,
        overlap=options.overlap,
        train_config=TrainConfig(seed=options.seed),
    )
    wall = time.monotonic() - t0
    restored, _ = read_mrc(restored_path)

    radius = options.tube_radius_nm * 10.0 / voxel
    wall_vox = options.tube_wall_nm * 10.0 / voxel
    tube_in = filament_isotropy(volume, radius, options.filament_angle, wall_vox)
    # the result's tube: the same direction and the same sign as the input's
    tube_out = filament_isotropy(restored, radius, tube_in.axis_angle, wall_vox, tube_in.polarity)
    rows = [_row("input", tube_in, wedge_fill(volume, wedge)), _row("restored", tube_out, wedge_fill(restored, wedge))]
    rows[0]["consistency"] = 1.0
    consistency = data_consistency(restored, volume, wedge, voxel)
    rows[1]["consistency"] = consistency.mean
    rows[1]["consistency_fsc_0.5_angstrom"] = consistency.fsc_05_angstrom
    curves = restored_path.with_name(restored_path.stem + "_prior_curves.csv")
    if curves.exists():
        rows[1]["d_separation"], rows[1]["train_steps"] = d_separation(curves)
    rows[1]["wall_s"] = wall

    name = f"{Path(options.input).name}, tilt {wedge.tilt_min:g}..{wedge.tilt_max:g} about {wedge.tilt_axis}"
    report_figures(
        observed,
        restored_path,
        work / "real_slices.png",
        work / "real_spectra.png",
        (wedge.tilt_min, wedge.tilt_max),
        wedge.tilt_axis,
        name=name,
    )
    plot_tube_sections([("input", tube_in), ("restored", tube_out)], wall_vox, work / "real_tube.png")
    return rows


def plot_tube_sections(tubes: list[tuple[str, TubeProfile]], wall: float, path: Path) -> None:
    """The tubes' cross-sections (z up) with the wall's centre line, and their wall contrast
    against the angle (90 and 270: top and bottom, normal along the beam)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tubes) + 1, figsize=(4.2 * (len(tubes) + 1), 3.6))
    for ax, (label, tube) in zip(axes, tubes, strict=False):
        ax.imshow(tube.section, cmap="gray", origin="lower", interpolation="nearest")
        ax.add_patch(plt.Circle(tube.centre[::-1], tube.radius, fill=False, color="yellow", lw=0.8, ls="--"))
        ax.set_title(f"{label}: top/bottom : side = {tube.ratio:.2f}", fontsize=9)
        ax.set_xlabel("across the filament (voxels)")
        ax.set_ylabel("z (voxels)")
        angles, contrast = wall_contrast(tube.section, tube.centre, tube.radius, wall, tube.polarity)
        axes[-1].plot(angles, contrast / tube.side, label=label, lw=0.9)
    for a in (90, 270):
        axes[-1].axvspan(a - 30, a + 30, color="0.9")
    axes[-1].set_xlabel("angle around the tube (degrees; 90, 270: top, bottom)")
    axes[-1].set_ylabel("wall contrast / its mean at the sides")
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"filament cross-section, averaged along its axis ({tubes[0][1].axis_angle:.1f} deg from y)")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
