"""One tomogram end to end (chunk, train, reconstruct, stitch) for users without Snakemake, with
a wall-time budget shared between the stages."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..deconvolve import Deconvolution
from ..io.store import TILE_ARRAY, open_store, read_tiles, zarr_array
from ..method.config import TrainConfig
from ..method.devices import pick_device
from ..method.loop import train
from ..method.patches import normalised_noise
from ..method.posterior import langevin
from ..method.solver import SolveConfig, coarse_fill, map_denoiser, map_estimate, warm_start
from ..model.imaging import Wedge
from ..model.nets import build, place
from ..tiling import chunk, stitch
from .reconstruct import reconstruct

log = logging.getLogger(__name__)


def estimate_reconstruct_seconds(
    store: Path, cfg: TrainConfig, solve: SolveConfig, device: str, batch: int = 4
) -> float:
    """Time one batch of g + MAP steps (+ samples) with untrained networks of the same size and
    scale to the whole store: the cost of reconstruction does not depend on the weights."""
    dev = pick_device(device)
    group, meta = open_store(store)
    n = min(batch, meta.n_tiles)
    y = torch.from_numpy(read_tiles(zarr_array(group, TILE_ARRAY, store), 0, n, store))
    y = ((y - meta.stats["mean"]) / meta.stats["std"]).to(dev)
    g, d = build(cfg.net)
    g, d = place(g, dev).eval().requires_grad_(False), place(d, dev).eval().requires_grad_(False)
    noise = normalised_noise(meta, y[:1].cpu().numpy())
    t0 = time.perf_counter()
    with torch.no_grad():
        x0 = warm_start(g, y, meta.wedge, solve.flips)
        x0 = coarse_fill(g, y, x0, meta.wedge, solve.coarse_cutoff, solve.flips)
    # as TileRestorer's; g stands in for the coarse network (the same size)
    x, _ = map_estimate(x0, y, d, meta.wedge, noise, solve, g=map_denoiser(g, g, meta.wedge, solve))
    per_batch = time.perf_counter() - t0
    if solve.samples:  # one Langevin step timed (after one to warm D up), times the samples' steps
        langevin(x, y, d, meta.wedge, noise, solve.prior_weight, 1, solve.step, None)
        t0 = time.perf_counter()
        langevin(x, y, d, meta.wedge, noise, solve.prior_weight, 1, solve.step, None)
        per_batch += (time.perf_counter() - t0) * solve.samples * solve.sample_steps
    return per_batch * int(np.ceil(meta.n_tiles / n))


def _stages(
    input_path,
    output: Path,
    work: Path,
    wedge: Wedge,
    std_path,
    time_budget,
    steps,
    solve: SolveConfig,
    device: str,
    seed: int,
    tile: int,
    overlap: int,
    voxel_size,
    train_config: TrainConfig | None,
    start: float,
    halves: tuple[str | Path, str | Path] | None,
    snapshot_every: int = 0,
    deconvolution: Deconvolution | None = None,
    beads: bool = True,
) -> dict[str, float]:
    times: dict[str, float] = {}
    if std_path is not None and solve.samples == 0:
        solve = replace(solve, samples=8)
    tiles = work / "tiles.zarr"
    t = time.monotonic()
    chunk(
        input_path,
        tiles,
        tile=tile,
        overlap=overlap,
        wedge=wedge,
        voxel_size=voxel_size,
        halves=halves,
        deconvolution=deconvolution,
        beads=beads,
    )
    times["chunk"] = time.monotonic() - t
    cfg = train_config or TrainConfig(seed=seed)
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    if time_budget is not None:
        rest = estimate_reconstruct_seconds(tiles, cfg, solve, device) * 1.15 + times["chunk"] + 5.0
        budget = time_budget - (time.monotonic() - start) - rest
        if budget < 30:
            log.warning("the time budget leaves %.0f s for training; the prior will be weak", max(budget, 0))
        cfg = replace(cfg, time_budget=max(budget, 10.0), steps=steps if steps is not None else 10**9)
    t = time.monotonic()
    prior = work / "prior.pt"
    train([tiles], prior, cfg, device=device, snapshot_every=snapshot_every)
    times["train"] = time.monotonic() - t
    t = time.monotonic()
    recon = work / "recon.zarr"
    reconstruct(tiles, prior, recon, solve, device=device, seed=seed)
    times["reconstruct"] = time.monotonic() - t
    t = time.monotonic()
    stitch(recon, output)
    if std_path is not None:
        stitch(recon, std_path, array_name="std")
    times["stitch"] = time.monotonic() - t
    for name in ("prior_curves.png", "prior_curves.csv"):
        if (work / name).exists():
            shutil.copy(work / name, output.with_name(output.stem + "_" + name))
    return times


def run_one(
    input_path: str | Path,
    output: str | Path,
    wedge: Wedge,
    std_path: str | Path | None = None,
    time_budget: float | None = None,
    steps: int | None = None,
    solve: SolveConfig = SolveConfig(),
    device: str = "auto",
    seed: int = 0,
    tile: int = 64,
    overlap: int = 16,
    voxel_size: float | None = None,
    train_config: TrainConfig | None = None,
    keep_work: Path | None = None,
    halves: tuple[str | Path, str | Path] | None = None,
    snapshot_every: int = 0,
    deconvolution: Deconvolution | None = None,
    beads: bool = True,
) -> dict[str, float]:
    """Restore one tomogram; returns the seconds spent per stage. With `halves` (even, odd half
    tomograms), the noise model is measured from their difference (see `tiling.chunk`). With
    `snapshot_every` (and `keep_work`), training keeps its prior every that many steps in the
    work folder (`method.checkpoints.snapshot_dir`), for learning curves. With `deconvolution`,
    chunk CTF-deconvolves the tomogram (and halves) first (`cryogen.deconvolve`). With `beads`,
    gold fiducials' streaks are subtracted before training and the beads drawn back round
    (`cryogen.beads`)."""
    start = time.monotonic()
    output = Path(output)
    work = keep_work or output.with_name(f".{output.name}.work")
    work.mkdir(parents=True, exist_ok=True)
    try:
        times = _stages(
            input_path,
            output,
            work,
            wedge,
            std_path,
            time_budget,
            steps,
            solve,
            device,
            seed,
            tile,
            overlap,
            voxel_size,
            train_config,
            start,
            halves,
            snapshot_every,
            deconvolution,
            beads,
        )
    except BaseException:
        if keep_work is None:  # nothing half-done is left beside the output
            shutil.rmtree(work, ignore_errors=True)
        raise
    if keep_work is None:
        shutil.rmtree(work, ignore_errors=True)
    times["total"] = time.monotonic() - start
    return times
