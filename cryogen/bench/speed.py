"""`cryogen benchmark --speed`: what each stage costs in time and memory, and how it scales.

Returns one table of figures (rows of COLUMNS), which the CLI prints with the command, the machine
and the devices:

- throughput of reconstruct (voxels of the tomogram per second, tile overlap included): one pass
  of the network g, the default's MAP step under the denoiser's energy, and a step under D's;
  training steps per second;
- where reconstruct's time goes (reading tiles, compute, writing, start-up) and train's (drawing
  patches, the step, checkpoints), on the 16x tomogram;
- peak resident memory (RSS) and wall time of chunk, train, reconstruct and stitch, each run as
  its own `cryogen` process, for tomograms of 1x, 4x and 16x the voxels: memory must stay flat;
- Dask scaling of reconstruct: 1 against 2 worker processes;
- the same throughput on CUDA when torch sees a GPU;
- the extrapolated wall time for a 1000 x 1000 x 300 tomogram, and with `--full-size` the
  measured one (chunk, reconstruct and stitch of a real volume of that size).

Volumes are smooth random fields (the cost of every stage is independent of the content), made
plane by plane so that making them does not itself need the memory being measured.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..io.files import remove_path
from ..io.mrc import MrcWriter
from ..method.config import TrainConfig
from ..method.solver import SolveConfig, coarse_fill, map_denoiser, map_estimate
from ..model.imaging import Wedge
from ..model.nets import NetConfig
from ..tiling import TileGrid
from .quality import QualityOptions

BASE = (64, 128, 128)  # 1x: 1 M voxels
SCALES = {1: BASE, 4: (64, 256, 256), 16: (128, 512, 256)}
TARGET = (300, 1000, 1000)  # the facility's tomogram, (z, y, x)
CLI = [sys.executable, "-m", "cryogen.cli"]


def make_volume(path: Path, shape: tuple[int, int, int], seed: int = 0) -> None:
    """A smooth random field written plane by plane (memory of one plane)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    with MrcWriter(path, shape, voxel_size=10.0) as w:
        for z in range(shape[0]):
            w.write_block(z, 0, gaussian_filter(rng.standard_normal(shape[1:], dtype=np.float32), 1.5)[None])


# A small launcher between us and the stage: Linux carries a parent's peak RSS over fork and exec
# into the child's, so a stage forked straight from this (torch-laden) process would report at
# least our own peak. Forked from a bare interpreter, its peak is its own.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nCRYOGEN_MAXRSS_KB {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def bare(argv: list[str]) -> list[str]:
    """`argv` run through the bare launcher, so that its peak RSS is its own (see above)."""
    return [sys.executable, "-c", _LAUNCHER, *argv]


def run_stage(args: list[str], threads: int) -> tuple[float, float]:
    """Run one `cryogen` verb as its own process; its wall seconds and peak RSS in MB."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    t = time.monotonic()
    proc = subprocess.run(bare([*CLI, *args]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.monotonic() - t
    err = proc.stderr.decode(errors="replace")
    if proc.returncode:
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("CRYOGEN_MAXRSS_KB")]
        raise RuntimeError(f"cryogen {args[0]} failed: {lines[-1] if lines else proc.returncode}")
    kb = next(int(ln.split()[1]) for ln in reversed(err.splitlines()) if ln.startswith("CRYOGEN_MAXRSS_KB"))
    return wall, kb / 1024.0


def tiles_for(shape: tuple[int, int, int], tile: int = 64, overlap: int = 16) -> int:
    starts = TileGrid(shape, tile, overlap).starts
    return len(starts[0]) * len(starts[1]) * len(starts[2])


def throughput(
    device: str, net: NetConfig, map_steps: int, tile: int = 64, batch: int = 4, repeats: int = 3
) -> dict[str, float]:
    """Seconds per tile on `device`, with the default networks: one pass of g ("g_tile_s"), one
    step under the denoiser's energy as the default reconstruct takes it, g over the flips and
    the low-frequency blur ("denoiser_step_tile_s"), the default's coarse fill, g over the flips
    on the tile binned 2x ("coarse_fill_tile_s"), and one step under D's energy
    ("map_step_tile_s", 0 without `map_steps`)."""
    from ..model.nets import build, place
    from ..model.noise import NoiseModel

    dev = torch.device(device)
    g_net, d_net = build(net)
    g = place(g_net, dev).eval().requires_grad_(False)
    d = place(d_net, dev).eval().requires_grad_(False)
    wedge = Wedge(-60, 60)
    noise = NoiseModel.white(0.8)
    y = torch.randn(batch, tile, tile, tile, device=dev)

    def timed(fn) -> float:
        fn()  # warm-up (allocations, cuDNN autotuning)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / repeats / batch

    x0 = g(y)  # outside inference mode: D's steps below differentiate through it
    step = replace(SolveConfig(), map_steps=1, energy="denoiser")  # the default's step
    with torch.inference_mode():
        g_tile = timed(lambda: g(y))
    # out of inference mode, as reconstruct takes it: a wedge mask first cached in inference mode
    # would be an inference tensor, and D's gradients below could not pass through it
    # the default's two-scale denoiser (g stands in for the coarse network: the same size)
    denoiser = map_denoiser(g, g, wedge, step)
    denoiser_tile = timed(lambda: map_estimate(x0, y, d, wedge, noise, step, None, denoiser))
    with torch.no_grad():  # as reconstruct takes it, g over the flips on the binned tile
        coarse_tile = timed(lambda: coarse_fill(g, y, x0, wedge, step.coarse_cutoff, step.flips))
    cfg = SolveConfig(map_steps=map_steps, energy="discriminator")  # a gradient step on D's energy
    gen = torch.Generator(device="cpu").manual_seed(0)
    map_tile = (
        timed(lambda: map_estimate(x0, y, d, wedge, noise, cfg, gen, g)) / max(map_steps, 1) if map_steps else 0.0
    )
    return {
        "g_tile_s": g_tile,
        "coarse_fill_tile_s": coarse_tile,
        "denoiser_step_tile_s": denoiser_tile,
        "map_step_tile_s": map_tile,
    }


def train_rate(device: str, steps: int = 10) -> float:
    """Training steps per second of the default configuration on random tiles."""
    import tempfile

    from ..method.config import TrainConfig
    from ..method.loop import train
    from ..tiling import chunk

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "v.mrc"
        make_volume(src, BASE)
        # a random field is no tomogram: chunk's data warnings about it (no signal, no wedge) are
        # true and beside the point here, so they are kept out of the benchmark's output
        quiet = logging.getLogger("cryogen.qc.warnings")
        before = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            chunk(src, Path(tmp) / "t.zarr", wedge=Wedge(-60, 60), progress=False, check_geometry=False)
        finally:
            quiet.setLevel(before)
        cfg = TrainConfig(steps=2, checkpoint_every=10**6)
        train([Path(tmp) / "t.zarr"], Path(tmp) / "w.pt", cfg, device=device, progress=False)  # warm-up
        t = time.monotonic()
        train([Path(tmp) / "t.zarr"], Path(tmp) / "p.pt", replace(cfg, steps=steps), device=device, progress=False)
        return steps / (time.monotonic() - t)


def reconstruct_phases(store: Path, prior: Path, out: Path, device: str) -> dict[str, float]:
    """Seconds spent reading, computing and writing in one in-process reconstruct of `store`
    (the serial path, phases timed one after the other)."""
    from ..restore.reconstruct import TileRestorer, prepare

    cfg = SolveConfig()
    partial, batches = prepare(store, prior, out, cfg, 4, 0)
    restorer = TileRestorer(store, prior, partial, cfg, device, 0)
    spent = {"read": 0.0, "compute": 0.0, "write": 0.0}
    for idx in batches:
        t0 = time.perf_counter()
        y = restorer.load(idx)
        t1 = time.perf_counter()
        result = restorer.compute(idx, y)  # ends in .cpu(): a GPU's work is finished here
        t2 = time.perf_counter()
        restorer.save(idx, result)
        t3 = time.perf_counter()
        spent["read"] += t1 - t0
        spent["compute"] += t2 - t1
        spent["write"] += t3 - t2
    remove_path(partial)
    return spent


def train_phases(store: Path, device: str, steps: int) -> dict[str, float]:
    """Seconds spent drawing patches, in the training step proper, and saving one checkpoint,
    for `steps` default training steps on `store`."""
    import tempfile

    from ..method.checkpoints import checkpoint_dict, save_checkpoint
    from ..method.loop import coarse_sampler
    from ..method.patches import PatchSampler, Source, open_sources
    from ..method.step import new_state, train_step

    cfg = TrainConfig()
    dev = torch.device(device)
    sources = open_sources([store])
    drawing = [0.0]

    class TimedSampler(PatchSampler):
        def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, Source]:
            t = time.perf_counter()
            out = super().sample(batch, generator)
            drawing[0] += time.perf_counter() - t
            return out

    sampler = TimedSampler(sources, cfg.patch)
    cfg, coarse = coarse_sampler(cfg, [store])  # a step trains the coarse network too, as in the product
    state = new_state(cfg, dev)
    train_step(state, sampler, cfg, dev, coarse)  # warm-up
    drawing[0] = 0.0
    t = time.perf_counter()
    for _ in range(steps):
        train_step(state, sampler, cfg, dev, coarse)  # ends in .item(): a GPU's work is finished
    total = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        save_checkpoint(Path(tmp) / "c.pt", checkpoint_dict(state, cfg, sources))
        ckpt = time.perf_counter() - t
    return {
        "draw": drawing[0],
        "step": total - drawing[0],
        "checkpoint": ckpt,
        "steps": steps,
        "every": cfg.checkpoint_every,
    }


def where_time_goes(d: Path, prior: Path, device: str, process_wall: float, train_steps: int) -> list[dict[str, str]]:
    """Rows saying where reconstruct's and train's time goes on the tomogram in `d`."""
    phases = reconstruct_phases(d / "t.zarr", prior, d / "phases.zarr", device)
    loop = sum(phases.values())
    startup = max(process_wall - loop, 0.0)
    rows = [
        row(f"reconstruct {name} [{device}]", secs / process_wall * 100, "% of the process", f"{secs:.2f} s")
        for name, secs in phases.items()
    ]
    rows.append(
        row(
            f"reconstruct start-up [{device}]",
            startup / process_wall * 100,
            "% of the process",
            f"{startup:.2f} s: Python, torch and Zarr imports, prior loading, done once per tomogram",
        )
    )
    rows.append(
        row(
            f"reconstruct read + write + Python in the loop [{device}]",
            (loop - phases["compute"]) / loop * 100,
            "% of the loop",
            "what grows with the tomogram besides compute",
        )
    )
    t = train_phases(d / "t.zarr", device, max(train_steps, 10))
    per_step = (t["draw"] + t["step"]) / t["steps"] + t["checkpoint"] / t["every"]
    rows.append(
        row(
            f"train: drawing patches [{device}]",
            t["draw"] / t["steps"] / per_step * 100,
            "% of a step",
            "reading and caching tiles",
        )
    )
    rows.append(
        row(
            f"train: checkpoints [{device}]",
            t["checkpoint"] / t["every"] / per_step * 100,
            "% of a step",
            f"{t['checkpoint'] * 1e3:.0f} ms every {t['every']} steps",
        )
    )
    return rows


def full_size(
    work: Path, prior: Path, device: str, threads: int, shape: tuple[int, int, int] = TARGET
) -> list[dict[str, str]]:
    """chunk, reconstruct and stitch of a real 1000 x 1000 x 300 tomogram, each as its own
    process: the end-to-end figure the extrapolation only estimates (I/O, overlap, start-up in)."""
    d = work / "full"
    d.mkdir(exist_ok=True)
    src = d / "in.mrc"
    if not src.exists():
        make_volume(src, shape, seed=7)
    for p in (d / "t.zarr", d / "r.zarr", d / "out.mrc"):
        remove_path(p)
    label = f"{shape[2]}x{shape[1]}x{shape[0]}"
    walls = {}
    rows = []
    for stage, argv in (
        ("chunk", ["chunk", str(src), str(d / "t.zarr"), "--tilt-range", "-60", "60"]),
        (
            "reconstruct",
            ["reconstruct", str(d / "t.zarr"), "--prior", str(prior), "--out", str(d / "r.zarr"), "--device", device],
        ),
        ("stitch", ["stitch", str(d / "r.zarr"), str(d / "out.mrc")]),
    ):
        wall, rss = run_stage(argv, threads)
        walls[stage] = wall
        rows.append(row(f"{label} {stage} [{device}]", wall / 60, "min", f"peak {rss:.0f} MB"))
    total = sum(walls.values())
    rows.append(
        row(
            f"{label} chunk + reconstruct + stitch [{device}]",
            total / 60,
            "min",
            "measured end to end, the default reconstruct (g(y) over the flips, then its MAP steps)",
        )
    )
    for p in (d / "t.zarr", d / "r.zarr", d / "out.mrc"):  # keep in.mrc for the next run; the rest is 5 GB
        remove_path(p)
    return rows


def row(what: str, value: float, unit: str, note: str = "") -> dict[str, str]:
    """One figure, its value rounded to what the measurement supports."""
    return {
        "figure": what,
        "value": f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}",
        "unit": unit,
        "note": note,
    }


Rows = list[dict[str, str]]
COLUMNS = ["figure", "value", "unit", "note"]


@dataclass(frozen=True)
class SpeedOptions:
    """What the speed benchmark runs; the CLI's defaults (those it shares with QualityOptions from there)."""

    workdir: Path = QualityOptions.workdir  # the volumes and outputs go to WORKDIR/speed
    map_steps: int = QualityOptions.map_steps
    train_steps: int = 20
    full_size: bool = False  # also run chunk, reconstruct and stitch on a real TARGET-sized tomogram


def devices() -> list[str]:
    """The devices measured: the CPU, and CUDA when torch sees a GPU (the last one runs the stages)."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def run_speed(options: SpeedOptions, on_rows: Callable[[Rows], None] | None = None) -> Rows:
    """Every figure of the speed benchmark (COLUMNS), in the order of the module docstring.

    `on_rows` is called with the figures to show so far, as each group is measured (the CLI prints them).
    """
    work = Path(options.workdir) / "speed"
    work.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    devs = devices()
    rows: Rows = []
    for dev in devs:
        rows += device_rows(dev, options.map_steps, options.train_steps)
        if on_rows is not None:
            on_rows(rows)
    # memory and wall time of each stage as its own process, at 1x, 4x and 16x the voxels
    peaks: dict[str, dict[int, float]] = {}
    prior = work / "prior.pt"
    for scale in SCALES:
        scale_rows, scale_peaks = stage_rows(work, scale, prior, devs[-1], threads, options.train_steps)
        rows += scale_rows
        for stage, rss in scale_peaks.items():
            peaks.setdefault(stage, {})[scale] = rss
        if on_rows is not None:
            on_rows(rows[-4:])
    for stage, by in peaks.items():
        rows.append(row(f"{stage}: peak at 16x / 1x", by[16] / by[1], "ratio", "target <= 1.5"))
    if options.full_size:
        rows += full_size(work, prior, devs[-1], threads)
        if on_rows is not None:
            on_rows(rows[-5:])
    return rows + dask_rows(work / "x4", prior, threads)


def device_rows(dev: str, map_steps: int, train_steps: int) -> Rows:
    """Throughput of reconstruct (g alone, per MAP step, extrapolated to TARGET) and of train on `dev`."""
    target_tiles = tiles_for(TARGET)
    target = f"{TARGET[2]}x{TARGET[1]}x{TARGET[0]}"
    t = throughput(dev, NetConfig(), map_steps)
    g_rate = float(np.prod(TARGET)) / (t["g_tile_s"] * target_tiles)
    rows = [row(f"reconstruct g(y) [{dev}]", g_rate / 1e6, "Mvoxel/s", f"{t['g_tile_s'] * 1e3:.0f} ms per 64^3 tile")]
    rows.append(
        row(f"one denoiser MAP step [{dev}]", t["denoiser_step_tile_s"] * 1e3, "ms per tile", "the default's step")
    )
    rows.append(
        row(f"the coarse fill [{dev}]", t["coarse_fill_tile_s"] * 1e3, "ms per tile", "g over the flips, binned 2x")
    )
    if map_steps:
        rows.append(
            row(
                f"one MAP step under D's energy [{dev}]",
                t["map_step_tile_s"] * 1e3,
                "ms per tile",
                "--energy discriminator",
            )
        )
    flips, default_steps = SolveConfig.flips, SolveConfig.map_steps  # one pass of g per flip
    for label, per_tile, note in (
        (
            f"g x {flips} flips + coarse fill + {default_steps} denoiser step",
            flips * t["g_tile_s"] + t["coarse_fill_tile_s"] + default_steps * t["denoiser_step_tile_s"],
            "the default",
        ),
        (f"g x {flips} flips + coarse fill", flips * t["g_tile_s"] + t["coarse_fill_tile_s"], "--map-steps 0"),
        ("g x 1 flip", t["g_tile_s"], "--map-steps 0 --flips 1 --coarse-cutoff 0"),
    ):
        rows.append(
            row(
                f"{target} reconstruct, {label} [{dev}]",
                per_tile * target_tiles / 60,
                "min",
                f"extrapolated, compute only; {note}",
            )
        )
    if map_steps:
        full = flips * t["g_tile_s"] + map_steps * t["map_step_tile_s"]
        rows.append(
            row(
                f"{target} reconstruct, g x {flips} flips + {map_steps} MAP under D's energy [{dev}]",
                full * target_tiles / 60,
                "min",
                f"extrapolated, compute only; --energy discriminator --map-steps {map_steps}",
            )
        )
    rate = train_rate(dev, steps=train_steps)
    steps = TrainConfig.steps
    rows.append(row(f"train [{dev}]", rate, "steps/s", f"default prior ({steps} steps): {steps / rate / 60:.1f} min"))
    return rows


def stage_rows(
    work: Path, scale: int, prior: Path, device: str, threads: int, train_steps: int
) -> tuple[Rows, dict[str, float]]:
    """Peak memory and wall time of chunk, train, reconstruct and stitch, each as its own process,
    on the tomogram of `scale` x the base voxels; at the first scale, also train the shared `prior`
    (and at the largest, say where the time goes). The rows and each stage's peak RSS in MB."""
    shape = SCALES[scale]
    d = work / f"x{scale}"
    d.mkdir(exist_ok=True)
    src = d / "in.mrc"
    if not src.exists():
        make_volume(src, shape, seed=scale)
    for p in (d / "t.zarr", d / "r.zarr", d / "out.mrc"):
        remove_path(p)
    voxels = float(np.prod(shape))
    peaks: dict[str, float] = {}
    wall, peaks["chunk"] = run_stage(["chunk", str(src), str(d / "t.zarr"), "--tilt-range", "-60", "60"], threads)
    rows = [row(f"chunk {scale}x ({voxels / 1e6:.0f} Mvoxel)", peaks["chunk"], "MB peak", f"{wall:.1f} s")]
    train_args = ["train", str(d / "t.zarr"), "--steps", str(train_steps), "--device", device, "--out"]
    if scale == min(SCALES):
        run_stage([*train_args, str(prior)], threads)
    wall, peaks["train"] = run_stage([*train_args, str(d / "p.pt")], threads)
    rows.append(row(f"train {scale}x ({train_steps} steps)", peaks["train"], "MB peak", f"{wall:.1f} s"))
    recon_args = ["reconstruct", str(d / "t.zarr"), "--prior", str(prior), "--out", str(d / "r.zarr")]
    wall, peaks["reconstruct"] = run_stage([*recon_args, "--device", device], threads)
    note = f"{wall:.1f} s, {voxels / wall / 1e6:.2f} Mvoxel/s with start-up"
    rows.append(row(f"reconstruct {scale}x (the default)", peaks["reconstruct"], "MB peak", note))
    if scale == max(SCALES):
        rows += where_time_goes(d, prior, device, wall, train_steps)
    wall, peaks["stitch"] = run_stage(["stitch", str(d / "r.zarr"), str(d / "out.mrc")], threads)
    rows.append(row(f"stitch {scale}x", peaks["stitch"], "MB peak", f"{wall:.1f} s"))
    return rows, peaks


def dask_rows(d: Path, prior: Path, threads: int) -> Rows:
    """Dask scaling of reconstruct on the tomogram in `d`: 1 process against 2 worker processes."""
    rows = []
    for workers in (1, 2):
        out = d / f"dask{workers}.zarr"
        remove_path(out)
        argv = ["reconstruct", str(d / "t.zarr"), "--prior", str(prior), "--out", str(out), "--device", "cpu"]
        wall, rss = run_stage([*argv, "--workers", str(workers)], 1 if workers > 1 else threads)
        label = "Dask, 2 worker processes" if workers > 1 else "serial, 1 process"
        rows.append(row(f"reconstruct 4x, {label}", wall, "s", f"peak {rss:.0f} MB of the main process"))
    return rows
