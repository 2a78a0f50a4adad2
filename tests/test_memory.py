"""Peak memory of chunk and stitch must not grow with the tomogram, only with tile and width."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cryogen.bench.speed import bare
from cryogen.io.mrc import MrcWriter

STAGE = r"""
import json, resource, sys
from cryogen.tiling import chunk, stitch
src, store, out = sys.argv[1:4]
chunk(src, store, progress=False)
after_chunk = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stitch(store, out, progress=False)
after_stitch = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"chunk_kb": after_chunk, "stitch_kb": after_stitch}))
"""


def write_big(path: Path, shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    with MrcWriter(path, shape, 10.0) as w:
        for z0 in range(0, shape[0], 16):
            z1 = min(z0 + 16, shape[0])
            w.write_block(z0, 0, rng.standard_normal((z1 - z0, *shape[1:]), dtype=np.float32))


def peak_mb(tmp_path: Path, shape: tuple[int, int, int]) -> tuple[float, float]:
    src = tmp_path / f"{shape[0]}.mrc"
    write_big(src, shape)
    # through a bare launcher: a child forked straight from pytest (hundreds of MB once every
    # test module is imported) would report at least pytest's peak as its own
    res = subprocess.run(
        bare(
            [
                sys.executable,
                "-c",
                STAGE,
                str(src),
                str(tmp_path / f"{shape[0]}.zarr"),
                str(tmp_path / f"{shape[0]}_out.mrc"),
            ]
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    d = json.loads(res.stdout.strip().splitlines()[-1])
    for p in (src, tmp_path / f"{shape[0]}_out.mrc"):
        p.unlink()
    return d["chunk_kb"] / 1024, d["stitch_kb"] / 1024


@pytest.mark.integration
def test_peak_memory_flat_in_tomogram_size(tmp_path):
    # both at least 256 deep, so both get the full 128^3 central crop of the noise estimate at
    # both levels (the volume's, and the coarse level's binned 2x): a fixed cost, the largest
    # chunk has, that would otherwise differ between them
    small = peak_mb(tmp_path, (256, 256, 256))  # 64 MB
    large = peak_mb(tmp_path, (768, 256, 256))  # 192 MB, 3x the voxels
    # the whole large volume would add 128 MB; streaming must stay within a small margin
    assert large[0] < small[0] + 24, (small, large)
    assert large[1] < small[1] + 24, (small, large)


@pytest.mark.slow
def test_one_gigabyte_tomogram_in_a_few_hundred_megabytes(tmp_path):
    chunk_mb, stitch_mb = peak_mb(tmp_path, (256, 1024, 1024))  # 1 GiB of float32
    assert chunk_mb < 400 and stitch_mb < 400, (chunk_mb, stitch_mb)
