# copick: with config key copick.config set, the runs of that project are tomograms of the
# workflow (named after their runs; cryogen.workflow.copick). copick_import copies each run's
# tomogram (copick.tomo_type at copick.voxel_spacing) into results/<run>/copick_input.mrc, which
# chunk and report read; copick_export writes the restored volume (and std map) back into the
# project's overlay as copick.output_type (and copick.std_type). Source tomograms are only read.

from cryogen.workflow.copick import copick_runs
from cryogen.workflow.digests import code_version

try:
    COPICK = copick_runs(config)
except CryogenError as exc:
    raise WorkflowError(str(exc)) from None
COPICK_CODE = code_version("cryogen.io.copick_project")


if COPICK is not None:

    rule copick_import:
        input:
            lambda w: str(
                COPICK.project.source(w.tomogram, COPICK.settings["voxel_spacing"], COPICK.settings["tomo_type"])
            ),
        output:
            f"{RESULTS}/{{tomogram}}/copick_input.mrc",
        params:
            config=COPICK.project.config,
            tomo_type=COPICK.settings["tomo_type"],
            spacing=COPICK.settings["voxel_spacing"],
            code=COPICK_CODE,
        log:
            f"{RESULTS}/{{tomogram}}/logs/copick_import.log",
        threads: 1
        conda:
            CONDA_ENV
        resources:
            mem_mb=lambda w, attempt: COPICK.mem_mb(w.tomogram, attempt),
        shell:
            THREADS
            + "cryogen copick import {params.config:q} {wildcards.tomogram:q} {output:q} --tomo-type {params.tomo_type:q}"
            " --voxel-spacing {params.spacing} > {log:q} 2>&1"

    rule copick_export:
        input:
            restored=f"{RESULTS}/{{tomogram}}/restored.mrc",
            **({"std": f"{RESULTS}/{{tomogram}}/restored_std.mrc"} if std_wanted() else {}),
        output:
            **{kind: directory(path) for kind, path in COPICK.outputs("{tomogram}", std_wanted()).items()},
        params:
            config=COPICK.project.config,
            spacing=COPICK.settings["voxel_spacing"],
            types=f"--type {shlex.quote(COPICK.settings['output_type'])} --source-type {shlex.quote(COPICK.settings['tomo_type'])}",
            std=lambda w, input: (
                f"--std {shlex.quote(input.std)} --std-type {shlex.quote(COPICK.settings['std_type'])}"
                if std_wanted()
                else ""
            ),
            code=COPICK_CODE,
        log:
            f"{RESULTS}/{{tomogram}}/logs/copick_export.log",
        threads: 1
        conda:
            CONDA_ENV
        resources:
            mem_mb=lambda w, attempt: COPICK.mem_mb(w.tomogram, attempt),
        shell:
            THREADS
            + "cryogen copick export {params.config:q} {wildcards.tomogram:q} {input.restored:q}"
            " --voxel-spacing {params.spacing} {params.types} {params.std} --overwrite > {log:q} 2>&1"
