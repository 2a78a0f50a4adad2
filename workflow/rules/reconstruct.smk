# reconstruct: every tile of one tomogram under its group's prior. Batches of tiles run in
# parallel with Dask: a LocalCluster of {threads} worker processes sharing {resources.mem_mb},
# or the existing cluster at config dask.scheduler_address. Equal to the serial result.
# $CRYOGEN_DEVICE and $CRYOGEN_SCHEDULER (config device, dask.scheduler_address) are set by the
# shell prefix in common.smk: not params, so that changing them reruns nothing.


rule reconstruct:
    input:
        tiles=f"{RESULTS}/{{tomogram}}/tiles.zarr",
        prior=prior_of,
    output:
        directory(f"{RESULTS}/{{tomogram}}/recon.zarr"),
    params:
        map_steps=config["reconstruct"]["map_steps"],
        energy=config["reconstruct"]["energy"],
        samples=config["reconstruct"]["samples"],
        prior_weight=config["reconstruct"]["prior_weight"],
        flips=config["reconstruct"]["flips"],
        coarse_cutoff=config["reconstruct"]["coarse_cutoff"],
        batch=config["reconstruct"]["batch"],
        seed=config["reconstruct"]["seed"],
        code=CODE["reconstruct"],
    log:
        f"{RESULTS}/{{tomogram}}/logs/reconstruct.log",
    benchmark:
        f"{RESULTS}/{{tomogram}}/logs/reconstruct_benchmark.tsv"
    threads: 4
    conda:
        CONDA_ENV
    resources:
        mem_mb=mem_mb_of("reconstruct"),
        runtime=runtime_of("reconstruct"),
    shell:
        THREADS
        + "cryogen reconstruct {input.tiles:q} --prior {input.prior:q} --out {output:q}"
        " --map-steps {params.map_steps} --samples {params.samples} --prior-weight {params.prior_weight}"
        " --flips {params.flips} --coarse-cutoff {params.coarse_cutoff} --energy {params.energy}"
        " --batch {params.batch} --seed {params.seed} --device $CRYOGEN_DEVICE"
        " --workers {threads} --memory-mb {resources.mem_mb} ${{CRYOGEN_SCHEDULER:+--scheduler \"$CRYOGEN_SCHEDULER\"}} > {log:q} 2>&1"
