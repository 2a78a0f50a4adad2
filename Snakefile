# CryoGEN: restore every tomogram of a dataset (noise and missing wedge) under a learned prior.
#
#   snakemake --cores all                   # the demo, or the tomograms of config/tomograms.tsv
#   snakemake --profile slurm               # on a SLURM cluster (see README.md; the site: slurm/)
#   snakemake --report report.html         # figures: slices, power spectra, training curves
#
# Stages (workflow/rules/*.smk): chunk (per tomogram) -> train (one prior per group) ->
# reconstruct (per tomogram, Dask) -> stitch -> report. Outputs go to results/<tomogram>/ and
# results/priors/<group>/. Every key of config/config.yaml is explained in config/README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/backproject.smk"
include: "workflow/rules/chunk.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/reconstruct.smk"
include: "workflow/rules/stitch.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/copick.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        final_outputs(),
        COPICK.targets(std_wanted()) if COPICK else [],  # workflow/rules/copick.smk
