"""The demo on a real SLURM: `snakemake --profile slurm` submits every job through sbatch.

The test starts a single-node SLURM on this machine (Debian's packages, installed when missing
and CRYOGEN_SLURM_TEST=1 or CI=true; see slurm_harness.py), runs the demo workflow with tiny
settings through the repository's own profile (./slurm, found by the bare `--profile slurm`), and
checks that every job went through sbatch and completed, that each tomogram's stitch and report
ran as one job (the workflow profile's group), that train and reconstruct asked for a GPU,
that reconstruct ran its Dask cluster inside its SLURM job, and that the outputs are right.
Where SLURM cannot start it skips, saying why; on CI (CI=true) that is a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from slurm_harness import SlurmCluster, SlurmUnavailable
from test_workflow import REPO, Run, make_workspace

from cryogen.io.mrc import MrcReader

pytestmark = pytest.mark.slurm

ON_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def slurm(tmp_path_factory):
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        if ON_CI:
            pytest.fail(f"SLURM must run on CI but could not start: {exc}")
        pytest.skip(f"no SLURM here: {exc}")
    yield cluster
    cluster.stop()


def test_demo_runs_through_sbatch(slurm, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    shutil.copytree(REPO / "slurm", ws / "slurm")  # the repository root, where `--profile slurm` finds it
    cmd = [
        "timeout",
        "-k",
        "15",
        "480",
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "slurm",
        "--nocolor",
        # a CI cluster has no accounting (sacct): poll with squeue, and poll often
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        # what a site adapts to its nodes: this one has 2 cores and a fake GPU
        "--set-threads",
        "train=2",
        "reconstruct=2",
        "--set-resources",
        "train:gpu=1",
        "train:mem_mb=2000",
        "train:runtime=10",
        "reconstruct:gpu=1",
        "reconstruct:mem_mb=3000",
        "reconstruct:runtime=10",
    ]
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, timeout=540)
    run = Run(proc)
    assert run.code == 0, f"{run}\n{slurm.log_tail()}"
    expected = Counter(simulate=2, chunk=2, train=1, reconstruct=2, stitch=2, report=2, all=1)
    assert run.jobs == expected, run

    # every job but the local `all` went through sbatch, each tomogram's stitch and report as one
    # job (group `tomogram`), and SLURM ran it to completion
    submitted = [line for line in run.log.splitlines() if "has been submitted with SLURM jobid" in line]
    assert len(submitted) == sum(expected.values()) - 1 - 2, run
    jobs = [j for j in slurm.jobs() if j.get("WorkDir") == str(ws)]
    assert len(jobs) == len(submitted), (jobs, run)
    assert {j["JobState"] for j in jobs} == {"COMPLETED"}, jobs
    by_rule = Counter(j.get("Comment", "").split("_wildcards")[0].removeprefix("rule_") for j in jobs)
    grouped = {"stitch", "report", "all"}
    assert by_rule == Counter({k: v for k, v in expected.items() if k not in grouped}, tomogram_report_stitch=2), jobs
    for j in jobs:
        gpu = "gpu" in (j.get("TresPerJob", "") + j.get("TresPerNode", ""))
        assert gpu == j["Comment"].startswith(("rule_train", "rule_reconstruct")), j

    # the outputs, and reconstruct's Dask cluster inside its SLURM job
    for name in ("demo1", "demo2"):
        with MrcReader(ws / f"results/{name}/restored.mrc") as r:
            assert r.shape == (32, 64, 64) and np.isfinite(r.read_all()).all()
        summary = json.loads((ws / f"results/{name}/report/summary.json").read_text())
        assert summary["metrics"]["after"]["cc"] is not None
        assert (ws / f"results/{name}/report/spectra.png").read_bytes()[:4] == b"\x89PNG"
        log = (ws / f"results/{name}/logs/reconstruct.log").read_text()
        assert "local Dask cluster of 2 worker processes" in log and "(100%" in log, log
    assert (ws / "results/priors/dataset/prior_curves.png").exists()

    # nothing changed: nothing is submitted
    again = subprocess.run([*cmd[4:], "-n"], cwd=ws, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stderr[-3000:]
