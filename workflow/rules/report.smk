# report: per tomogram, the central XY/XZ/YZ slices and the power spectra (the missing wedge)
# before and after restoration, registered for `snakemake --report report.html`, and a JSON
# summary: the truth-free measures (the wedge's fill, consistency with the data) always, and cc /
# FSC / wedge recovery when the sheet gives a ground truth, as the demo does.


rule report:
    input:
        unpack(report_inputs),
    output:
        slices=report(
            f"{RESULTS}/{{tomogram}}/report/slices.png",
            caption="../report/slices.rst",
            category="Tomograms",
            subcategory="{tomogram}",
            labels={"tomogram": "{tomogram}", "figure": "central slices"},
        ),
        spectra=report(
            f"{RESULTS}/{{tomogram}}/report/spectra.png",
            caption="../report/spectra.rst",
            category="Tomograms",
            subcategory="{tomogram}",
            labels={"tomogram": "{tomogram}", "figure": "power spectra"},
        ),
        summary=f"{RESULTS}/{{tomogram}}/report/summary.json",
    params:
        options=report_options,
        code=CODE["report"],
    log:
        f"{RESULTS}/{{tomogram}}/logs/report.log",
    threads: 1
    conda:
        CONDA_ENV
    resources:
        mem_mb=mem_mb_of("report"),
        runtime=runtime_of("report"),
    shell:
        THREADS
        + "cryogen report {input.before:q} {input.after:q} --slices {output.slices:q} --spectra {output.spectra:q}"
        " --summary {output.summary:q} {params.options} > {log:q} 2>&1"
