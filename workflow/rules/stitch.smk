# stitch: blend the restored tiles into one MRC volume (and the uncertainty map when
# reconstruct.samples > 0), with the input's voxel size and origin.


rule stitch:
    input:
        f"{RESULTS}/{{tomogram}}/recon.zarr",
    output:
        restored=f"{RESULTS}/{{tomogram}}/restored.mrc",
        **({"std": f"{RESULTS}/{{tomogram}}/restored_std.mrc"} if std_wanted() else {}),
    params:
        std=lambda w, output: getattr(output, "std", ""),
        code=CODE["stitch"],
    log:
        f"{RESULTS}/{{tomogram}}/logs/stitch.log",
    threads: 1
    conda:
        CONDA_ENV
    resources:
        mem_mb=mem_mb_of("stitch"),
        runtime=runtime_of("stitch"),
    shell:
        THREADS
        + "(cryogen stitch {input:q} {output.restored:q}"
        " && if [ -n '{params.std}' ]; then cryogen stitch {input:q} {params.std:q} --std; fi) > {log:q} 2>&1"
