"""Cluster requests (`mem_mb`, `runtime`) of the workflow's per-tomogram rules, from the size of
the input tomogram (its MRC header, read in microseconds) and the job's attempt.

Why: a fixed request either wastes a cluster (a 1 Mvoxel tomogram asking for 16 GB) or kills
the big tomograms of a dataset. The stages stream, so memory is a constant per rule plus, where a
stage holds a slab of whole planes, a term in the slab's voxels (the tomogram's width times the
slab's depth), and, for reconstruct, a term per Dask worker process; time is a start-up constant
plus a term in voxels. The figures are measured (README, "Running on a cluster"; `COSTS` below),
then padded (`MEMORY_MARGIN`, `TIME_MARGIN`); a retried job (Snakemake's `attempt`, with the
profile's `retries`) asks for `attempt` times as much, so a job killed for memory or time is
resubmitted with more. A value in the profiles' `set-resources` or on the command line replaces
these (Snakemake's precedence), and a tomogram whose header cannot be read yet (the demo's,
before `simulate` made it) gets the figures of a 1000 x 1000 x 300 tomogram until it exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import CryogenError
from ..io.mrc import MrcReader

#: the tomogram assumed while the input's header cannot be read (z, y, x)
TYPICAL_SHAPE = (300, 1000, 1000)
#: requests are the measured figure times these (cluster nodes and shared file systems are
#: slower and noisier than the measuring machine)
MEMORY_MARGIN = 1.5
TIME_MARGIN = 3.0
MIN_RUNTIME = 10  # minutes: queueing granularity; below this a request buys nothing
#: reconstruct's Langevin steps per posterior sample (`cryogen.method.solver.SolveConfig.sample_steps`;
#: not imported: that module imports torch, and Snakemake imports this one)
SAMPLE_STEPS = 4
#: cost of one MAP or Langevin step per tile relative to the network's warm start g(y)
#: (README, Speed: 10 ms against 35 ms per 64^3 tile)
STEP_COST = 0.3


@dataclass(frozen=True)
class Cost:
    """A rule's measured cost. Memory (MB): `base_mb` + per Dask worker, `worker_mb` and
    `batch_mb` per 64^3 tile of a batch (the network's activations grow with the tile's cube) +
    `slab_bytes` per voxel of the slab of `slab_planes` whole z-planes it holds at once +
    `truth_bytes` per voxel of the tomogram when the sheet gives a ground truth (report's metrics
    compare whole volumes). Time (s): `start_s` + `s_per_mvoxel` per million voxels."""

    base_mb: float
    start_s: float
    s_per_mvoxel: float
    worker_mb: float = 0.0
    batch_mb: float = 0.0
    slab_bytes: float = 0.0
    slab_planes: str = ""  # "tile" (config chunk.tile), "export" (config export.chunk) or "" (none)
    truth_bytes: float = 0.0


#: fitted to peak RSS (Snakemake benchmark files, /usr/bin/time) and wall time on 4, 34 and
#: 134 Mvoxel tomograms on 2 shared CPU cores (the README's "Running on a cluster" has the table)
COSTS: dict[str, Cost] = {
    "chunk": Cost(base_mb=320, start_s=6, s_per_mvoxel=0.25, slab_bytes=2, slab_planes="tile"),
    "reconstruct": Cost(base_mb=500, start_s=25, s_per_mvoxel=2.0, worker_mb=300, batch_mb=110),
    "stitch": Cost(base_mb=120, start_s=2, s_per_mvoxel=0.2),
    "report": Cost(base_mb=420, start_s=5, s_per_mvoxel=0.5, truth_bytes=40),
    "export": Cost(base_mb=300, start_s=3, s_per_mvoxel=0.35, slab_bytes=8, slab_planes="export"),
}


def tomogram_shape(path: str | Path) -> tuple[int, int, int] | None:
    """(z, y, x) from the MRC header of `path`; None while the file does not exist or cannot be
    read (chunk then reports the problem with its own one-line error)."""
    try:
        with MrcReader(path) as reader:
            return reader.shape
    except (CryogenError, OSError):
        return None


def _slab_voxels(cost: Cost, shape: tuple[int, int, int], tile: int, export_chunk: int) -> int:
    planes = {"tile": tile, "export": export_chunk, "": 0}[cost.slab_planes]
    return min(planes, shape[0]) * shape[1] * shape[2]


def mem_mb(
    rule: str,
    shape: tuple[int, int, int] | None,
    attempt: int = 1,
    workers: int = 1,
    tile: int = 64,
    export_chunk: int = 256,
    truth: bool = False,
    batch: int = 4,
) -> int:
    """Memory to request for `rule` on a tomogram of `shape` (None: `TYPICAL_SHAPE`), in MB,
    rounded up to 100 MB; `workers` counts reconstruct's Dask worker processes (its threads),
    `truth` says whether the sheet gives the tomogram a ground truth, `batch` is reconstruct's
    tiles per batch (config reconstruct.batch) and `tile` the tile edge (config chunk.tile)."""
    cost = COSTS[rule]
    shape = shape or TYPICAL_SHAPE
    slab_mb = cost.slab_bytes * _slab_voxels(cost, shape, tile, export_chunk) / 1e6
    truth_mb = cost.truth_bytes * math.prod(shape) / 1e6 if truth else 0.0
    worker_mb = cost.worker_mb + cost.batch_mb * batch * (tile / 64) ** 3
    need = (cost.base_mb + worker_mb * max(1, workers) + slab_mb + truth_mb) * MEMORY_MARGIN
    return math.ceil(need / 100) * 100 * max(1, attempt)


def runtime(
    rule: str, shape: tuple[int, int, int] | None, attempt: int = 1, steps_per_tile: int = 0, passes: int = 1
) -> int:
    """Minutes to request for `rule` on a tomogram of `shape` (None: `TYPICAL_SHAPE`).
    `steps_per_tile` and `passes`: reconstruct's gradient steps and network passes per tile
    (`solve_cost`)."""
    cost = COSTS[rule]
    mvoxels = math.prod(shape or TYPICAL_SHAPE) / 1e6
    seconds = cost.start_s + cost.s_per_mvoxel * mvoxels * (passes + STEP_COST * steps_per_tile)
    return max(MIN_RUNTIME, math.ceil(seconds * TIME_MARGIN / 60)) * max(1, attempt)


def solve_cost(map_steps: int, samples: int, flips: int, energy: str, coarse_cutoff: float = 0.0) -> tuple[int, int]:
    """reconstruct's work per tile as (gradient steps, network passes): the warm start g(y) is
    `flips` passes, and its coarse fill (`coarse_cutoff` > 0) `flips` passes on an eighth of the
    voxels (rounded up to whole passes); a MAP step under the denoiser's energy is `flips` more
    passes, under D's (`energy` "discriminator") one gradient step; each posterior sample
    `SAMPLE_STEPS` steps."""
    denoiser = energy == "denoiser"
    steps = (0 if denoiser else map_steps) + samples * SAMPLE_STEPS
    coarse = math.ceil(flips / 8) if coarse_cutoff > 0 else 0
    return steps, flips * (1 + (map_steps if denoiser else 0)) + coarse
