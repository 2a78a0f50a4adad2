"""Shared fixtures: small MRC volumes written through the project's own writer, and the CLI run in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryogen.io.mrc import write_mrc


@pytest.fixture
def write_volume(tmp_path: Path):
    """Write `data` (or a random volume of `shape`) as an MRC file in tmp_path; return its path."""

    def _write(name: str = "vol.mrc", shape=(20, 30, 40), data=None, voxel_size=7.5, seed=0, origin=(0.0, 0.0, 0.0)):
        if data is None:
            data = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        path = tmp_path / name
        write_mrc(path, data, voxel_size, origin=origin)
        return path

    return _write


@pytest.fixture
def run_cli(capsys):
    """Run the `cryogen` command line in this process: run_cli(*argv) -> (exit code, stdout, stderr)."""
    from cryogen.cli.main import main

    def _run(*argv) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run
