"""`cryogen benchmark`: quality against ground truth on simulated tomograms, with wall times.

For each phantom (seed x tilt range x SNR) it compares (a) the input, (b) the best Gaussian
low-pass of the input, its sigma chosen with the truth (the strongest classical baseline, and an
optimistic one: no real user can choose it so), (c) the network g(y) alone, at the data's
resolution and with its two-scale fill (the missing wedge's lowest frequencies from g at half
resolution), and (d) the full MAP; and, for reference, the truth with its wedge removed: what a
perfect denoiser that leaves the wedge empty would score. It returns the rows (COLUMNS); the CLI
prints them and writes the JSON.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from ..errors import CryogenError
from ..io.mrc import read_mrc, write_mrc
from ..method.config import TrainConfig
from ..method.devices import pick_device
from ..method.loop import train
from ..method.solver import SolveConfig
from ..model.imaging import Wedge, apply_wedge_np
from ..qc.calibration import calibration
from ..qc.metrics import evaluate
from ..restore.pipeline import estimate_reconstruct_seconds
from ..restore.reconstruct import reconstruct
from ..sim.simulate import Simulation, simulate
from ..sim.tilt_series import TiltScheme, simulate_tilt_series
from ..tiling import chunk, stitch

LOWPASS_SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
COLUMNS = [
    "phantom",
    "method",
    "cc",
    "fsc_0.143",
    "wedge_recovery",
    "measured_recovery",
    "cc_no_z_profile",
    "wedge_recovery_no_z_profile",
    "within_1sd",
    "within_2sd",
    "err_std_corr",
    "wall_s",
]


@dataclass(frozen=True)
class QualityOptions:
    """What the quality benchmark measures: every seed x tilt x SNR phantom; the CLI's defaults."""

    shape: tuple[int, int, int] = (96, 192, 192)
    seeds: tuple[int, ...] = (1, 2)
    tilts: tuple[float, ...] = (60.0, 45.0)  # half tilt ranges: 60 is a tilt series over -60..60 degrees
    snrs: tuple[float, ...] = (0.5, 0.25)
    # forward models: "ideal" (y = A x + n, cryogen.sim.simulate) and "tilt-series" (discrete tilts,
    # noise per projection, weighted back-projection: cryogen.sim.tilt_series), side by side
    models: tuple[str, ...] = ("ideal", "tilt-series")
    time_budget: float = 10.0  # minutes per tomogram for the method: training gets what reconstruct leaves
    steps: int | None = None  # fixed training steps instead of the time budget
    map_steps: int = 10  # the MAP rows under D's energy
    denoiser_steps: int = 1  # the MAP row under the denoiser's energy (more steps measured no better)
    prior_weight: float = SolveConfig.prior_weight
    flips: int = SolveConfig.flips  # g(y) averaged over wedge-preserving flips (1: g once)
    samples: int = 4  # posterior samples per tile: the std maps of the g(y) and MAP rows, and their calibration
    workdir: Path = Path("bench")  # the simulated data and everything made from it
    device: str = "auto"


def best_lowpass(obs: np.ndarray, truth: np.ndarray, wedge: Wedge, voxel: float) -> tuple[float, dict]:
    """The Gaussian low-pass of `obs` (z, y, x) closest to `truth` in cc: its sigma and metrics."""
    best = None
    for s in LOWPASS_SIGMAS:
        m = evaluate(gaussian_filter(obs, s), truth, wedge, voxel)
        if best is None or m["cc"] > best[1]["cc"]:
            best = (s, m)
    assert best is not None
    return best


def machine() -> str:
    """One line describing the host, its GPU and torch, printed with every benchmark."""
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()} {cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), {gpu}, torch {torch.__version__}"


def run_benchmark(options: QualityOptions, on_rows: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Measure every phantom of `options`; the rows of all phantoms, one per method (COLUMNS).

    `on_rows` is called with each phantom's rows as soon as they are measured (the CLI prints them).
    """
    work = Path(options.workdir)
    work.mkdir(parents=True, exist_ok=True)
    device = str(pick_device(options.device))
    solve = SolveConfig(
        map_steps=options.map_steps, prior_weight=options.prior_weight, samples=options.samples, flips=options.flips
    )
    rows: list[dict] = []
    for model in options.models:
        for seed in options.seeds:
            for tilt in options.tilts:
                for snr in options.snrs:
                    phantom = _phantom(work, options, solve, device, model, seed, tilt, snr)
                    rows += phantom
                    if on_rows is not None:
                        on_rows(phantom)
    return rows


def simulate_phantom(model: str, shape: tuple[int, int, int], wedge: Wedge, snr: float, seed: int) -> Simulation:
    """One benchmark phantom through the forward model `model` ("ideal" or "tilt-series": the
    latter with 3-degree tilt steps, dose-symmetric, ramp-filtered back-projection, no CTF)."""
    if model == "ideal":
        return simulate(shape, wedge, snr=snr, seed=seed, voxel_size=10.0)
    if model == "tilt-series":
        scheme = TiltScheme(wedge.tilt_min, wedge.tilt_max, axis=wedge.tilt_axis)
        return simulate_tilt_series(shape, scheme, snr=snr, seed=seed, voxel_size=10.0)
    raise CryogenError(f"forward model must be ideal or tilt-series, not {model!r}")


def _phantom(
    work: Path,
    options: QualityOptions,
    solve: SolveConfig,
    device: str,
    model: str,
    seed: int,
    tilt: float,
    snr: float,
) -> list[dict]:
    """The eight rows of one phantom: input, best low-pass, truth without its wedge, g(y), g(y) with
    its two-scale fill (SolveConfig.coarse_cutoff), MAP under
    D's energy with the data as a penalty and as a discrepancy constraint (SolveConfig.data_term),
    and MAP under the denoiser's energy (SolveConfig.energy)."""
    wedge = Wedge(-tilt, tilt)
    name = f"s{seed}_t{tilt:g}_snr{snr:g}" + ("" if model == "ideal" else "_ts")
    d = work / name
    d.mkdir(exist_ok=True)
    sim = simulate_phantom(model, options.shape, wedge, snr, seed)
    write_mrc(d / "obs.mrc", sim.observation, 10.0)
    rows = [{"phantom": name, "method": "input", **evaluate(sim.observation, sim.truth, wedge, 10.0), "wall_s": 0.0}]
    t = time.monotonic()
    sigma, m = best_lowpass(sim.observation, sim.truth, wedge, 10.0)
    rows.append({"phantom": name, "method": f"lowpass({sigma:g})", **m, "wall_s": time.monotonic() - t})
    # the ceiling of any method that denoises perfectly but leaves the wedge empty
    removed = evaluate(apply_wedge_np(sim.truth, wedge), sim.truth, wedge, 10.0)
    rows.append({"phantom": name, "method": "truth, wedge removed", **removed, "wall_s": 0.0})

    start = time.monotonic()
    chunk(d / "obs.mrc", d / "tiles.zarr", wedge=wedge, progress=False)
    cfg = TrainConfig(seed=seed)
    # the default method's reconstruction (g(y), one denoiser step, the std map's samples): what the
    # time budget leaves training is the budget less chunk and this
    default = replace(solve, energy="denoiser", map_steps=options.denoiser_steps)
    if options.steps is not None:
        cfg = replace(cfg, steps=options.steps)
    else:
        rest = estimate_reconstruct_seconds(d / "tiles.zarr", cfg, default, device) * 1.15 + 5
        budget = max(options.time_budget * 60 - (time.monotonic() - start) - rest, 10)
        cfg = replace(cfg, steps=10**9, time_budget=budget)
    train([d / "tiles.zarr"], d / "prior.pt", cfg, device=device, progress=False)
    shared = time.monotonic() - start
    runs = (
        # samples only add a std map to the two g(y) rows (their estimates are g's): g(y) at the data's
        # resolution alone, then with the wedge's lowest frequencies from g at half resolution
        ("g(y)", replace(solve, map_steps=0, coarse_cutoff=0.0)),
        ("g(y), two scales", replace(solve, map_steps=0)),
        ("MAP", replace(solve, energy="discriminator", data_term="penalty")),
        ("MAP, discrepancy", replace(solve, energy="discriminator", data_term="discrepancy")),
        ("MAP, denoiser", default),
    )
    for i, (label, how) in enumerate(runs):
        t = time.monotonic()
        out = d / f"recon{i}"
        reconstruct(
            d / "tiles.zarr", d / "prior.pt", out.with_suffix(".zarr"), how, device=device, seed=seed, progress=False
        )
        stitch(out.with_suffix(".zarr"), out.with_suffix(".mrc"), progress=False)
        wall = shared + time.monotonic() - t
        recon, _ = read_mrc(out.with_suffix(".mrc"))
        row = {"phantom": name, "method": label, **evaluate(recon, sim.truth, wedge, 10.0), "wall_s": wall}
        if how.samples:
            std = d / f"std{i}.mrc"
            stitch(out.with_suffix(".zarr"), std, array_name="std", progress=False)
            row.update(calibration(recon, read_mrc(std)[0], sim.truth))
        rows.append(row)
    return rows
