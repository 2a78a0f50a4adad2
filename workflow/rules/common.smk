# Shared by all rules: the validated config and tomogram sheet, output paths, input functions and
# the code digests that decide what reruns. The logic lives in cryogen.workflow (unit-tested);
# the workflow holds no science: every stage is a `cryogen` CLI verb.

import re
import shlex
import sys

from snakemake.exceptions import WorkflowError

from cryogen.errors import CryogenError
from cryogen.workflow import budget_options, check_config, load_dataset, load_schema, stage_digests

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

# The interpreter, the device and the Dask cluster reach the shell lines through the shell prefix,
# not as params: params are tracked, and these must not make finished results rerun. `cryogen` is
# this interpreter's CLI (the package the code versions were read from), whatever is on PATH.
_PREFIX = (
    f"set -euo pipefail; cryogen() ( exec {shlex.quote(sys.executable)} -m cryogen.cli \"$@\" ); "
    f"export CRYOGEN_DEVICE={shlex.quote(config['device'])}"
    f" CRYOGEN_SCHEDULER={shlex.quote(config['dask']['scheduler_address'] or '')}; "
)
shell.prefix(_PREFIX.replace("{", "{{").replace("}", "}}"))  # Snakemake formats the prefix


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
    return tomo(wildcards).chunk_options()


def train_budget():
    return budget_options(config["train"])


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
