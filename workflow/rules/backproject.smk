# backproject: an aligned tilt series (sheet column tilt_series, with its tilt_file) -> its
# tomogram and even/odd half tomograms by weighted back-projection, streamed slab by slab. The
# sheet names these files as the row's tomogram and halves, so chunk reads them as any tomogram
# with halves (a measured noise model). Alignment stays with IMOD/AreTomo.

from cryogen.workflow.sheet import backprojected

_BACKPROJECTED = backprojected(RESULTS, "{tomogram}")


rule backproject:
    input:
        unpack(backproject_inputs),
    output:
        tomogram=_BACKPROJECTED[0],
        even=_BACKPROJECTED[1],
        odd=_BACKPROJECTED[2],
    wildcard_constraints:
        # only the tilt-series rows; a pattern that matches nothing when there are none
        tomogram="|".join(re.escape(n) for n, t in TOMOGRAMS.items() if t.tilt_series) or "(?!x)x",
    params:
        options=backproject_options,
        code=CODE["backproject"],
    log:
        f"{RESULTS}/{{tomogram}}/logs/backproject.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        THREADS
        + "cryogen backproject {input.stack:q} --tilt-file {input.tilt:q} --out {output.tomogram:q}"
        " --halves {output.even:q} {output.odd:q} {params.options} > {log:q} 2>&1"
