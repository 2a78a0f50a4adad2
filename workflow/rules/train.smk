# train: one prior per group of the sheet (by default one group, the whole dataset), on the
# tiles of the group's tomograms marked train=yes. Training curves go into the report.


rule train:
    input:
        lambda w: training_tiles(w.group),
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
        budget=_budget(),
        batch=config["train"]["batch"],
        patch=config["train"]["patch"],
        seed=config["train"]["seed"],
        code=CODE["train"],
    log:
        f"{RESULTS}/priors/{{group}}/train.log",
    benchmark:
        f"{RESULTS}/priors/{{group}}/train_benchmark.tsv"
    threads: 4
    shell:
        "OMP_NUM_THREADS={threads} {CRYOGEN} train {input:q} --out {output.prior:q} {params.budget}"
        " --batch {params.batch} --patch {params.patch} --seed {params.seed} --device {DEVICE}"
        " --resume --tag {params.code} > {log:q} 2>&1"
