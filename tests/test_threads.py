"""Every verb uses the CPU threads it is given (cryogen.runtime): --threads, else OMP_NUM_THREADS,
else SLURM_CPUS_PER_TASK, else the process's CPU affinity, never more than the affinity holds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cryogen.errors import CryogenError
from cryogen.runtime import THREAD_VARIABLES, Threads, cpus_given, resolve_threads


def test_the_option_wins_and_is_capped_at_the_cpus_given():
    env = {"OMP_NUM_THREADS": "3", "SLURM_CPUS_PER_TASK": "6"}
    assert resolve_threads(2, env, given=8).count == 2
    capped = resolve_threads(16, env, given=8)
    assert capped.count == 8 and "capped at the 8 CPUs" in capped.source


def test_omp_num_threads_before_slurm_before_the_affinity():
    assert resolve_threads(None, {"OMP_NUM_THREADS": "3", "SLURM_CPUS_PER_TASK": "6"}, given=8) == Threads(
        3, "OMP_NUM_THREADS=3"
    )
    assert resolve_threads(None, {"SLURM_CPUS_PER_TASK": "6"}, given=8).count == 6
    assert resolve_threads(None, {"OMP_NUM_THREADS": " ", "SLURM_CPUS_PER_TASK": "6"}, given=8).count == 6
    assert resolve_threads(None, {"OMP_NUM_THREADS": "4,2"}, given=8).count == 4  # OpenMP's nested list
    assert resolve_threads(None, {}, given=5).count == 5
    assert resolve_threads(None, {"SLURM_CPUS_PER_TASK": "16"}, given=4).count == 4


def test_the_default_is_the_affinity_of_this_process():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert cpus_given() == expected
    assert resolve_threads(None, {}).count == expected


@pytest.mark.parametrize(("env", "option", "needle"), [
    ({"OMP_NUM_THREADS": "all"}, None, "OMP_NUM_THREADS must be a positive whole number of CPU threads, not 'all'"),
    ({"SLURM_CPUS_PER_TASK": "0"}, None, "SLURM_CPUS_PER_TASK must be a positive"),
    ({}, 0, "threads must be at least 1, not 0"),
])  # fmt: skip
def test_bad_counts_are_one_line_errors(env, option, needle):
    with pytest.raises(CryogenError, match=needle):
        resolve_threads(option, env, given=4)


@pytest.fixture
def restore_threads(monkeypatch):
    """The CLI run in this process sets the thread variables and torch's threads: put them back."""
    import torch

    for name in THREAD_VARIABLES:
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_every_verb_has_the_option(capsys):
    from cryogen.cli.main import VERBS, build_parser

    for verb in VERBS:
        name = verb.__name__.rsplit(".", 1)[-1]
        with pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        assert "--threads N" in capsys.readouterr().out, name


def test_a_network_verb_says_its_threads_and_bad_input_stays_one_line(run_cli, restore_threads, monkeypatch, tmp_path):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, _, err = run_cli("train", tmp_path / "none.zarr", "--out", tmp_path / "p.pt")
    assert code == 1 and err.strip().count("\n") == 0 and "none.zarr" in err
    monkeypatch.setenv("OMP_NUM_THREADS", "two")
    code, _, err = run_cli("info", tmp_path / "none.mrc")
    assert (
        code == 1
        and err.strip()
        == "cryogen info: error: OMP_NUM_THREADS must be a positive whole number of CPU threads, not 'two'"
    )


PROBE = """
import sys, torch
from cryogen.cli.main import main
code = main(sys.argv[1:])
print("probe", code, torch.get_num_threads(), torch.get_num_interop_threads())
"""


def _cli(argv: list[str], taskset: bool = False) -> subprocess.CompletedProcess:
    """The CLI in a fresh process without any thread variable (as a plain shell would start it)."""
    env = {k: v for k, v in os.environ.items() if k not in (*THREAD_VARIABLES, "SLURM_CPUS_PER_TASK")}
    prefix = ["taskset", "-c", "0"] if taskset else []
    return subprocess.run(
        [*prefix, sys.executable, "-c", PROBE, *map(str, argv)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture
def store(tmp_path):
    from cryogen.io.mrc import write_mrc
    from cryogen.model.imaging import Wedge
    from cryogen.tiling import chunk

    mrc = tmp_path / "t.mrc"
    write_mrc(mrc, np.random.default_rng(0).standard_normal((16, 28, 28)).astype(np.float32), 10.0)
    chunk(mrc, tmp_path / "t.zarr", tile=16, overlap=4, wedge=Wedge(-60, 60), progress=False, check_geometry=False)
    return tmp_path / "t.zarr"


@pytest.mark.integration
def test_train_and_reconstruct_run_with_the_threads_given(store, tmp_path):
    """In a process of its own: --threads 1 sets torch's intra- and inter-op threads and says so;
    reconstruct never starts more Dask workers than threads; under `taskset -c 0` (one CPU in the
    affinity mask, as in a one-CPU SLURM job) the default is 1."""
    train = ["train", store, "--steps", "1", "--batch", "1", "--patch", "16", "--device", "cpu", "--resume"]
    res = _cli([*train, "--out", tmp_path / "p.pt", "--threads", "1"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "probe 0 1 1", res.stdout
    lines = res.stderr.splitlines()
    assert lines[0] == "cryogen train: using 1 CPU thread (--threads 1)" and "no checkpoint" in lines[1], lines

    res = _cli(["reconstruct", store, "--prior", tmp_path / "p.pt", "--out", tmp_path / "r.zarr", "--workers", "3",
                "--device", "cpu", "--threads", "1"])  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "--workers 3 is more than the CPU threads given; using 1" in res.stderr
    assert res.stdout.splitlines()[-1] == "probe 0 1 1" and (tmp_path / "r.zarr").exists()

    if shutil.which("taskset") is None or cpus_given() < 2:
        pytest.skip("needs taskset and 2 CPUs to tell the affinity from the machine")
    res = _cli([*train, "--out", tmp_path / "q.pt"], taskset=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "probe 0 1 1", res.stdout
    assert "cryogen train: using 1 CPU thread (the 1 CPU this process may use)" in res.stderr
    res = _cli([*train, "--out", tmp_path / "s.pt"])
    assert f"using {cpus_given()} CPU threads (the {cpus_given()} CPUs this process may use)" in res.stderr
