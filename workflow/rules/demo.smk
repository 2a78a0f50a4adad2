# The embedded demo: when the sheet lists no tomogram, `cryogen simulate` makes config demo.count
# synthetic tomograms (and their ground truth, which the report evaluates against).


rule simulate:
    output:
        obs=f"{config['demo']['dir']}/{{tomogram}}.mrc",
        truth=f"{config['demo']['dir']}/{{tomogram}}_truth.mrc",
    params:
        shape=" ".join(str(n) for n in config["demo"]["shape"]),
        tilt=" ".join(f"{v:g}" for v in config["demo"]["tilt_range"]),
        snr=config["demo"]["snr"],
        voxel_size=config["demo"]["voxel_size"],
        seed=lambda w: config["demo"]["seed"] + int(w.tomogram.removeprefix("demo")) - 1,
        code=CODE["simulate"],
    log:
        f"{RESULTS}/{{tomogram}}/logs/simulate.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        THREADS
        + "cryogen simulate {output.obs:q} --truth {output.truth:q} --shape {params.shape}"
        " --tilt-range {params.tilt} --snr {params.snr} --seed {params.seed}"
        " --voxel-size {params.voxel_size} > {log:q} 2>&1"
