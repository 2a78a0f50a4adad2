# Shared by all rules: the validated config and tomogram sheet, output paths, input functions and
# the code digests that decide what reruns. The logic lives in cryogen.workflow (unit-tested);
# the workflow holds no science: every stage is a `cryogen` CLI verb.

import re
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from cryogen.errors import CryogenError
from cryogen.workflow import budget_options, check_config, load_dataset, load_schema, stage_digests
from cryogen.workflow import resources as sizing

try:  # a problem in the config or the sheet stops the run with one line, no traceback
    check_config(config, load_schema(workflow.source_path("../schemas/config.schema.yaml")))
    DATASET = load_dataset(config, load_schema(workflow.source_path("../schemas/tomograms.schema.yaml")))
except CryogenError as exc:
    raise WorkflowError(str(exc)) from None

TOMOGRAMS = DATASET.tomograms
GROUPS = DATASET.groups
RESULTS = config["results"].rstrip("/")
# Code versions: a param of every rule, so that a new CryoGEN reruns the stages whose code changed.
CODE = stage_digests()
CONDA_ENV = "../envs/cryogen.yaml"  # every rule's `conda:`, used under --sdm conda

# The interpreter, the device and the Dask cluster reach the shell lines through the shell prefix,
# not as params: params are tracked, and these must not make finished results rerun. `cryogen` is
# this interpreter's CLI (the package the code versions were read from), whatever is on PATH.
# Under --sdm conda, it is the same package (this repository's, on PYTHONPATH) run by the python
# of the rules' environment, workflow/envs/cryogen.yaml, which holds CryoGEN's dependencies.
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    _CLI = f"PYTHONPATH={shlex.quote(workflow.basedir)}" '${PYTHONPATH:+:$PYTHONPATH} exec python'
else:
    _CLI = f"exec {shlex.quote(sys.executable)}"
_PREFIX = (
    f"set -euo pipefail; cryogen() ( {_CLI} -m cryogen.cli \"$@\" ); "
    f"export CRYOGEN_DEVICE={shlex.quote(config['device'])}"
    f" CRYOGEN_SCHEDULER={shlex.quote(config['dask']['scheduler_address'] or '')}; "
)
shell.prefix(_PREFIX.replace("{", "{{").replace("}", "}}"))  # Snakemake formats the prefix
# Every rule's shell starts with THREADS: a job's CPUs are its rule's threads (cryogen's verbs read
# OMP_NUM_THREADS: README, Threads), so a 1-thread job of a local --cores N run does not take all N.
# (The prefix is formatted once, without a job: it cannot name {threads}.)
THREADS = "export OMP_NUM_THREADS={threads}; "


def tomo(wildcards):
    return TOMOGRAMS[wildcards.tomogram]


def std_wanted():
    return config["reconstruct"]["samples"] > 0


# ----------------------------------------------------------------------------- rule inputs and options


def training_tiles(wildcards):
    return [f"{RESULTS}/{t.name}/tiles.zarr" for t in GROUPS[wildcards.group] if t.train]


def prior_of(wildcards):
    return f"{RESULTS}/priors/{tomo(wildcards).group}/prior.pt"


def chunk_inputs(wildcards):
    t = tomo(wildcards)
    tilt = {"tilt": t.tilt_file} if t.tilt_file else {}  # an edited tilt file reruns chunk
    return {"mrc": t.path, **({"even": t.even, "odd": t.odd} if t.even else {}), **tilt}


def chunk_options(wildcards):
    return tomo(wildcards).chunk_options(config["ctf"])


def backproject_inputs(wildcards):
    t = tomo(wildcards)
    return {"stack": t.tilt_series, "tilt": t.tilt_file}


def backproject_options(wildcards):
    return tomo(wildcards).backproject_options()


def train_budget():
    return budget_options(config["train"])


# ----------------------------------------------------------------------------- cluster requests
# mem_mb and runtime of the per-tomogram rules grow with the tomogram (its header) and with the
# job's attempt (a retry asks for more); figures and formulas in cryogen/workflow/resources.py.
# A set-resources value (profile or command line) replaces them.

_SHAPES = {}


def tomogram_shape(wildcards):
    path = tomo(wildcards).path
    if path not in _SHAPES:
        shape = sizing.tomogram_shape(path)
        if shape is None:  # not made yet (the demo's): sized as typical until it exists
            return None
        _SHAPES[path] = shape
    return _SHAPES[path]


def mem_mb_of(stage):
    def mem_mb(wildcards, attempt, threads):
        return sizing.mem_mb(
            stage,
            tomogram_shape(wildcards),
            attempt,
            workers=threads if stage == "reconstruct" else 1,  # its Dask worker processes
            tile=config["chunk"]["tile"],
            export_chunk=config["export"]["chunk"],
            truth=bool(tomo(wildcards).truth),
            batch=config["reconstruct"]["batch"],
        )

    return mem_mb


def runtime_of(stage):
    def runtime(wildcards, attempt):
        rc = config["reconstruct"]
        steps, passes = sizing.solve_cost(
            rc["map_steps"], rc["samples"], rc["flips"], rc["energy"], rc["coarse_cutoff"]
        )
        recon = stage == "reconstruct"
        return sizing.runtime(stage, tomogram_shape(wildcards), attempt, steps if recon else 0, passes if recon else 1)

    return runtime


def report_inputs(wildcards):
    t = tomo(wildcards)
    tilt = {"tilt": t.tilt_file} if t.tilt_file else {}
    return {"before": t.path, "after": f"{RESULTS}/{t.name}/restored.mrc", **({"truth": t.truth} if t.truth else {}), **tilt}


def report_options(wildcards, input):
    t = tomo(wildcards)
    opts = f"{t.tilt_options()} --name {shlex.quote(t.name)}"
    if t.truth:
        opts += f" --truth {shlex.quote(input.truth)}"
    return opts


# ----------------------------------------------------------------------------- targets


def final_outputs():
    out = []
    for t in TOMOGRAMS.values():
        out += [
            f"{RESULTS}/{t.name}/restored.mrc",
            f"{RESULTS}/{t.name}/report/slices.png",
            f"{RESULTS}/{t.name}/report/spectra.png",
            f"{RESULTS}/{t.name}/report/summary.json",
        ]
        if std_wanted():
            out.append(f"{RESULTS}/{t.name}/restored_std.mrc")
        if config["export"]["ome_zarr"]:
            out.append(f"{RESULTS}/{t.name}/restored.ome.zarr")
    for g in GROUPS:
        out.append(f"{RESULTS}/priors/{g}/prior_curves.png")
    return out


wildcard_constraints:
    tomogram="|".join(sorted(map(re.escape, TOMOGRAMS), key=len, reverse=True)),
    group="|".join(sorted(map(re.escape, GROUPS), key=len, reverse=True)),
