"""`cryogen benchmark --tube`: the real-data benchmark on the crop's simulated twin, where the truth
is known.

A tube of the real crop's geometry is made with the chosen effects of real acquisition
(`cryogen.sim.tube`), restored and judged exactly as `benchmark --real` judges the crop (tube
ratio, wedge fill, data consistency, D's separation, figures), and then also against its truth
(cc, measured recovery, wedge recovery without the z profile). So a change that moves the real
crop's no-truth measures can be checked here for whether it moves the truth's, and the effect
that keeps a real wedge from filling can be switched on and off one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..deconvolve import Deconvolution
from ..io.mrc import read_mrc, write_mrc
from ..qc.isotropy import filament_isotropy, wedge_fill
from ..qc.metrics import evaluate
from ..sim.tube import TUBE_ANGLE, TUBE_VOXEL, simulate_tube, tube_effects
from .real import COLUMNS, RealOptions, run_real_benchmark

TRUTH_COLUMNS = ["cc", "measured_recovery", "wedge_recovery_no_z_profile"]
TUBE_COLUMNS = COLUMNS[:1] + TRUTH_COLUMNS + COLUMNS[1:]
#: the file run_real_benchmark leaves for each of its rows, by the row's name
_FILES = {"input": "input.mrc", "input, deconvolved": "input_deconvolved.mrc", "restored": "restored.mrc"}


@dataclass(frozen=True)
class TubeOptions:
    """What the tube benchmark runs; the restoration's settings are `benchmark --real`'s."""

    effects: tuple[str, ...] = ()  # names of cryogen.sim.tube.TUBE_EFFECTS, or "all"
    workdir: Path = Path("bench_tube")
    time_budget: float = 10.0  # minutes, as `cryogen run --time-budget`
    steps: int | None = None  # fixed training steps instead (still within the budget)
    device: str = "auto"
    seed: int = 0  # the noise's and the training's
    deconvolution: Deconvolution | None = None  # CTF deconvolution first (`cryogen run --defocus`)
    keep_run: bool = False  # keep WORKDIR/run, the tiles and the prior (`RealOptions.keep_run`)


def run_tube_benchmark(options: TubeOptions) -> list[dict]:
    """Simulate the tube, restore and measure it as `run_real_benchmark` does, and add the truth's
    row and each row's measures against the truth (TUBE_COLUMNS)."""
    effects = tube_effects(options.effects)
    work = Path(options.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sim = simulate_tube(effects, options.seed)
    observed = work / _FILES["input"]  # where run_real_benchmark keeps its input: written once
    write_mrc(observed, sim.observation, TUBE_VOXEL)
    np.save(work / "truth.npy", sim.truth)
    real = RealOptions(
        input=observed,
        workdir=work,
        voxel_size=TUBE_VOXEL,
        time_budget=options.time_budget,
        steps=options.steps,
        tilt_range=(sim.wedge.tilt_min, sim.wedge.tilt_max),
        device=options.device,
        seed=options.seed,
        filament_angle=TUBE_ANGLE,  # known here: the truth's tube is measured along the same axis
        deconvolution=options.deconvolution,
        keep_run=options.keep_run,
    )
    rows = run_real_benchmark(real)
    radius, wall = real.tube_voxels(TUBE_VOXEL)
    tube = filament_isotropy(sim.truth, radius, TUBE_ANGLE, wall)
    truth_row = {c: None for c in TUBE_COLUMNS} | {
        "volume": "truth (" + (", ".join(effects) or "tilt series alone") + ")",
        "tube_ratio": tube.ratio,
        "tube_top_bottom": tube.top_bottom,
        "tube_side": tube.side,
        "wedge_fill": wedge_fill(sim.truth, sim.wedge),
    }
    for row in rows:
        volume, _ = read_mrc(work / _FILES[row["volume"]])
        scores = evaluate(volume, sim.truth, sim.wedge, TUBE_VOXEL)
        row.update({c: float(scores[c]) for c in TRUTH_COLUMNS})
    return [truth_row, *rows]
