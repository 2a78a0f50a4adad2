# export: the restored tomogram (and its uncertainty map) as OME-Zarr for napari, copick and the
# CryoET Data Portal, when config export.ome_zarr is true.


rule export:
    input:
        restored=f"{RESULTS}/{{tomogram}}/restored.mrc",
        **({"std": f"{RESULTS}/{{tomogram}}/restored_std.mrc"} if std_wanted() else {}),
    output:
        ome=directory(f"{RESULTS}/{{tomogram}}/restored.ome.zarr"),
        **({"std": directory(f"{RESULTS}/{{tomogram}}/restored_std.ome.zarr")} if std_wanted() else {}),
    params:
        std=lambda w, input: f"--std {getattr(input, 'std')}" if std_wanted() else "",
        chunk=config["export"]["chunk"],
        code=CODE["export"],
    log:
        f"{RESULTS}/{{tomogram}}/logs/export.log",
    threads: 1
    conda:
        CONDA_ENV
    resources:
        mem_mb=mem_mb_of("export"),
        runtime=runtime_of("export"),
    shell:
        THREADS
        + "cryogen export {input.restored:q} {output.ome:q} --ome {params.std} --chunk {params.chunk} > {log:q} 2>&1"
