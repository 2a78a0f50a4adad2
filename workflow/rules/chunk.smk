# chunk: one tomogram -> overlapping cubic tiles (Zarr), with its tilt geometry and voxel size.


rule chunk:
    input:
        unpack(chunk_inputs),
    output:
        directory(f"{RESULTS}/{{tomogram}}/tiles.zarr"),
    params:
        tile=config["chunk"]["tile"],
        overlap=config["chunk"]["overlap"],
        beads="" if config["chunk"].get("beads", True) else " --no-beads",
        options=chunk_options,
        code=CODE["chunk"],
    log:
        f"{RESULTS}/{{tomogram}}/logs/chunk.log",
    threads: 1
    conda:
        CONDA_ENV
    resources:
        mem_mb=mem_mb_of("chunk"),
        runtime=runtime_of("chunk"),
    shell:
        THREADS
        + "cryogen chunk {input.mrc:q} {output:q} --tile {params.tile} --overlap {params.overlap}"
        "{params.beads} {params.options} > {log:q} 2>&1"
