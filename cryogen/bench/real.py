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
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..deconvolve import Deconvolution, deconvolve
from ..errors import CryogenError
from ..io.files import atomic_output
from ..io.mrc import read_mrc, write_mrc
from ..io.tiff import is_tiff
from ..method.checkpoints import load_checkpoint, snapshot_dir
from ..method.config import TrainConfig
from ..method.solver import SolveConfig
from ..model.imaging import Wedge
from ..qc.cues import cue_verdict, d_cues
from ..qc.figures import report_figures
from ..qc.geometry import wedge_from_spectrum
from ..qc.isotropy import TubeProfile, data_consistency, filament_isotropy, wall_contrast, wedge_fill
from ..qc.plotting import pyplot
from ..restore.pipeline import run_one
from ..restore.reconstruct import reconstruct
from ..tiling import stitch

CUES_FILE = "d_cues.json"  # what D keys on (`cryogen.qc.cues`), in the work folder
COLUMNS = [
    "volume",
    "tube_ratio",
    "tube_top_bottom",
    "tube_side",
    "wedge_fill",
    "consistency",
    "consistency_min",
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
    curve_every: int = 0  # > 0: also measure the result every that many training steps (learning curve)
    deconvolution: Deconvolution | None = None  # CTF deconvolution first (`cryogen run --defocus`)
    # keep WORKDIR/run (the tiles and the prior) to restore the tomogram again with other settings
    # (`cryogen reconstruct`, `stitch`) without training again; by default it is removed
    keep_run: bool = False

    def tube_voxels(self, voxel: float) -> tuple[float, float]:
        """The tube's radius and wall thickness in voxels of `voxel` angstrom."""
        return self.tube_radius_nm * 10.0 / voxel, self.tube_wall_nm * 10.0 / voxel


CURVE_COLUMNS = ["step", "time_s", "tube_ratio", "wedge_fill", "consistency"]


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
    if is_tiff(path):
        import tifffile

        data = tifffile.imread(path)
        if data.ndim != 3:
            raise CryogenError(f"expected a 3-D (z, y, x) stack, not shape {data.shape}", path)
        return np.ascontiguousarray(data, dtype=np.float32), None
    data, info = read_mrc(path)
    return np.ascontiguousarray(data, dtype=np.float32), info.isotropic_voxel_size or None


def _row(name: str, tube: TubeProfile, fill: float | None, wall_s: float | None = None) -> dict:
    return {
        "volume": name,
        "tube_ratio": tube.ratio,
        "tube_top_bottom": tube.top_bottom,
        "tube_side": tube.side,
        "wedge_fill": fill,
        "consistency": None,
        "consistency_min": None,
        "consistency_fsc_0.5_angstrom": None,
        "d_separation": None,
        "train_steps": None,
        "wall_s": wall_s,
    }


def write_cues(shares: dict[str, float], path: Path) -> None:
    """D's cues (`cryogen.qc.cues`) beside the figures, for the CLI to print and for the record."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps({"judged_real": shares, "verdict": cue_verdict(shares)}, indent=1))


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
    if Path(options.input).resolve() != observed.resolve() or not math.isclose(voxel, header_voxel or 0, rel_tol=1e-5):
        write_mrc(observed, volume, voxel)  # the run's input, with the voxel size it is measured at
    radius, wall_vox = options.tube_voxels(voxel)
    if options.tilt_range is None:
        wedge = wedge_from_spectrum(observed, options.tilt_axis)
    else:
        wedge = Wedge(*options.tilt_range, options.tilt_axis)
    raw, raw_tube, run_input = volume, None, observed
    if options.deconvolution is not None:
        # the run deconvolves the raw input itself (as `cryogen run --defocus`: its noise model is
        # the raw one carried through the filter); the result is measured against the deconvolved input
        raw_tube = filament_isotropy(raw, radius, options.filament_angle, wall_vox)
        deconvolve(observed, work / "input_deconvolved.mrc", options.deconvolution, voxel, progress=False)
        observed = work / "input_deconvolved.mrc"
        volume, _ = read_mrc(observed)
    restored_path = work / "restored.mrc"
    run_work = work / "run"
    shutil.rmtree(run_work, ignore_errors=True)
    t0 = time.monotonic()
    run_one(
        run_input,
        restored_path,
        wedge,
        time_budget=options.time_budget * 60.0,
        steps=options.steps,
        device=options.device,
        seed=options.seed,
        tile=options.tile,
        overlap=options.overlap,
        train_config=TrainConfig(seed=options.seed),
        keep_work=run_work,
        snapshot_every=options.curve_every,
        deconvolution=options.deconvolution,
    )
    wall = time.monotonic() - t0
    restored, _ = read_mrc(restored_path)

    name = f"{Path(options.input).name}, tilt {wedge.tilt_min:g}..{wedge.tilt_max:g} about {wedge.tilt_axis}"
    # the figures' truth-free measures, on the whole crop: the table's, measured once
    measures = report_figures(
        observed,
        restored_path,
        work / "real_slices.png",
        work / "real_spectra.png",
        (wedge.tilt_min, wedge.tilt_max),
        wedge.tilt_axis,
        name=name,
        crop=max(volume.shape),
    )["measures"]
    tube_in = filament_isotropy(volume, radius, raw_tube.axis_angle if raw_tube else options.filament_angle, wall_vox)
    # the result's tube: the same direction and the same sign as the input's
    tube_out = filament_isotropy(restored, radius, tube_in.axis_angle, wall_vox, tube_in.polarity)
    fill = measures["wedge_fill"]
    rows = [_row("input", tube_in, fill["before"]), _row("restored", tube_out, fill["after"])]
    rows[0]["consistency"] = 1.0
    if raw_tube is not None:
        rows[0]["volume"] = "input, deconvolved"
        rows.insert(0, _row("input", raw_tube, wedge_fill(raw, wedge)))
    rows[-1]["consistency"] = measures["consistency"]
    rows[-1]["consistency_min"] = measures["consistency_min"]
    rows[-1]["consistency_fsc_0.5_angstrom"] = measures["consistency_fsc_0.5_angstrom"]
    curves = restored_path.with_name(restored_path.stem + "_prior_curves.csv")
    if curves.exists():
        rows[-1]["d_separation"], rows[-1]["train_steps"] = d_separation(curves)
    shares = d_cues(run_work / "prior.pt", run_work / "tiles.zarr", seed=options.seed)
    write_cues(shares, work / CUES_FILE)
    rows[-1]["wall_s"] = wall

    plot_tube_sections([("input", tube_in), ("restored", tube_out)], wall_vox, work / "real_tube.png")
    if options.curve_every:
        measure = _Measure(volume, wedge, voxel, radius, wall_vox, tube_in)
        learning_curve(run_work, measure, options, work / "learning_curve.csv", work / "learning_curve.png")
    if not options.keep_run:
        shutil.rmtree(run_work, ignore_errors=True)
    return rows


@dataclass(frozen=True)
class _Measure:
    """What every learning-curve point is measured against: the input and its tube."""

    volume: np.ndarray
    wedge: Wedge
    voxel: float
    radius: float
    wall: float
    tube: TubeProfile

    def __call__(self, restored: np.ndarray) -> dict:
        tube = filament_isotropy(restored, self.radius, self.tube.axis_angle, self.wall, self.tube.polarity)
        consistency = data_consistency(restored, self.volume, self.wedge, self.voxel).mean
        return {"tube_ratio": tube.ratio, "wedge_fill": wedge_fill(restored, self.wedge), "consistency": consistency}


def learning_curve(
    run_work: Path, measure: _Measure, options: RealOptions, csv_path: Path, png_path: Path
) -> list[dict]:
    """Restore the tomogram with every prior training kept (`run_one(snapshot_every=...)`) and
    measure each result: how the wedge fills, and whether it drifts, as training goes on."""
    snapshots = sorted(snapshot_dir(run_work / "prior.pt").glob("step*.pt"))
    times = {
        int(h["step"]): h["time_s"] for h in load_checkpoint(run_work / "prior.pt", torch.device("cpu"))["history"]
    }
    rows = []
    for snap in tqdm(snapshots, desc="learning curve", unit="prior"):
        step = int(snap.stem[4:])
        recon, out = run_work / f"curve_{step}.zarr", run_work / f"curve_{step}.mrc"
        reconstruct(
            run_work / "tiles.zarr", snap, recon, SolveConfig(), options.device, seed=options.seed, progress=False
        )
        stitch(recon, out, progress=False)
        restored, _ = read_mrc(out)
        rows.append({"step": step, "time_s": times.get(step), **measure(np.asarray(restored, dtype=np.float32))})
        shutil.rmtree(recon, ignore_errors=True)
        out.unlink()
    with atomic_output(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot_learning_curve(rows, measure, png_path)
    return rows


def plot_learning_curve(rows: list[dict], measure: _Measure, path: Path) -> None:
    """Tube ratio, wedge fill and data consistency against the training step, the input's as lines."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    steps = [r["step"] for r in rows]
    start = {
        "tube_ratio": measure.tube.ratio,
        "wedge_fill": wedge_fill(measure.volume, measure.wedge),
        "consistency": 1,
    }
    for ax, key in zip(axes, ("tube_ratio", "wedge_fill", "consistency"), strict=True):
        ax.plot(steps, [r[key] for r in rows], marker="o", ms=3, lw=1)
        ax.axhline(start[key], color="0.5", ls="--", lw=0.8, label="input")
        ax.set_xlabel("training step")
        ax.set_title(key.replace("_", " "), fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("the result against training: restored with the prior as it stood at each step")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


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
