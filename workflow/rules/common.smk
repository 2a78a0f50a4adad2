# Shared by all rules: the validated config, the tomogram sheet, output paths, code versions.
# The workflow holds no science: every stage is a `cryogen` CLI verb.

import ast
import csv
import hashlib
import importlib.util
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def _validate(data, schema, what):
    """snakemake.utils.validate, with a one-line message that names the offending key."""
    try:
        validate(data, schema)
    except WorkflowError as exc:
        err = exc.__context__  # the jsonschema ValidationError that validate() turned into this
        if not hasattr(err, "absolute_path"):
            err = next((a for a in exc.args if hasattr(a, "absolute_path")), None)
        if err is None:
            raise
        where = ".".join(str(p) for p in err.absolute_path)
        key = f"key {where}: " if where else ""
        message = err.message
        if err.validator in ("oneOf", "anyOf") and "description" in err.schema:  # jsonschema's words say nothing here
            message = f"{err.instance!r} is not valid: {err.schema['description']}"
        raise WorkflowError(f"{what}: {key}{message}") from None


_JSON_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def _coerce(value, schema):
    """Nested values given with --config arrive as text (`--config reconstruct='{map_steps: 3}'`
    gives '3'); read them as YAML where the schema wants a number, boolean or null."""
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                value[key] = _coerce(value[key], sub)
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(v, schema["items"]) for v in value]
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, str) and "string" not in types and any(t in _JSON_TYPES for t in types):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(parsed, tuple(_JSON_TYPES[t] for t in types if t in _JSON_TYPES)):
            if not isinstance(parsed, bool) or "boolean" in types:
                return parsed
    return value


_coerce(config, yaml.safe_load(Path(workflow.current_basedir.get_path_or_uri(secret_free=True), "../schemas/config.schema.yaml").read_text()))
_validate(config, "../schemas/config.schema.yaml", "invalid config")

# Used in shell commands directly, not as params, on purpose: params are tracked, and the
# interpreter's path, the device and the Dask cluster must not make finished results rerun.
RESULTS = config["results"].rstrip("/")
DEVICE = config["device"]
CRYOGEN = f"{shlex.quote(sys.executable)} -m cryogen.cli"
DASK_SCHEDULER = (
    f"--scheduler {shlex.quote(config['dask']['scheduler_address'])}" if config["dask"]["scheduler_address"] else ""
)

if not 0 <= config["chunk"]["overlap"] <= config["chunk"]["tile"] // 2:
    raise WorkflowError(
        f"invalid config: key chunk.overlap: {config['chunk']['overlap']} must be between 0 and half of chunk.tile ({config['chunk']['tile']})"
    )
if config["train"]["patch"] > config["chunk"]["tile"]:
    raise WorkflowError(
        f"invalid config: key train.patch: {config['train']['patch']} is larger than chunk.tile ({config['chunk']['tile']})"
    )
if config["train"]["steps"] is None and config["train"]["time_budget"] is None:
    raise WorkflowError("invalid config: key train: give steps, time_budget or both (both are null)")


# ----------------------------------------------------------------------------- tomogram sheet


@dataclass(frozen=True)
class Tomogram:
    name: str
    path: str
    tilt_min: float | str  # a number, or "auto" (then both are)
    tilt_max: float | str
    tilt_axis: str = "y"
    even: str | None = None
    odd: str | None = None
    voxel_size: float | None = None
    group: str = "dataset"
    train: bool = True
    truth: str | None = None


NUMBERS = ("tilt_min", "tilt_max", "voxel_size")
BOOLS = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


def _cell(column, text):
    """A sheet cell as the schema expects it; left as text where it does not convert, so that
    validation names the column and the value."""
    if column in NUMBERS:
        try:
            return float(text)
        except ValueError:
            return text
    if column == "train":
        return BOOLS.get(text.lower(), text)
    return text


def read_sheet(path):
    """Rows of the tab-separated sheet (comment lines start with #), validated."""
    sheet = Path(path)
    if not sheet.is_file():
        raise WorkflowError(f"tomogram sheet {sheet} not found (config key 'tomograms')")
    lines = [ln for ln in sheet.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    reader = csv.reader(lines, delimiter="\t")
    header = [h.strip() for h in next(reader)]
    rows = []
    for lineno, cells in enumerate(reader, start=2):
        if len(cells) > len(header):
            raise WorkflowError(f"tomogram sheet {sheet}: data row {lineno - 1} has {len(cells)} cells, the header {len(header)} (tab-separated?)")
        record = {h: _cell(h, c.strip()) for h, c in zip(header, cells) if c.strip() != ""}
        named = f" ({record['name']})" if isinstance(record.get("name"), str) else ""
        label = f"tomogram sheet {sheet}, data row {lineno - 1}{named}"
        _validate(record, "../schemas/tomograms.schema.yaml", label)
        autos = [record[k] == "auto" for k in ("tilt_min", "tilt_max")]
        if any(autos) and not all(autos):
            raise WorkflowError(f"{label}: tilt_min and tilt_max are both auto or both numbers, not {record['tilt_min']} and {record['tilt_max']}")
        if not any(autos) and record["tilt_min"] >= record["tilt_max"]:
            raise WorkflowError(f"{label}: tilt_min ({record['tilt_min']:g}) must be below tilt_max ({record['tilt_max']:g})")
        rows.append(Tomogram(**record))
    return rows


def demo_tomograms():
    d = config["demo"]
    lo, hi = d["tilt_range"]
    if lo >= hi:
        raise WorkflowError(f"invalid config: key demo.tilt_range: min ({lo:g}) must be below max ({hi:g})")
    return [
        Tomogram(
            name=f"demo{i}",
            path=f"{d['dir']}/demo{i}.mrc",
            tilt_min=float(lo),
            tilt_max=float(hi),
            truth=f"{d['dir']}/demo{i}_truth.mrc",
        )
        for i in range(1, d["count"] + 1)
    ]


SHEET = read_sheet(config["tomograms"])
DEMO = not SHEET
_names = [t.name for t in SHEET]
if len(set(_names)) != len(_names):
    raise WorkflowError(
        f"tomogram sheet {config['tomograms']}: names must be unique; repeated: "
        + ", ".join(sorted({n for n in _names if _names.count(n) > 1}))
    )
TOMOGRAMS = {t.name: t for t in (SHEET or demo_tomograms())}

GROUPS = {}
for _t in TOMOGRAMS.values():
    GROUPS.setdefault(_t.group, []).append(_t)
for _g, _members in GROUPS.items():
    if not any(t.train for t in _members):
        raise WorkflowError(f"tomogram sheet {config['tomograms']}: group {_g!r} has no tomogram with train=yes to train its prior on")


def tomo(wildcards):
    return TOMOGRAMS[wildcards.tomogram]


def training_tiles(group):
    return [f"{RESULTS}/{t.name}/tiles.zarr" for t in GROUPS[group] if t.train]


def prior_of(wildcards):
    return f"{RESULTS}/priors/{tomo(wildcards).group}/prior.pt"


def std_wanted():
    return config["reconstruct"]["samples"] > 0


# ----------------------------------------------------------------------------- rule inputs and options


def _chunk_inputs(wildcards):
    t = tomo(wildcards)
    return {"mrc": t.path, **({"even": t.even, "odd": t.odd} if t.even else {})}


def _tilt_options(t):
    tilt = "auto" if t.tilt_min == "auto" else f"{t.tilt_min:g} {t.tilt_max:g}"
    return f"--tilt-range {tilt} --tilt-axis {t.tilt_axis}"


def _chunk_options(wildcards):
    t = tomo(wildcards)
    opts = _tilt_options(t)
    if t.voxel_size is not None:
        opts += f" --voxel-size {t.voxel_size:g}"
    if t.even:
        opts += f" --halves {shlex.quote(t.even)} {shlex.quote(t.odd)}"
    return opts


def _budget():
    t = config["train"]
    opts = []
    if t["steps"] is not None:
        opts.append(f"--steps {t['steps']}")
    if t["time_budget"] is not None:
        opts.append(f"--time-budget {t['time_budget']:g}")
    return " ".join(opts)


def _report_inputs(wildcards):
    t = tomo(wildcards)
    return {"before": t.path, "after": f"{RESULTS}/{t.name}/restored.mrc", **({"truth": t.truth} if t.truth else {})}


def _report_options(wildcards, input):
    t = tomo(wildcards)
    opts = f"{_tilt_options(t)} --name {shlex.quote(t.name)}"
    if t.truth:
        opts += f" --truth {shlex.quote(input.truth)}"
    return opts


# ----------------------------------------------------------------------------- code versions
# Snakemake reruns a job when its params change, but it does not see the code of the package
# a shell command runs. Each stage gets as a param a digest of the source of the cryogen
# modules it runs (its entry modules and everything they import from cryogen, found by
# reading the import statements), so a new CryoGEN reruns exactly the stages whose code
# changed, and what follows them. cryogen/__init__.py (the version string) and cryogen/cli.py
# (thin argument parsing) are left out: a new version number alone reruns nothing.

_SKIP = {"cryogen", "cryogen.cli"}


def _imports(name, origin):
    tree = ast.parse(Path(origin).read_text(), filename=origin)
    package = name if origin.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "cryogen")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[: len(base) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "cryogen":
                continue
            found.add(mod)
            for a in node.names:  # `from . import x` may name a submodule
                found.add(f"{mod}.{a.name}")
    return found


def _source_file(name):
    """The .py file of module `name` of the cryogen package, found without importing it."""
    spec = importlib.util.find_spec("cryogen")  # imports only cryogen/__init__.py
    if spec is None or not spec.submodule_search_locations:
        return None
    parts = name.split(".")[1:]
    for base in spec.submodule_search_locations:
        for candidate in (Path(base, *parts).with_suffix(".py"), Path(base, *parts, "__init__.py")):
            if parts and candidate.is_file():
                return str(candidate)
    return None


def code_version(*entries):
    """Digest of the source of `entries` and of the cryogen modules they import, transitively."""
    found, todo = {}, list(entries)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found[name] = _source_file(name)
        if found[name]:
            todo.extend(sorted(_imports(name, found[name]) - found.keys()))
    digest = hashlib.sha256()
    sources = sorted((n, o) for n, o in found.items() if o and n not in _SKIP)
    if not sources:  # no readable sources: fall back to the version
        import cryogen

        return f"version-{cryogen.__version__}"
    for name, origin in sources:
        digest.update(name.encode() + b"\0" + Path(origin).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


CODE = {
    "simulate": code_version("cryogen.sim.simulate", "cryogen.io.mrc"),
    "chunk": code_version("cryogen.tiling"),
    "train": code_version("cryogen.method.loop"),
    "reconstruct": code_version("cryogen.restore.reconstruct", "cryogen.restore.parallel"),
    "stitch": code_version("cryogen.tiling"),
    "report": code_version("cryogen.qc.figures"),
    "export": code_version("cryogen.io.ome_zarr"),
}


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
