# train: one prior per group of the sheet (by default one group, the whole dataset), on the
# tiles of the group's tomograms marked train=yes. Training curves go into the report.
# $CRYOGEN_DEVICE (config device) is set by the shell prefix in common.smk: not a param, so that
# changing it reruns nothing.


rule train:
    input:
        training_tiles,
    output:
        prior=f"{RESULTS}/priors/{{group}}/prior.pt",
        csv=f"{RESULTS}/priors/{{group}}/prior_curves.csv",
        curves=report(
            f"{RESULTS}/priors/{{group}}/prior_curves.png",
            caption="../report/curves.rst",
            category="Training",
            labels={"prior": "{group}", "figure": "training curves"},
        ),
    params:
        budget=train_budget(),
        batch=config["train"]["batch"],
        patch=config["train"]["patch"],
        seed=config["train"]["seed"],
        code=CODE["train"],
    log:
        f"{RESULTS}/priors/{{group}}/train.log",
    benchmark:
        f"{RESULTS}/priors/{{group}}/train_benchmark.tsv"
    threads: 4
    conda:
        CONDA_ENV
    shell:
        THREADS
        + "cryogen train {input:q} --out {output.prior:q} {params.budget}"
        " --batch {params.batch} --patch {params.patch} --seed {params.seed} --device $CRYOGEN_DEVICE"
        " --resume --tag {params.code} > {log:q} 2>&1"
