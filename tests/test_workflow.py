"""The Snakemake workflow: the demo end to end, config and sheet validation, reruns of exactly
the stages a change affects, and `snakemake --lint`. Every test starts Snakemake (marker
`workflow`); the logic it calls is unit-tested in tests/test_workflow_{config,sheet,digests}.py.

Workflow runs are real `snakemake` subprocesses on a copy of the workflow (Snakefile, workflow/,
config/, profiles/) in a temporary folder, with tiny settings, so the whole module takes a few
minutes on 2 cores. What ran is read from Snakemake's own log: the "Job stats" table and the
wildcards of each job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from cryogen.io.mrc import MrcReader, write_mrc
from cryogen.model.imaging import Wedge
from cryogen.sim.simulate import simulate

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "profiles")

# tiny settings: a 32 x 64 x 64 tomogram is 9 tiles of 32^3
TINY = {
    "demo": {"count": 2, "shape": [32, 64, 64], "tilt_range": [-60, 60], "snr": 0.5, "seed": 1, "voxel_size": 10.0},
    "chunk": {"tile": 32, "overlap": 8},
    "train": {"steps": 5, "time_budget": None, "batch": 2, "patch": 16, "seed": 0},
    "reconstruct": {"map_steps": 1, "samples": 0, "prior_weight": 1.0, "batch": 2, "seed": 0},
}
SHEET_HEADER = "name\tpath\ttilt_min\ttilt_max\ttilt_axis\tgroup\ttrain\n"


# ----------------------------------------------------------------------------- helpers


def make_workspace(path: Path, config_updates: dict | None = None) -> Path:
    """A copy of the workflow with the tiny settings merged into config/config.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, path / name)
    cfg = yaml.safe_load((path / "config/config.yaml").read_text())
    for key, value in {**TINY, **(config_updates or {})}.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    (path / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def set_config(ws: Path, section: str, **values) -> None:
    cfg = yaml.safe_load((ws / "config/config.yaml").read_text())
    cfg[section].update(values)
    (ws / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


class Run:
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.proc = proc
        self.code = proc.returncode
        self.log = proc.stdout + proc.stderr
        self.jobs = job_stats(self.log)
        self.ran = job_wildcards(self.log)

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return f"snakemake exit {self.code}; jobs {dict(self.jobs)}\n{self.log[-6000:]}"


def snakemake(ws: Path, *args: str, env: dict | None = None, timeout: float = 600) -> Run:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--nocolor", *args]
    proc = subprocess.run(
        cmd, cwd=ws, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    return Run(proc)


def job_stats(log: str) -> Counter:
    """Jobs per rule from Snakemake's 'Job stats' table (empty when nothing is to be done)."""
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+\d+", log, re.S)
    if not m:
        return Counter()
    return Counter({name: int(n) for name, n in (line.split() for line in m.group(1).splitlines() if line.strip())})


def job_wildcards(log: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job Snakemake announced."""
    ran, rule = set(), None
    for line in log.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            rule = m.group(1)
            ran.add((rule, ""))
            continue
        m = re.match(r"^\s+wildcards: (.*)$", line)
        if m and rule:
            ran.discard((rule, ""))
            ran.add((rule, m.group(1).strip()))
            rule = None
    return ran


def mtimes(ws: Path, *paths: str) -> dict[str, int]:
    return {p: (ws / p).stat().st_mtime_ns for p in paths}


def outputs_of(name: str, group: str = "g1") -> list[str]:
    return [
        f"results/{name}/tiles.zarr/zarr.json",
        f"results/{name}/recon.zarr/zarr.json",
        f"results/{name}/restored.mrc",
        f"results/{name}/report/slices.png",
        f"results/priors/{group}/prior.pt",
    ]


def write_tomogram(path: Path, seed: int, shape=(32, 64, 64)) -> None:
    sim = simulate(shape, Wedge(-60, 60), snr=0.5, seed=seed, voxel_size=10.0)
    write_mrc(path, sim.observation, 10.0)


# ----------------------------------------------------------------------------- the demo


def test_demo_end_to_end_with_report(tmp_path):
    """An empty sheet runs the simulated demo through every stage (reconstruct with a Dask
    LocalCluster of 2 workers, with posterior samples: an uncertainty map), registers the
    figures for --report, and a rerun does nothing."""
    ws = make_workspace(tmp_path / "demo", {"reconstruct": {**TINY["reconstruct"], "samples": 1}})
    run = snakemake(ws)
    assert run.code == 0, run
    assert run.jobs == Counter(simulate=2, chunk=2, train=1, reconstruct=2, stitch=2, report=2, all=1), run
    for name in ("demo1", "demo2"):
        for out in ("restored", "restored_std"):
            with MrcReader(ws / f"results/{name}/{out}.mrc") as r:
                assert r.shape == (32, 64, 64) and r.info.voxel_size == (10.0, 10.0, 10.0)
                assert np.isfinite(r.read_all()).all()
        for png in ("slices", "spectra"):
            assert (ws / f"results/{name}/report/{png}.png").read_bytes()[:4] == b"\x89PNG"
        summary = json.loads((ws / f"results/{name}/report/summary.json").read_text())
        assert summary["shape_zyx"] == [32, 64, 64] and set(summary["metrics"]) == {"before", "after"}
        # the truth-free measures real data are judged by (their values: test_report; 5 training steps fill nothing)
        measures = summary["measures"]
        assert measures["crop_zyx"] == [32, 64, 64] and None not in measures["wedge_fill"].values()
        assert 0.5 < measures["consistency"] <= 1.0 + 1e-9
        log = (ws / f"results/{name}/logs/reconstruct.log").read_text()
        assert "local Dask cluster of 2 worker processes" in log and "18/18 tiles (100%" in log, log
    assert (ws / "results/priors/dataset/prior_curves.png").read_bytes()[:4] == b"\x89PNG"

    again = snakemake(ws)
    assert again.code == 0 and "Nothing to be done" in again.log and not again.jobs, again

    rep = snakemake(ws, "--report", "report.html")
    assert rep.code == 0, rep
    html = (ws / "report.html").read_text(errors="replace")
    for needle in ("slices.png", "spectra.png", "prior_curves.png"):
        assert needle in html


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "edit, needles",
    [
        (lambda c: c["chunk"].update(tiel=64), ["chunk", "tiel"]),
        (lambda c: c.update(resutls="x"), ["resutls"]),
        (
            lambda c: c["reconstruct"].update(map_steps="ten"),
            ["reconstruct.map_steps", "'ten' is not of type 'integer'"],
        ),
        (lambda c: c["train"].update(batch=0), ["train.batch", "minimum"]),
        (lambda c: c["chunk"].update(overlap=20), ["chunk.overlap", "half of chunk.tile"]),
        (lambda c: c.update(device="gpu"), ["device", "'gpu' is not one of"]),
    ],
    ids=["unknown-key", "unknown-top-key", "wrong-type", "out-of-range", "overlap", "device"],
)
def test_bad_config_stops_with_a_message_naming_the_key(tmp_path, edit, needles):
    ws = make_workspace(tmp_path / "ws")
    cfg = yaml.safe_load((ws / "config/config.yaml").read_text())
    edit(cfg)
    (ws / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    run = snakemake(ws, "-n")
    assert run.code != 0, run
    assert "invalid config" in run.log, run
    for needle in needles:
        assert needle in run.log, (needle, run)
    assert not (ws / "results").exists()


@pytest.mark.parametrize(
    "rows, needles",
    [
        (
            "a\tdata/a.mrc\tsixty\t60\ty\tg1\tyes\n",
            ["data row 1 (a)", "key tilt_min: 'sixty' is not valid: lowest tilt", "or auto"],
        ),
        (
            "a\tdata/a.mrc\tauto\t60\ty\tg1\tyes\n",
            ["data row 1 (a)", "tilt_min and tilt_max are both auto or both numbers"],
        ),
        ("a\tdata/a.mrc\t-60\t60\tz\tg1\tyes\n", ["data row 1 (a)", "tilt_axis", "'z' is not one of"]),
        ("a\tdata/a.mrc\t60\t-60\ty\tg1\tyes\n", ["data row 1 (a)", "tilt_min (60) must be below tilt_max (-60)"]),
        ("a\tdata/a.mrc\t-60\t60\ty\tg1\tyes\na\tdata/b.mrc\t-60\t60\ty\tg1\tyes\n", ["names must be unique", "a"]),
        ("a b\tdata/a.mrc\t-60\t60\ty\tg1\tyes\n", ["data row 1 (a b)", "name", "does not match"]),
        ("a\tdata/a.mrc\t-60\t60\ty\tg1\tmaybe\n", ["data row 1 (a)", "train", "'maybe' is not of type 'boolean'"]),
        ("a\tdata/a.mrc\t-60\t60\ty\tg1\tno\n", ["group 'g1' has no tomogram with train=yes"]),
    ],
    ids=["number", "half-auto", "axis", "tilt-order", "duplicate", "name", "bool", "no-training"],
)
def test_bad_sheet_stops_with_a_message_naming_row_and_column(tmp_path, rows, needles):
    ws = make_workspace(tmp_path / "ws")
    (ws / "config/tomograms.tsv").write_text(SHEET_HEADER + rows)
    run = snakemake(ws, "-n")
    assert run.code != 0, run
    for needle in needles:
        assert needle in run.log, (needle, run)


def test_sheet_unknown_column_and_missing_file(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    (ws / "config/tomograms.tsv").write_text("name\tpath\ttilt_min\ttilt_max\tsnr\na\tdata/a.mrc\t-60\t60\t3\n")
    run = snakemake(ws, "-n")
    assert run.code != 0 and "'snr' was unexpected" in run.log, run
    (ws / "config/tomograms.tsv").write_text("# a comment\nname\tpath\ttilt_min\ttilt_max\n\na\tdata/a.mrc\t-60\t60\n")
    run = snakemake(ws, "-n")
    assert run.code != 0 and "data/a.mrc" in run.log and "Missing input files" in run.log, run


# ----------------------------------------------------------------------------- reruns


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A finished run over a sheet of two tomograms (a, b) in group g1, plus a third (c) on disk."""
    ws = make_workspace(tmp_path_factory.mktemp("rerun") / "base")
    (ws / "data").mkdir()
    for seed, name in enumerate("abc", start=11):
        write_tomogram(ws / f"data/{name}.mrc", seed)
    (ws / "config/tomograms.tsv").write_text(
        SHEET_HEADER + "a\tdata/a.mrc\t-60\t60\ty\tg1\tyes\nb\tdata/b.mrc\t-60\t60\ty\tg1\tyes\n"
    )
    run = snakemake(ws, *FAST)
    assert run.code == 0, run
    assert run.jobs == Counter(chunk=2, train=1, reconstruct=2, stitch=2, report=2, all=1), run
    return ws


# serial reconstruct (1 thread: no Dask start-up) keeps the rerun tests quick; Dask is tested above
FAST = ("--set-threads", "reconstruct=1", "train=2")


def copy_of(base: Path, tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(base, ws, symlinks=True)  # keeps mtimes and Snakemake's metadata
    return ws


def test_no_change_runs_nothing(base, tmp_path):
    ws = copy_of(base, tmp_path)
    dry = snakemake(ws, *FAST, "-n")
    assert dry.code == 0 and "Nothing to be done" in dry.log and not dry.jobs, dry
    run = snakemake(ws, *FAST)
    assert run.code == 0 and "Nothing to be done" in run.log and not run.jobs, run


def test_map_steps_change_reruns_only_reconstruct_stitch_report(base, tmp_path):
    ws = copy_of(base, tmp_path)
    kept = mtimes(ws, "results/a/tiles.zarr/zarr.json", "results/b/tiles.zarr/zarr.json", "results/priors/g1/prior.pt")
    set_config(ws, "reconstruct", map_steps=2)
    run = snakemake(ws, *FAST)
    assert run.code == 0, run
    assert run.jobs == Counter(reconstruct=2, stitch=2, report=2, all=1), run
    assert mtimes(ws, *kept) == kept
    again = snakemake(ws, *FAST, "-n")
    assert "Nothing to be done" in again.log, again
    # the same value given on the command line (where nested values arrive as text) is no change
    same = snakemake(ws, *FAST, "-n", "--config", "reconstruct={map_steps: 2}")
    assert same.code == 0 and "Nothing to be done" in same.log, same


def _add(ws: Path, row: str) -> None:
    with open(ws / "config/tomograms.tsv", "a") as f:
        f.write(row)


def test_new_tomogram_in_its_own_group_touches_nothing_else(base, tmp_path):
    ws = copy_of(base, tmp_path)
    before = mtimes(ws, *outputs_of("a"), *outputs_of("b"))
    _add(ws, "c\tdata/c.mrc\t-60\t60\ty\tg2\tyes\n")
    run = snakemake(ws, *FAST)
    assert run.code == 0, run
    assert run.jobs == Counter(chunk=1, train=1, reconstruct=1, stitch=1, report=1, all=1), run
    assert {w for _, w in run.ran} == {"tomogram=c", "group=g2", ""}, run.ran
    assert mtimes(ws, *before) == before
    assert (ws / "results/priors/g2/prior.pt").exists() and (ws / "results/c/restored.mrc").exists()


def test_new_tomogram_that_does_not_train_reuses_the_prior(base, tmp_path):
    ws = copy_of(base, tmp_path)
    before = mtimes(ws, *outputs_of("a"), *outputs_of("b"))
    _add(ws, "c\tdata/c.mrc\t-60\t60\ty\tg1\tno\n")
    run = snakemake(ws, *FAST)
    assert run.code == 0, run
    assert run.jobs == Counter(chunk=1, reconstruct=1, stitch=1, report=1, all=1), run
    assert {w for _, w in run.ran} == {"tomogram=c", ""}, run.ran
    assert mtimes(ws, *before) == before


def test_new_training_tomogram_retrains_its_group(base, tmp_path):
    """Where the sheet ties the prior to the new tomogram (same group, train=yes), the prior is
    retrained and the group's tomograms are reconstructed again; their tiles are not redone."""
    ws = copy_of(base, tmp_path)
    tiles = mtimes(ws, "results/a/tiles.zarr/zarr.json", "results/b/tiles.zarr/zarr.json")
    _add(ws, "c\tdata/c.mrc\t-60\t60\ty\tg1\tyes\n")
    run = snakemake(ws, *FAST)
    assert run.code == 0, run
    assert run.jobs == Counter(chunk=1, train=1, reconstruct=3, stitch=3, report=3, all=1), run
    assert ("chunk", "tomogram=c") in run.ran and mtimes(ws, *tiles) == tiles


def _package_copy(tmp_path: Path) -> Path:
    import cryogen

    pkg = tmp_path / "pkg"
    shutil.copytree(Path(cryogen.__file__).parent, pkg / "cryogen", ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


@pytest.mark.parametrize(
    "module, expected",
    [
        ("restore/reconstruct.py", Counter(reconstruct=2, stitch=2, report=2, all=1)),
        ("qc/figures.py", Counter(report=2, all=1)),
        ("model/nets.py", Counter(train=1, reconstruct=2, stitch=2, report=2, all=1)),
        ("__init__.py", Counter()),  # a new version number alone changes no stage's code
    ],
)
def test_new_package_code_reruns_the_stages_it_affects(base, tmp_path, module, expected):
    """A new CryoGEN (here: a copy of the package, first on PYTHONPATH, with one module
    changed) reruns the stages whose code changed, and what follows them; nothing else."""
    ws = copy_of(base, tmp_path)
    pkg = _package_copy(tmp_path)
    with open(pkg / "cryogen" / module, "a") as f:
        f.write("\n# a new version\n" if module != "__init__.py" else "\n__version__ = '99.0'\n")
    env = {"PYTHONPATH": str(pkg)}
    probe = subprocess.run(
        [sys.executable, "-c", "import cryogen; print(cryogen.__file__)"],
        cwd=ws,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == str(pkg / "cryogen" / "__init__.py")
    run = snakemake(ws, *FAST, env=env)
    assert run.code == 0, run
    assert run.jobs == expected, run
    if expected:
        again = snakemake(ws, *FAST, "-n", env=env)
        assert "Nothing to be done" in again.log, again


def test_a_defocus_rechunks_its_tomogram_and_the_optics_touch_no_other(base, tmp_path):
    """The sheet's defocus column reaches `cryogen chunk --defocus` with config key ctf's optics;
    new optics change nothing while no row gives a defocus; a row that gains one is re-chunked
    (and its group retrained), the other row's tiles are kept."""
    ws = copy_of(base, tmp_path)
    set_config(ws, "ctf", wiener=0.05)
    dry = snakemake(ws, *FAST, "-n")
    assert dry.code == 0 and "Nothing to be done" in dry.log, dry
    (ws / "config/tomograms.tsv").write_text(
        SHEET_HEADER.rstrip("\n") + "\tdefocus\n"
        "a\tdata/a.mrc\t-60\t60\ty\tg1\tyes\t3\nb\tdata/b.mrc\t-60\t60\ty\tg1\tyes\t\n"
    )
    dry = snakemake(ws, *FAST, "-n", "-p")
    assert dry.code == 0, dry
    assert dry.jobs == Counter(chunk=1, train=1, reconstruct=2, stitch=2, report=2, all=1), dry
    assert ("chunk", "tomogram=a") in dry.ran, dry
    assert "--defocus 3 --amplitude-contrast 0.07 --voltage 300 --cs 2.7 --wiener 0.05" in dry.log, dry


def test_sheet_halves(tmp_path):
    """even/odd halves go together, and they reach `cryogen chunk --halves`."""
    ws = make_workspace(tmp_path / "ws")
    (ws / "data").mkdir()
    for name in ("a", "a_even", "a_odd"):
        (ws / f"data/{name}.mrc").write_bytes(b"")
    header = "name\tpath\ttilt_min\ttilt_max\teven\todd\n"
    (ws / "config/tomograms.tsv").write_text(header + "a\tdata/a.mrc\t-60\t60\tdata/a_even.mrc\t\n")
    run = snakemake(ws, "-n")
    assert run.code != 0 and "data row 1 (a)" in run.log and "'odd' is a dependency of 'even'" in run.log, run

    (ws / "config/tomograms.tsv").write_text(header + "a\tdata/a.mrc\t-60\t60\tdata/a_even.mrc\tdata/a_odd.mrc\n")
    run = snakemake(ws, "-n", "-p", "results/a/tiles.zarr")
    assert run.code == 0 and "--halves data/a_even.mrc data/a_odd.mrc" in run.log, run


def test_chunk_beads_false_reaches_chunk_as_no_beads(tmp_path):
    """Gold fiducials are looked for by default; config chunk.beads false asks chunk not to."""
    ws = make_workspace(tmp_path / "ws")
    (ws / "data").mkdir()
    (ws / "data/a.mrc").write_bytes(b"")
    (ws / "config/tomograms.tsv").write_text("name\tpath\ttilt_min\ttilt_max\na\tdata/a.mrc\t-60\t60\n")
    run = snakemake(ws, "-n", "-p", "results/a/tiles.zarr")
    assert run.code == 0 and "cryogen chunk" in run.log and "--no-beads" not in run.log, run
    run = snakemake(ws, "-n", "-p", "results/a/tiles.zarr", "--config", "chunk={beads: false}")
    assert run.code == 0 and "--no-beads" in run.log, run


def test_sheet_auto_tilt_range_reaches_chunk_and_report(tmp_path):
    """tilt_min/tilt_max 'auto' make chunk (and the report's spectra) read the range off the wedge."""
    ws = make_workspace(tmp_path / "ws")
    (ws / "data").mkdir()
    (ws / "data/a.mrc").write_bytes(b"")
    (ws / "config/tomograms.tsv").write_text("name\tpath\ttilt_min\ttilt_max\na\tdata/a.mrc\tauto\tauto\n")
    run = snakemake(ws, "-n", "-p")
    assert run.code == 0, run
    chunk_cmds = [ln for ln in run.log.splitlines() if "cryogen chunk" in ln]
    report_cmds = [ln for ln in run.log.splitlines() if "cryogen report" in ln]
    assert chunk_cmds and all("--tilt-range auto --tilt-axis y" in ln for ln in chunk_cmds), run
    assert report_cmds and all("--tilt-range auto" in ln for ln in report_cmds), run


def test_export_switch_adds_ome_zarr_and_reruns_nothing_else(base, tmp_path):
    """export.ome_zarr: true adds only the export jobs; their OME-Zarr holds the restored volume."""
    import zarr

    from cryogen.io.mrc import read_mrc

    ws = copy_of(base, tmp_path)
    kept = mtimes(ws, *outputs_of("a"), *outputs_of("b"))
    set_config(ws, "export", ome_zarr=True)
    run = snakemake(ws, *FAST)
    assert run.code == 0, run
    assert run.jobs == Counter(export=2, all=1), run
    assert mtimes(ws, *kept) == kept
    level0 = zarr.open_group(str(ws / "results/a/restored.ome.zarr"), mode="r")["0"][:]
    restored, _ = read_mrc(ws / "results/a/restored.mrc")
    assert np.array_equal(level0, restored)


# ----------------------------------------------------------------------------- lint


def test_snakemake_lint_is_clean(tmp_path):
    """No finding: every rule names its conda environment (workflow/envs/), has a log, and the
    functions live in common.smk (what the Snakemake workflow catalog checks too)."""
    ws = make_workspace(tmp_path / "ws")
    run = snakemake(ws, "--lint")
    findings = set(re.findall(r"^    \* (.+?):?$", run.log, re.M))
    assert run.code == 0 and "Lints for" not in run.log and not findings, run
