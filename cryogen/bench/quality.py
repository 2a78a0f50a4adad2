"""`cryogen benchmark`: quality against ground truth on simulated tomograms, with wall times.

For each phantom (seed x tilt range x SNR) it compares (a) the input, (b) the best Gaussian
low-pass of the input, its sigma chosen with the truth (the strongest classical baseline, and an
optimistic one: no real user can choose it so), (c) the network g(y) alone and (d) the full MAP;
and, for reference, the truth with its wedge removed: what a perfect denoiser that leaves the
wedge empty would score.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from ..cli.tables import format_table
from ..io.mrc import read_mrc, write_mrc
from ..method.config import TrainConfig
from ..method.devices import pick_device
from ..method.loop import train
from ..method.solver import SolveConfig
from ..model.imaging import Wedge, apply_wedge_np
from ..qc.metrics import evaluate
from ..restore.pipeline import estimate_reconstruct_seconds
from ..restore.reconstruct import reconstruct
from ..sim.simulate import simulate
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
    "wall_s",
]


def best_lowpass(obs: np.ndarray, truth: np.ndarray, wedge: Wedge, voxel: float) -> tuple[float, dict]:
    best = None
    for s in LOWPASS_SIGMAS:
        m = evaluate(gaussian_filter(obs, s), truth, wedge, voxel)
        if best is None or m["cc"] > best[1]["cc"]:
            best = (s, m)
    assert best is not None
    return best


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()} {cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), {gpu}, torch {torch.__version__}"


def run_benchmark(args: argparse.Namespace) -> list[dict]:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    device = str(pick_device(args.device))
    solve = SolveConfig(map_steps=args.map_steps, prior_weight=args.prior_weight, samples=args.samples)
    rows: list[dict] = []
    print(f"command: cryogen {' '.join(sys.argv[1:]) if len(sys.argv) > 1 else 'benchmark'}")
    print(f"machine: {machine()}; device: {device}", flush=True)
    for seed in args.seeds:
        for tilt in args.tilts:
            for snr in args.snrs:
                wedge = Wedge(-tilt, tilt)
                name = f"s{seed}_t{tilt:g}_snr{snr:g}"
                d = work / name
                d.mkdir(exist_ok=True)
                sim = simulate(tuple(args.shape), wedge, snr=snr, seed=seed, voxel_size=10.0)
                write_mrc(d / "obs.mrc", sim.observation, 10.0)
                rows.append(
                    {
                        "phantom": name,
                        "method": "input",
                        **evaluate(sim.observation, sim.truth, wedge, 10.0),
                        "wall_s": 0.0,
                    }
                )
                t = time.monotonic()
                sigma, m = best_lowpass(sim.observation, sim.truth, wedge, 10.0)
                rows.append({"phantom": name, "method": f"lowpass({sigma:g})", **m, "wall_s": time.monotonic() - t})
                # the ceiling of any method that denoises perfectly but leaves the wedge empty
                rows.append(
                    {
                        "phantom": name,
                        "method": "truth, wedge removed",
                        **evaluate(apply_wedge_np(sim.truth, wedge), sim.truth, wedge, 10.0),
                        "wall_s": 0.0,
                    }
                )

                start = time.monotonic()
                chunk(d / "obs.mrc", d / "tiles.zarr", wedge=wedge, progress=False)
                cfg = TrainConfig(seed=seed)
                if args.steps is not None:
                    cfg = replace(cfg, steps=args.steps)
                else:
                    rest = estimate_reconstruct_seconds(d / "tiles.zarr", cfg, solve, device) * 1.15 + 5
                    cfg = replace(
                        cfg, steps=10**9, time_budget=max(args.time_budget * 60 - (time.monotonic() - start) - rest, 10)
                    )
                train([d / "tiles.zarr"], d / "prior.pt", cfg, device=device, progress=False)
                shared = time.monotonic() - start
                for label, k in (("g(y)", 0), ("MAP", solve.map_steps)):
                    t = time.monotonic()
                    reconstruct(
                        d / "tiles.zarr",
                        d / "prior.pt",
                        d / f"recon{k}.zarr",
                        replace(solve, map_steps=k),
                        device=device,
                        seed=seed,
                        progress=False,
                    )
                    stitch(d / f"recon{k}.zarr", d / f"recon{k}.mrc", progress=False)
                    wall = shared + time.monotonic() - t
                    recon, _ = read_mrc(d / f"recon{k}.mrc")
                    rows.append(
                        {"phantom": name, "method": label, **evaluate(recon, sim.truth, wedge, 10.0), "wall_s": wall}
                    )
                print(format_table(rows[-5:], COLUMNS), flush=True)
    print()
    print(format_table(rows, COLUMNS))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows
