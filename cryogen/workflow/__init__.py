"""What the Snakemake workflow imports (workflow/rules/common.smk): the config checks (config),
the tomogram sheet (sheet) and the code digests that decide what reruns (digests). Light on
purpose: no torch, so that Snakemake starts quickly. Holds no path of a run: the workflow passes
in the config, the sheet and the schema files."""

from .config import budget_options, check_config, coerce, load_schema, validate
from .digests import STAGES, code_version, sources, stage_digests
from .sheet import Dataset, Tomogram, demo_tomograms, load_dataset, read_sheet

__all__ = [
    "STAGES",
    "Dataset",
    "Tomogram",
    "budget_options",
    "check_config",
    "code_version",
    "coerce",
    "demo_tomograms",
    "load_dataset",
    "load_schema",
    "read_sheet",
    "sources",
    "stage_digests",
    "validate",
]
