"""`cryogen benchmark --dataset N`: the whole Snakemake workflow on a dataset of N small simulated
tomograms, on this machine, to measure what a dataset costs beyond its networks.

It simulates N tomograms (48 x 96 x 96 by default), writes them into a tomogram sheet, and in a
copy of the workflow (Snakefile, workflow/, config/, profiles/, slurm/ of the checkout CryoGEN
runs from, or `workflow=`):

- counts the jobs a SLURM submission would make: `snakemake --dag --profile slurm` (a dry run of
  the SLURM profile as users type it) gives every job and its dependencies; each job outside the
  local rules is one sbatch without grouping, and with the workflow profile's `groups` (and
  `group-components`) the grouped jobs of one group that depend on each other are one sbatch,
  as Snakemake forms group jobs;
- runs the workflow locally (`snakemake --cores C`, a tiny training budget) and takes each
  job's wall time from Snakemake's log (start and finish time stamps, 1 s resolution);
- per tomogram, the time outside the networks: its jobs' wall time (chunk, reconstruct, stitch,
  report, export) less the time g(y) takes on its tiles (tiles x seconds per tile, timed here at
  one thread: each local Dask worker runs one). For tomograms this small that is nearly all
  process start, imports, prior loading, the Dask cluster and I/O;
- and relates it to the reconstruct time of a 1000 x 1000 x 300 tomogram (`target_rows`).

The networks are not what is measured, so training is short; the result is the fixed cost that
every tomogram of a dataset pays, whatever its size.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from ..errors import CryogenError
from .quality import QualityOptions
from .speed import COLUMNS, Rows, row

__all__ = ["COLUMNS", "DatasetOptions", "count_submissions", "job_times", "run_dataset", "target_rows"]

#: what a workspace copies from the checkout (slurm/: the SLURM profile)
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "profiles", "slurm")
#: rules the Snakefile runs on the submitting host (its `localrules`), never submitted
LOCAL_RULES = frozenset({"all"})
PER_TOMOGRAM_RULES = ("chunk", "reconstruct", "stitch", "report", "export")


@dataclass(frozen=True)
class DatasetOptions:
    """What the dataset benchmark runs; `run=False` only counts the jobs (two dry runs)."""

    count: int = 20
    shape: tuple[int, int, int] = (48, 96, 96)
    steps: int = 20  # training steps: enough to make a prior, not to make it good
    cores: int | None = None  # snakemake --cores (default: the CPU threads this process was given)
    workdir: Path = QualityOptions.workdir  # the data and the workflow copy go to WORKDIR/dataset
    workflow: Path | None = None  # a CryoGEN checkout (default: the one this package runs from)
    run: bool = True


def checkout(workflow: Path | None) -> Path:
    """The folder holding the Snakefile: `workflow`, or the checkout this package is installed from."""
    root = Path(workflow) if workflow is not None else Path(__file__).resolve().parents[2]
    if not (root / "Snakefile").is_file():
        where = (
            "" if workflow is not None else " (CryoGEN is not installed from a checkout: give the workflow's folder)"
        )
        raise CryogenError(f"no Snakefile here{where}", root)
    return root


def workspace(root: Path, ws: Path, sheet: Path, steps: int) -> None:
    """A fresh copy of the workflow at `ws` whose config reads `sheet` and trains `steps` steps."""
    if ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, ws / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy2(src, ws / name)
    cfg_path = ws / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["tomograms"] = str(sheet)
    cfg["results"] = "results"
    cfg["train"].update(steps=steps, time_budget=None)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def simulate_dataset(folder: Path, count: int, shape: tuple[int, int, int]) -> Path:
    """`count` simulated tomograms (seeds 1..count, +-60 degrees, SNR 0.5) and their sheet; made
    once and reused while the shape is the same."""
    from ..io.mrc import write_mrc
    from ..model.imaging import Wedge
    from ..sim.simulate import simulate

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["name\tpath\ttilt_min\ttilt_max\ttilt_axis"]
    for i in range(1, count + 1):
        path = folder / f"t{i:03d}.mrc"
        if not _has_shape(path, shape):
            sim = simulate(shape, Wedge(-60, 60), snr=0.5, seed=i, voxel_size=10.0)
            write_mrc(path, sim.observation, 10.0)
        lines.append(f"t{i:03d}\t{path.resolve()}\t-60\t60\ty")
    sheet = folder / "tomograms.tsv"
    sheet.write_text("\n".join(lines) + "\n")
    return sheet


def _has_shape(path: Path, shape: tuple[int, int, int]) -> bool:
    from ..io.mrc import MrcReader

    if not path.exists():
        return False
    with MrcReader(path) as r:
        return tuple(r.shape) == tuple(shape)


def snakemake(ws: Path, *args: str) -> str:
    """Run Snakemake in `ws`; its log (stdout and stderr), or a one-line error with its last line."""
    cmd = [sys.executable, "-m", "snakemake", "--nocolor", *args]
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode:
        last = [ln for ln in log.strip().splitlines() if ln.strip()][-1:]
        raise CryogenError(f"snakemake {' '.join(args)} failed: {last[0] if last else proc.returncode}", ws)
    return log


# ----------------------------------------------------------------------------- job counts


def parse_dag(dot: str) -> tuple[dict[int, str], list[tuple[int, int]]]:
    """The jobs (id -> rule) and dependencies (from, to) of `snakemake --dag`'s DOT output."""
    nodes = {int(i): label.split("\\n")[0] for i, label in re.findall(r'^\s*(\d+)\[label = "([^"]*)"', dot, re.M)}
    edges = [(int(a), int(b)) for a, b in re.findall(r"^\s*(\d+) -> (\d+)\s*$", dot, re.M)]
    return nodes, edges


def count_submissions(
    nodes: Mapping[int, str],
    edges: Iterable[tuple[int, int]],
    groups: Mapping[str, str],
    components: Mapping[str, int] | None = None,
    local: frozenset[str] = LOCAL_RULES,
) -> int:
    """How many jobs a cluster executor submits for this DAG: one per job of a rule in no group,
    none for local rules, and per group name, its connected sets of jobs (jobs of that group
    linked by dependencies) packed `components[group]` to a job (Snakemake's group-components)."""
    members = {j: groups[rule] for j, rule in nodes.items() if rule in groups and rule not in local}
    parent = {j: j for j in members}

    def find(j: int) -> int:
        while parent[j] != j:
            parent[j] = parent[parent[j]]
            j = parent[j]
        return j

    for a, b in edges:
        if a in members and b in members and members[a] == members[b]:
            parent[find(a)] = find(b)
    sets = Counter(members[j] for j in members if find(j) == j)
    packed = sum(math.ceil(n / max((components or {}).get(g, 1), 1)) for g, n in sets.items())
    alone = sum(1 for j, rule in nodes.items() if rule not in local and j not in members)
    return alone + packed


def profile_groups(ws: Path) -> tuple[dict[str, str], dict[str, int]]:
    """The workflow profile's `groups` (rule -> group) and `group-components` (group -> jobs per job)."""
    path = ws / "profiles" / "default" / "config.yaml"
    cfg = yaml.safe_load(path.read_text()) if path.exists() else {}
    groups = {str(k): str(v) for k, v in (cfg.get("groups") or {}).items()}
    comps = {}
    for item in cfg.get("group-components") or []:
        name, _, n = str(item).partition("=")
        comps[name] = int(n)
    return groups, comps


def job_counts(ws: Path) -> tuple[int, int, Counter]:
    """SLURM submissions without and with the workflow profile's groups, and the jobs per rule."""
    nodes, edges = parse_dag(snakemake(ws, "--dag", "--profile", "slurm"))
    groups, comps = profile_groups(ws)
    return (
        count_submissions(nodes, edges, {}),
        count_submissions(nodes, edges, groups, comps),
        Counter(nodes.values()),
    )


# ----------------------------------------------------------------------------- job times


@dataclass
class Job:
    rule: str
    wildcards: str = ""
    start: datetime | None = None
    end: datetime | None = None

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds() if self.start and self.end else math.nan


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def job_times(log: str) -> list[Job]:
    """Every job of a Snakemake log with its start and finish time (the stamps before its
    announcement and before its "Finished job" line)."""
    jobs: dict[int, Job] = {}
    stamp: datetime | None = None
    current: Job | None = None
    for line in log.splitlines():
        s = line.strip()
        if m := _STAMP.match(s):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"^(?:local)?rule (\w+):$", s):
            current = Job(m.group(1), start=stamp)
        elif current is not None and (m := re.match(r"^jobid: (\d+)$", s)):
            jobs[int(m.group(1))] = current
        elif current is not None and (m := re.match(r"^wildcards: (.*)$", s)):
            current.wildcards = m.group(1)
        elif (m := re.match(r"^Finished job(?:id:)? (\d+)", s)) and int(m.group(1)) in jobs:
            jobs[int(m.group(1))].end = stamp
    return list(jobs.values())


def _order(item: tuple[str, int]) -> int:
    """Rules in the order a tomogram goes through them."""
    order = ("simulate", "backproject", "chunk", "train", *PER_TOMOGRAM_RULES[1:])
    return order.index(item[0]) if item[0] in order else len(order)


def _tomogram(job: Job) -> str:
    m = re.search(r"tomogram=([^,\s]+)", job.wildcards)
    return m.group(1) if m else ""


# ----------------------------------------------------------------------------- the figures


def g_seconds_per_tile(tile: int) -> float:
    """Seconds g(y) takes per tile at one torch thread (a local Dask worker's), default networks."""
    import torch

    from ..method.config import TrainConfig
    from .speed import throughput

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return throughput("cpu", TrainConfig().net, 0, tile=tile)["g_tile_s"]
    finally:
        torch.set_num_threads(before)


def process_start_seconds(mrc: Path) -> dict[str, float]:
    """Wall seconds of a bare `cryogen info` (interpreter and CLI start) and of importing torch."""
    out = {}
    for name, argv in (
        ("cli", [sys.executable, "-m", "cryogen.cli", "info", str(mrc)]),
        ("torch", [sys.executable, "-c", "import torch"]),
    ):
        t = time.monotonic()
        subprocess.run(argv, capture_output=True, check=False)
        out[name] = time.monotonic() - t
    return out


#: README "Speed and memory", 2 CPU cores: a 1000 x 1000 x 300 tomogram's reconstruct measured
#: 1.65 min end to end, ~2 s of it start-up, and reading and writing 8.9 % of the rest; no GPU figure
README_CPU_RECONSTRUCT_S = 99.0
README_START_S = 2.0
README_IO_SHARE = 0.089


def target_rows(overhead_s: float, speedups: tuple[float, ...] = (10.0, 100.0)) -> Rows:
    """The overhead against a 1000 x 1000 x 300 tomogram's reconstruct on a GPU. No GPU figure is
    measured (README), so the GPU time is derived from the README's 2-core CPU one: its start-up
    and I/O stay as they are, its compute shrinks by an assumed GPU speed-up of g(y). (On a GPU,
    I/O overlaps compute, so the real time may be shorter and the overhead's share larger.)"""
    loop = README_CPU_RECONSTRUCT_S - README_START_S
    fixed = README_START_S + README_IO_SHARE * loop
    compute = (1 - README_IO_SHARE) * loop
    rows = []
    for f in speedups:
        gpu = fixed + compute / f
        rows.append(row(f"1000 x 1000 x 300 reconstruct, GPU {f:g}x 2 CPU cores (estimate)", gpu, "s",
                        f"README, CPU: {fixed:.0f} s start-up and I/O + {compute:.0f} s compute / {f:g}"))  # fmt: skip
        rows.append(row("  per-tomogram overhead / that", 100 * overhead_s / gpu, "%", "target: below 10 %"))
    return rows


def run_dataset(options: DatasetOptions, on_rows: Callable[[Rows], None] | None = None) -> Rows:
    """The dataset benchmark's figures (COLUMNS): jobs, then (with `run`) times and overhead."""
    import torch

    if options.count < 1:
        raise CryogenError(f"--dataset needs at least 1 tomogram, not {options.count}")
    work = Path(options.workdir) / "dataset"
    root = checkout(options.workflow)
    sheet = simulate_dataset(work / "data", options.count, options.shape)
    ws = work / "workflow"
    workspace(root, ws, sheet.resolve(), options.steps)
    ungrouped, grouped, per_rule = job_counts(ws)
    n = options.count
    rows: Rows = [
        row("SLURM jobs, no groups", ungrouped, "jobs", ", ".join(f"{r} {c}" for r, c in sorted(per_rule.items(), key=_order) if r not in LOCAL_RULES)),
        row("SLURM jobs, the profile's groups", grouped, "jobs", f"{(ungrouped - grouped) / n:.2g} fewer per tomogram"),
    ]  # fmt: skip
    if on_rows:
        on_rows(rows)
    if not options.run:
        return rows

    cores = options.cores or torch.get_num_threads()
    t = time.monotonic()
    log = snakemake(ws, "--cores", str(cores))
    wall = time.monotonic() - t
    (work / "snakemake.log").write_text(log)
    jobs = [j for j in job_times(log) if j.rule not in LOCAL_RULES]
    per_tomo: dict[str, float] = defaultdict(float)
    for j in jobs:
        if j.rule in PER_TOMOGRAM_RULES:
            per_tomo[_tomogram(j)] += j.seconds
    train = sum(j.seconds for j in jobs if j.rule == "train")

    from ..io.store import open_store

    tiles = open_store(ws / "results" / "t001" / "tiles.zarr")[1]
    g_tile = g_seconds_per_tile(tiles.tile)
    network = tiles.n_tiles * g_tile
    job_s = sum(per_tomo.values()) / n
    overhead = job_s - network
    start = process_start_seconds(sheet.parent / "t001.mrc")
    by_rule: dict[str, float] = defaultdict(float)
    for j in jobs:
        if j.rule in PER_TOMOGRAM_RULES:
            by_rule[j.rule] += j.seconds / n
    rows += [
        row("wall time, whole workflow", wall, "s", f"{n} tomograms {' x '.join(map(str, options.shape))}, snakemake --cores {cores}"),
        row("  of which train (one prior)", train, "s", f"{options.steps} steps"),
        row("  the rest, per tomogram", (wall - train) / n, "s", "(wall - train) / tomograms: their jobs at --cores, Snakemake's own"),
        row("job time per tomogram", job_s, "s", ", ".join(f"{r} {s:.1f}" for r, s in by_rule.items())),
        row("  in g(y)", network, "s", f"{tiles.n_tiles} tiles x {1000 * g_tile:.0f} ms (1 thread)"),
        row("  per-tomogram overhead outside the networks", overhead, "s", "job time - g(y); Snakemake stamps, 1 s resolution"),
        row("  interpreter and CLI start (cryogen info)", start["cli"], "s", "once per job"),
        row("  importing torch", start["torch"], "s", "once per network job and per Dask worker"),
    ]  # fmt: skip
    rows += target_rows(overhead)
    if on_rows:
        on_rows(rows)
    return rows
