"""Reliability (issue 6): bad input gets one clear line, and a crash or a kill loses nothing.

Every bad-input test goes through the command line (`cryogen.cli.main`) and checks the same
contract: a non-zero exit; stderr holds exactly one line (progress bars aside) that names the
file and the problem, and no traceback; and nothing is left behind that a later stage or
Snakemake could take as finished (no output, no temporary files beside it).

Decisions recorded here (see also cryogen/checks.py):

- an exactly constant volume is an error in `chunk` (its std is 0: normalisation would divide by
  zero, and there is nothing to restore); a nearly constant one, or one that is pure noise, is
  chunked with a "no signal" warning;
- a header voxel size of 0 (unknown) is an error unless --voxel-size is given; --voxel-size must
  be a positive number;
- integer MRC modes (int8, int16, uint16) are accepted and read as exact float32 values; complex
  modes are an error.

Kill tests start the real CLI as a subprocess, SIGKILL it once it has made progress and rerun it
(the one for train is marked slow: the CLI checkpoints every 50 steps). (Divergence recovery, with a fault injected into the training step, is tested in
tests/test_method.py::test_divergence_rolls_back_and_continues.)
"""

from __future__ import annotations

import builtins
import errno
import io
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import zarr

from cryogen.cli.main import main
from cryogen.io.mrc import read_mrc, write_mrc
from cryogen.io.store import open_store
from cryogen.method.config import TrainConfig
from cryogen.method.loop import train
from cryogen.model.imaging import Wedge
from cryogen.model.nets import NetConfig
from cryogen.sim.simulate import simulate
from cryogen.tiling import chunk

PROGRESS = re.compile(r"\d+%\|")  # a tqdm progress bar
TILT = ["--tilt-range", "-60", "60"]
TINY = TrainConfig(
    steps=2, batch=2, patch=16, checkpoint_every=1, net=NetConfig(g_channels=4, g_depth=2, d_channels=4, d_layers=3)
)


# ----------------------------------------------------------------------------- helpers


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the CLI in this process; return the exit code, stdout and stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str, *needles, after_progress: bool = False) -> str:
    """The single error line of a failed run, checked against the contract; returns it.

    `after_progress`: the failure comes mid-run (a full disk), so the log lines of the progress
    made so far may precede the error."""
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [ln for ln in re.split(r"[\r\n]+", err) if ln.strip() and not PROGRESS.search(ln)]
    if after_progress:
        lines = [ln for ln in lines if " error: " in ln or not re.match(r"^cryogen \w+: ", ln)]
    assert len(lines) == 1, err
    line = lines[0]
    assert re.match(r"^cryogen \w+: error: ", line), line
    for needle in needles:
        assert str(needle) in line, (needle, line)
    return line


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_only(folder: Path, *expected: str) -> None:
    """`folder` holds exactly `expected`: no output, no hidden temporary or partial file."""
    assert names(folder) == sorted(expected), names(folder)


@pytest.fixture(scope="module")
def sim() -> np.ndarray:
    """A small simulated tomogram with signal and wedge-shaped noise."""
    return simulate((32, 48, 48), Wedge(-60, 60), snr=1.0, seed=3, voxel_size=10.0).observation


@pytest.fixture(scope="module")
def material(tmp_path_factory, sim) -> dict[str, Path]:
    """A valid tile store and a valid (tiny) prior, shared by the tests that need them."""
    d = tmp_path_factory.mktemp("material")
    write_mrc(d / "obs.mrc", sim, 10.0)
    chunk(d / "obs.mrc", d / "tiles.zarr", tile=32, overlap=8, wedge=Wedge(-60, 60), progress=False)
    train([d / "tiles.zarr"], d / "prior.pt", TINY, device="cpu", progress=False)
    return {"mrc": d / "obs.mrc", "tiles": d / "tiles.zarr", "prior": d / "prior.pt"}


# ----------------------------------------------------------------------------- bad MRC input


def _mrc_with(path: Path, data: np.ndarray, stack: bool = False) -> None:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        if stack:
            m.set_image_stack()


def _truncated(path: Path, sim: np.ndarray) -> None:
    write_mrc(path, sim, 10.0)
    path.write_bytes(path.read_bytes()[:-4096])


def _with_value(value: float):
    def make(path: Path, sim: np.ndarray) -> None:
        data = sim.copy()
        data[21, 5, 7] = value
        write_mrc(path, data, 10.0)

    return make


BAD_MRC = {
    "missing": (None, "file not found"),
    "empty": (lambda p, s: p.write_bytes(b""), "file is empty"),
    "truncated": (_truncated, "truncated MRC"),
    "text-file": (lambda p, s: p.write_text("this is a text file, not a tomogram\n" * 100), "not a readable MRC"),
    "random-bytes": (lambda p, s: p.write_bytes(np.random.default_rng(0).bytes(8192)), "not a readable MRC"),
    "tiny-file": (lambda p, s: p.write_bytes(b"MRC?" * 10), "shorter than an MRC header"),
    "2-d": (lambda p, s: _mrc_with(p, s[0]), "2-D image"),
    "image-stack": (lambda p, s: _mrc_with(p, s[:5], stack=True), "stack of 5 2-D images"),
    "complex": (lambda p, s: _mrc_with(p, s.astype(np.complex64)), "complex"),
    "nan": (_with_value(np.nan), "NaN voxels (first at z=21, y=5, x=7)"),
    "inf": (_with_value(-np.inf), "Inf voxels (first at z=21, y=5, x=7)"),
    "constant": (lambda p, s: write_mrc(p, np.full((20, 24, 24), 3.5, np.float32), 10.0), "constant"),
    "voxel-size-0": (lambda p, s: write_mrc(p, s, 0.0), "voxel size in the header is 0"),
}


@pytest.mark.parametrize("case", list(BAD_MRC))
def test_bad_mrc_input_to_chunk(tmp_path, capsys, sim, case):
    make, problem = BAD_MRC[case]
    src = tmp_path / "in.mrc"
    if make is not None:
        make(src, sim)
    code, _, err = cli(capsys, "chunk", src, tmp_path / "t.zarr", *TILT, "--tile", 16, "--overlap", 4)
    one_error(code, err, src, problem)
    assert_only(tmp_path, *(["in.mrc"] if make else []))


@pytest.mark.parametrize("case", ["missing", "truncated", "text-file", "2-d", "complex", "nan"])
def test_bad_mrc_input_to_other_verbs(tmp_path, capsys, sim, case):
    """`info` and `evaluate` read MRC files too, and stop with the same one line."""
    make, problem = BAD_MRC[case]
    src = tmp_path / "in.mrc"
    if make is not None:
        make(src, sim)
    good = tmp_path / "good.mrc"
    write_mrc(good, sim, 10.0)
    if case != "nan":  # info does not read the voxels; NaN is found by the verbs that do
        one_error(*cli(capsys, "info", src)[::2], src, problem)
    one_error(*cli(capsys, "evaluate", src, good)[::2], src, problem)
    one_error(*cli(capsys, "evaluate", good, src)[::2], src, problem)
    assert_only(tmp_path, *(["good.mrc", "in.mrc"] if make else ["good.mrc"]))


def _run_bad_input(tmp_path, capsys, sim, case) -> Path:
    make, problem = BAD_MRC[case]
    src = tmp_path / "in.mrc"
    if make is not None:
        make(src, sim)
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = cli(
        capsys, "run", src, out / "r.mrc", *TILT, "--tile", 32, "--overlap", 8, "--steps", 1, "--device", "cpu"
    )
    one_error(code, err, src, problem)
    assert not (out / "r.mrc").exists()
    return out


@pytest.mark.parametrize("case", ["missing", "truncated", "2-d", "nan", "voxel-size-0"])
def test_bad_mrc_input_to_run(tmp_path, capsys, sim, case):
    """The one-command path stops before any work with the same one line."""
    _run_bad_input(tmp_path, capsys, sim, case)


def test_bad_input_to_run_leaves_no_work_folder(tmp_path, capsys, sim):
    out = _run_bad_input(tmp_path, capsys, sim, "truncated")
    assert_only(out)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16])
def test_integer_modes_are_accepted_with_exact_values(tmp_path, capsys, dtype):
    info = np.iinfo(dtype)
    data = np.random.default_rng(1).integers(max(info.min, -2000), min(info.max, 3000), (20, 24, 28)).astype(dtype)
    src = tmp_path / "int.mrc"
    with mrcfile.new(src) as m:
        m.set_data(data)
        m.voxel_size = 4.0
    code, _, err = cli(capsys, "chunk", src, tmp_path / "t.zarr", *TILT, "--tile", 16, "--overlap", 4)
    assert code == 0, err
    group, meta = open_store(tmp_path / "t.zarr")
    (sz, sy, sx) = (meta.starts[0][-1], meta.starts[1][-1], meta.starts[2][-1])
    last = np.asarray(group["tiles"][meta.n_tiles - 1])  # reaches a margin beyond the volume
    (nz, ny, nx) = data.shape
    np.testing.assert_array_equal(last[: nz - sz, : ny - sy, : nx - sx], data[sz:, sy:, sx:].astype(np.float32))
    assert meta.stats["min"] == data.min() and meta.stats["max"] == data.max()
    assert meta.voxel_size == (4.0, 4.0, 4.0)
    code, _, err = cli(capsys, "stitch", tmp_path / "t.zarr", tmp_path / "back.mrc")
    assert code == 0, err
    back, _ = read_mrc(tmp_path / "back.mrc")
    # the blending weights sum to one up to float32 rounding
    np.testing.assert_allclose(back, data.astype(np.float32), rtol=0, atol=1e-5 * float(np.abs(data).max()))


@pytest.mark.parametrize("shape", [(10, 12, 14), (9, 40, 36)], ids=["all-axes", "one-axis"])
def test_volume_smaller_than_a_tile_is_padded_and_comes_back(tmp_path, capsys, shape):
    data = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    src = tmp_path / "small.mrc"
    write_mrc(src, data, 6.0, origin=(1.0, 2.0, 3.0))
    code, _out, err = cli(capsys, "chunk", src, tmp_path / "t.zarr", *TILT, "--tile", 16, "--overlap", 4)
    assert code == 0, err
    _, meta = open_store(tmp_path / "t.zarr")
    assert meta.tile == 16 and meta.source_shape == shape
    code, _, err = cli(capsys, "stitch", tmp_path / "t.zarr", tmp_path / "back.mrc")
    assert code == 0, err
    back, info = read_mrc(tmp_path / "back.mrc")
    assert back.shape == shape and info.voxel_size == (6.0, 6.0, 6.0)
    np.testing.assert_allclose(back, data, atol=1e-5)


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf"])
def test_voxel_size_option_must_be_positive(tmp_path, capsys, sim, value):
    src = tmp_path / "in.mrc"
    write_mrc(src, sim, 10.0)
    code, _, err = cli(capsys, "chunk", src, tmp_path / "t.zarr", *TILT, "--voxel-size", value)
    one_error(code, err, "voxel size", "positive")
    assert_only(tmp_path, "in.mrc")


def test_zero_header_voxel_size_with_override_is_used(tmp_path, capsys, sim):
    src = tmp_path / "in.mrc"
    write_mrc(src, sim, 0.0)
    code, _, err = cli(
        capsys, "chunk", src, tmp_path / "t.zarr", *TILT, "--tile", 32, "--overlap", 8, "--voxel-size", 5
    )
    assert code == 0, err
    assert cli(capsys, "stitch", tmp_path / "t.zarr", tmp_path / "o.mrc")[0] == 0
    assert read_mrc(tmp_path / "o.mrc")[1].voxel_size == (5.0, 5.0, 5.0)


@pytest.mark.parametrize(
    "lo, hi, problem",
    [
        ("60", "-60", "must be below"),
        ("30", "30", "must be below"),
        ("-95", "60", "beyond +-90"),
        ("-60", "90.5", "beyond +-90"),
        ("nan", "60", "not finite"),
    ],
)
@pytest.mark.parametrize("verb", ["chunk", "run"])
def test_impossible_tilt_range(tmp_path, capsys, sim, verb, lo, hi, problem):
    src = tmp_path / "in.mrc"
    write_mrc(src, sim, 10.0)
    code, _, err = cli(capsys, verb, src, tmp_path / "o.out", "--tilt-range", lo, hi)
    one_error(code, err, "tilt range", problem)
    assert_only(tmp_path, "in.mrc")


def test_tilt_range_of_plus_minus_90_is_accepted(tmp_path, capsys, sim):
    src = tmp_path / "in.mrc"
    write_mrc(src, sim, 10.0)
    code, _, err = cli(
        capsys, "chunk", src, tmp_path / "t.zarr", "--tilt-range", "-90", "90", "--tile", 32, "--overlap", 8
    )
    assert code == 0, err


# ----------------------------------------------------------------------------- bad tile stores


def _foreign_group(p: Path) -> None:
    zarr.open_group(str(p), mode="w").create_array("x", shape=(3,), dtype="f4")


def _garbage_dir(p: Path) -> None:
    p.mkdir()
    (p / "junk.bin").write_bytes(b"\x00\x01garbage")
    (p / "sub").mkdir()


def _garbage_json(p: Path) -> None:
    p.mkdir()
    (p / "zarr.json").write_text("{ this is not json")


def _copy_store(material):
    import shutil

    def make(p: Path) -> Path:
        shutil.copytree(material["tiles"], p)
        return p

    return make


BAD_STORES = {
    "missing": (None, "tile store not found"),
    "foreign-zarr": (_foreign_group, "not a CryoGEN tile store"),
    "garbage-dir": (_garbage_dir, "not a readable Zarr store"),
    "garbage-json": (_garbage_json, "not a readable Zarr store"),
    "regular-file": (lambda p: p.write_bytes(b"not a store"), "is a file, not a Zarr tile store"),
    "damaged-meta": ("attrs", "metadata is damaged (no 'wedge')"),
    "future-format": ("format", "format 99 is not supported"),
    "damaged-chunk": ("chunk", "the store is damaged"),
    "zero-std": ("std", "tile statistics are damaged"),
}


def _make_store(kind: str, path: Path, material) -> None:
    make = BAD_STORES[kind][0]
    if make is None:
        return
    if callable(make):
        make(path)
        return
    _copy_store(material)(path)
    group = zarr.open_group(str(path), mode="r+")
    meta = dict(group.attrs["cryogen"])
    if make == "attrs":
        group.attrs["cryogen"] = {"source": "x", "tile": "big"}
    elif make == "format":
        group.attrs["cryogen"] = {**meta, "format_version": 99}
    elif make == "std":
        group.attrs["cryogen"] = {**meta, "stats": {**meta["stats"], "std": 0.0}}
    elif make == "chunk":
        for f in (path / "tiles" / "c").rglob("*"):
            if f.is_file():
                f.write_bytes(b"\xde\xad\xbe\xef" * 7)


@pytest.mark.parametrize("verb", ["stitch", "train", "reconstruct", "info"])
@pytest.mark.parametrize("kind", list(BAD_STORES))
def test_bad_tile_store(tmp_path, capsys, material, verb, kind):
    if verb == "info" and kind in ("damaged-chunk", "regular-file"):
        pytest.skip("info reads only the metadata, and reads a regular file as MRC")
    store = tmp_path / "t.zarr"
    _make_store(kind, store, material)
    out = tmp_path / "out"
    out.mkdir()
    argv = {
        "stitch": ["stitch", store, out / "o.mrc"],
        "train": ["train", store, "--out", out / "p.pt", "--steps", 1, "--batch", 1, "--patch", 16, "--device", "cpu"],
        "reconstruct": ["reconstruct", store, "--prior", material["prior"], "--out", out / "r.zarr", "--device", "cpu"],
        "info": ["info", store],
    }[verb]
    code, _, err = cli(capsys, *argv)
    one_error(code, err, store, "file not found" if (verb, kind) == ("info", "missing") else BAD_STORES[kind][1])
    assert_only(out)


# ----------------------------------------------------------------------------- bad checkpoints


def _truncated_prior(material):
    def make(p: Path) -> None:
        p.write_bytes(material["prior"].read_bytes()[: material["prior"].stat().st_size // 2])

    return make


def _torch_file(obj):
    return lambda p: torch.save(obj, p)


def _with(material, **changes):
    def make(p: Path) -> None:
        ck = torch.load(material["prior"], weights_only=True)
        ck.update(changes)
        torch.save(ck, p)

    return make


def bad_checkpoints(material) -> dict:
    return {
        "truncated": (_truncated_prior(material), "not a readable checkpoint"),
        "random-bytes": (lambda p: p.write_bytes(np.random.default_rng(5).bytes(5000)), "not a readable checkpoint"),
        "empty": (lambda p: p.write_bytes(b""), "checkpoint file is empty"),
        "foreign-torch-file": (_torch_file({"state_dict": {"w": torch.zeros(3)}}), "not a CryoGEN prior checkpoint"),
        "other-kind": (_with(material, kind="cryogen-tiles"), "kind 'cryogen-tiles'"),
        "other-format": (_with(material, format=2), "checkpoint format 2 is not supported"),
        "incompatible-net": (_with(material, g_ema={"w": torch.zeros(2)}, g={"w": torch.zeros(2)}), "does not match"),
        "arbitrary-pickle": (
            lambda p: torch.save({"kind": "cryogen-prior", "obj": Path("x")}, p),
            "not a readable checkpoint",
        ),
    }


CHECKPOINT_KINDS = [
    "truncated",
    "random-bytes",
    "empty",
    "foreign-torch-file",
    "other-kind",
    "other-format",
    "incompatible-net",
    "arbitrary-pickle",
]


@pytest.mark.parametrize("kind", CHECKPOINT_KINDS)
def test_bad_prior_for_reconstruct(tmp_path, capsys, material, kind):
    make, problem = bad_checkpoints(material)[kind]
    prior = tmp_path / "prior.pt"
    make(prior)
    code, _, err = cli(
        capsys, "reconstruct", material["tiles"], "--prior", prior, "--out", tmp_path / "r.zarr", "--device", "cpu"
    )
    one_error(code, err, prior, problem)
    assert_only(tmp_path, "prior.pt")  # no output and no partial store


@pytest.mark.parametrize("kind", CHECKPOINT_KINDS)
def test_bad_checkpoint_for_resume(tmp_path, capsys, material, kind):
    make, problem = bad_checkpoints(material)[kind]
    if kind == "incompatible-net":  # same data and settings as the command below, other weights
        settings = TrainConfig(steps=1, batch=1, patch=16, seed=0).to_dict()
        make = _with(material, g={"w": torch.zeros(2)}, sources=[str(material["tiles"])], train=settings)
    ckpt = tmp_path / "p.pt.ckpt"
    make(ckpt)
    code, _, err = cli(
        capsys,
        "train",
        material["tiles"],
        "--out",
        tmp_path / "p.pt",
        "--resume",
        "--steps",
        1,
        "--batch",
        1,
        "--patch",
        16,
        "--device",
        "cpu",
    )
    one_error(code, err, ckpt, problem)
    assert_only(tmp_path, "p.pt.ckpt")


def test_resume_ignores_a_checkpoint_of_other_data(tmp_path, capsys, material, caplog):
    """--resume never continues a prior trained on other tile stores: it warns and starts afresh."""
    ckpt = tmp_path / "p.pt.ckpt"
    _with(material, sources=["/elsewhere/tiles.zarr"], step=1)(ckpt)
    code, _, err = cli(
        capsys,
        "train",
        material["tiles"],
        "--out",
        tmp_path / "p.pt",
        "--resume",
        "--steps",
        1,
        "--batch",
        1,
        "--patch",
        16,
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert "trained on other tile stores" in err and "starting afresh" in err
    assert torch.load(tmp_path / "p.pt", weights_only=True)["sources"] == [str(material["tiles"])]


# ----------------------------------------------------------------------------- unwritable output


def _verb_argv(verb: str, material, out_dir: Path) -> tuple[list, Path]:
    """argv of `verb` writing into out_dir, and the output it names."""
    if verb == "chunk":
        out = out_dir / "t.zarr"
        return ["chunk", material["mrc"], out, *TILT, "--tile", 32, "--overlap", 8], out
    if verb == "stitch":
        out = out_dir / "o.mrc"
        return ["stitch", material["tiles"], out], out
    if verb == "train":
        out = out_dir / "p.pt"
        return [
            "train",
            material["tiles"],
            "--out",
            out,
            "--steps",
            1,
            "--batch",
            1,
            "--patch",
            16,
            "--device",
            "cpu",
        ], out
    if verb == "reconstruct":
        out = out_dir / "r.zarr"
        return [
            "reconstruct",
            material["tiles"],
            "--prior",
            material["prior"],
            "--out",
            out,
            "--map-steps",
            1,
            "--device",
            "cpu",
        ], out
    if verb == "simulate":
        out = out_dir / "s.mrc"
        return ["simulate", out, "--shape", 16, 16, 16], out
    raise ValueError(verb)


VERBS_THAT_WRITE = ["chunk", "stitch", "train", "reconstruct", "simulate"]


@pytest.mark.parametrize("verb", VERBS_THAT_WRITE)
def test_output_folder_under_a_regular_file(tmp_path, capsys, material, verb):
    (tmp_path / "file.txt").write_text("I am a file")
    argv, _out = _verb_argv(verb, material, tmp_path / "file.txt")
    code, _, err = cli(capsys, *argv)
    one_error(code, err, tmp_path / "file.txt")
    assert_only(tmp_path, "file.txt")
    assert (tmp_path / "file.txt").read_text() == "I am a file"


@pytest.fixture
def read_only(monkeypatch):
    """Make writes under a folder fail with EACCES, as a read-only folder would for a normal user
    (this suite runs as root, which chmod does not stop)."""
    folders: list[str] = []

    def inside(path) -> bool:
        try:
            p = os.path.abspath(os.fsdecode(path))
        except TypeError:
            return False
        return any(p == f or p.startswith(f + os.sep) for f in folders)

    def deny(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    real_open, real_os_open, real_mkdir, real_save = builtins.open, os.open, os.mkdir, torch.save

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and inside(file):
            deny(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            deny(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path) and os.path.abspath(os.fsdecode(path)) not in folders:
            deny(path)
        return real_mkdir(path, *args, **kwargs)

    def fake_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and inside(f):
            deny(f)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(torch, "save", fake_save)

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        folders.append(os.path.abspath(folder))
        return folder

    return make


@pytest.mark.parametrize("verb", VERBS_THAT_WRITE)
def test_read_only_output_folder(tmp_path, capsys, material, read_only, verb):
    ro = read_only(tmp_path / "ro")
    argv, out = _verb_argv(verb, material, ro)
    code, _, err = cli(capsys, *argv)
    line = one_error(code, err, out, "read-only")
    assert ".tmp-" not in line and ".partial" not in line  # names the output, not a temporary
    assert_only(ro)


class _FullDisk:
    """A writable file object that fails with ENOSPC once `budget` bytes are written."""

    def __init__(self, f, budget: int) -> None:
        self._f, self._left = f, budget

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        if n > self._left:
            self._f.write(bytes(memoryview(data).cast("B")[: self._left]))
            self._left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= n
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_full_disk_during_stitch(tmp_path, capsys, material, monkeypatch):
    import cryogen.io.mrc

    monkeypatch.setattr(
        cryogen.io.mrc,
        "open",
        lambda *a, **k: _FullDisk(builtins.open(*a, **k), 20_000),  # noqa: SIM115 -- _FullDisk closes it
        raising=False,
    )
    code, _, err = cli(capsys, "stitch", material["tiles"], tmp_path / "o.mrc")
    one_error(code, err, tmp_path / "o.mrc", "no space left")
    assert_only(tmp_path)


@pytest.mark.parametrize("verb", ["chunk", "reconstruct"])
def test_full_disk_while_writing_a_store(tmp_path, capsys, material, monkeypatch, verb):
    """Zarr writes fail with ENOSPC after the first tile: chunk leaves nothing; reconstruct keeps
    its tiles done so far in the hidden partial store, and a rerun (disk freed) finishes."""
    import zarr.storage._local as local

    real_put, calls = local._put, []

    def put(path, value, exclusive=False):
        # the tiles' writes (not the coarse level's, which the context fill restores first)
        if f"{os.sep}tiles{os.sep}c{os.sep}" in str(path) and "coarse" not in str(path):
            calls.append(path)
            if len(calls) > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_put(path, value, exclusive)

    monkeypatch.setattr(local, "_put", put)
    argv, out = _verb_argv(verb, material, tmp_path)
    argv += ["--batch", 1] if verb == "reconstruct" else []
    code, _, err = cli(capsys, *argv)
    one_error(code, err, out, "no space left", after_progress=True)
    if verb == "chunk":
        assert_only(tmp_path)
        return
    assert_only(tmp_path, ".r.zarr.partial")
    assert "kept in" in err and "rerun continues" in err
    monkeypatch.setattr(local, "_put", real_put)
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    assert "1 of 8 tiles already done" in err
    assert_only(tmp_path, "r.zarr")


def test_full_disk_while_saving_a_checkpoint(tmp_path, capsys, material, monkeypatch):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf)
        with builtins.open(f, "wb") as fh:
            fh.write(buf.getvalue()[:1000])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save)
    argv, out = _verb_argv("train", material, tmp_path)
    code, _, err = cli(capsys, *argv)
    one_error(code, err, out, "no space left")
    assert_only(tmp_path)


def test_oserror_without_a_file_name_names_the_output(tmp_path, capsys, monkeypatch):
    """The CLI's last line of defence: an OSError that names no file is about the verb's output."""
    import cryogen.tiling

    def stitch(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cryogen.tiling, "stitch", stitch)
    code, _, err = cli(capsys, "stitch", tmp_path / "t.zarr", tmp_path / "o.mrc")
    one_error(code, err, tmp_path / "o.mrc", "no space left")


# ----------------------------------------------------------------------------- warnings


def _pure_noise(sim):
    return np.random.default_rng(0).standard_normal(sim.shape).astype(np.float32)


def _nearly_constant(sim):
    return (100.0 + 1e-3 * np.random.default_rng(0).standard_normal(sim.shape)).astype(np.float32)


def _low_pass(sim):
    return ndi.gaussian_filter(np.random.default_rng(0).standard_normal(sim.shape), 2.0).astype(np.float32)


def _white_noise_added(sim):
    """Noise that is not wedge-shaped: only the noise model (`qc.warnings.check_noise`) sees it."""
    return sim + np.random.default_rng(0).standard_normal(sim.shape).astype(np.float32) * sim.std()


def _noisier_half(sim):
    data = sim.copy()
    extra = np.random.default_rng(0).standard_normal(sim.shape).astype(np.float32) * 3 * sim.std()
    data[:, sim.shape[1] // 2 :] += extra[:, sim.shape[1] // 2 :]
    return data


@pytest.mark.parametrize(
    "make, message",
    [
        (_nearly_constant, "no signal: the volume is nearly constant"),
        (_pure_noise, "no signal detected"),
        (_low_pass, "sigma estimate unstable: the noise estimated from the data is near 0"),
        (_noisier_half, "sigma estimate unstable: the noise estimated from the data alone is"),
        (_white_noise_added, "noise inside the missing wedge is"),
    ],
    ids=["nearly-constant", "pure-noise", "low-pass", "noisier-half", "white-noise-added"],
)
def test_data_that_look_wrong_get_a_warning(tmp_path, capsys, caplog, sim, make, message):
    """Each problem is named once, in one line that names the file, in the log and on stderr
    (data with several problems, e.g. pure white noise, get one line for each)."""
    src = tmp_path / "in.mrc"
    write_mrc(src, make(sim), 10.0)
    with caplog.at_level(logging.WARNING, logger="cryogen"):
        code, _, err = cli(capsys, "chunk", src, tmp_path / "t.zarr", *TILT, "--tile", 32, "--overlap", 8)
    assert code == 0, err  # a warning, not an error: the tiles are written
    texts = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "cryogen.qc.warnings"]
    assert len({t.split(":")[1] for t in texts}) == len(texts), texts  # no topic twice
    (text,) = [t for t in texts if message in t]
    assert text.startswith(f"{src}: ") and "\n" not in text
    lines = [ln for ln in re.split(r"[\r\n]+", err) if ln.startswith("cryogen chunk: warning:") and message in ln]
    assert lines == [f"cryogen chunk: warning: {text}"], err


def test_good_data_get_no_warning(tmp_path, capsys, caplog, sim):
    src = tmp_path / "in.mrc"
    write_mrc(src, sim, 10.0)
    with caplog.at_level(logging.WARNING, logger="cryogen"):
        code, _, err = cli(capsys, "chunk", src, tmp_path / "t.zarr", *TILT, "--tile", 32, "--overlap", 8)
    assert code == 0, err
    assert not [r.getMessage() for r in caplog.records if r.name == "cryogen.qc.warnings"]
    assert "no signal" not in err and "sigma estimate" not in err


# ----------------------------------------------------------------------------- workflow config


@pytest.mark.workflow
def test_workflow_sheet_file_missing(tmp_path):
    """Config errors (unknown key, wrong type, a tomogram file that does not exist) are tested in
    tests/test_workflow.py; what it does not cover: the sheet itself missing."""
    from test_workflow import make_workspace, snakemake

    ws = make_workspace(tmp_path / "ws", {"tomograms": "config/nope.tsv"})
    run = snakemake(ws, "-n")
    assert run.code != 0, run
    assert "config/nope.tsv" in run.log and "Traceback" not in run.log, run
    assert not (ws / "results").exists()


# ----------------------------------------------------------------------------- determinism


@pytest.mark.slow
def test_run_twice_gives_the_same_bits(tmp_path, capsys, sim):
    """~15 s a run: `run` trains with the default batch and patch (it does not pass its --batch
    and --patch on), so one step is all it can afford."""
    src = tmp_path / "in.mrc"
    write_mrc(src, sim, 10.0)
    argv = [*TILT, "--tile", 32, "--overlap", 8, "--steps", 1, "--map-steps", 2, "--device", "cpu", "--seed", 4]
    for name in ("a.mrc", "b.mrc"):
        code, _, err = cli(capsys, "run", src, tmp_path / name, *argv)
        assert code == 0, err
    assert (tmp_path / "a.mrc").read_bytes() == (tmp_path / "b.mrc").read_bytes()
    assert not [n for n in names(tmp_path) if n.startswith(".")]  # no work folder left


# ----------------------------------------------------------------------------- kill -9


def _cli_cmd(*argv) -> list[str]:
    return [sys.executable, "-m", "cryogen.cli", *[str(a) for a in argv]]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _kill_when(cmd: list[str], cwd: Path, ready, timeout: float = 300.0) -> None:
    """Start `cmd`, SIGKILL it as soon as `ready()` is true (it must not finish first)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while not ready():
            assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() - t0 < timeout, "no progress"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


@pytest.fixture(scope="module")
def kill_material(tmp_path_factory, material) -> dict[str, Path]:
    """Smaller tiles (48 of 16^3) than `material`, so a kill lands between tiles; same prior."""
    d = tmp_path_factory.mktemp("kill")
    chunk(material["mrc"], d / "tiles.zarr", tile=16, overlap=4, wedge=Wedge(-60, 60), progress=False)
    return {"dir": d, "tiles": d / "tiles.zarr", "prior": material["prior"]}


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.mark.slow
def test_kill_during_train_resumes_from_the_checkpoint(tmp_path, kill_material):
    steps = 60  # checkpoints every 50 steps
    args = [
        kill_material["tiles"],
        "--steps",
        steps,
        "--batch",
        1,
        "--patch",
        16,
        "--device",
        "cpu",
        "--seed",
        2,
        "--resume",
    ]
    _run(_cli_cmd("train", "--out", tmp_path / "full.pt", *args), tmp_path)
    ckpt = tmp_path / "cut.pt.ckpt"
    _kill_when(_cli_cmd("train", "--out", tmp_path / "cut.pt", *args), tmp_path, ckpt.exists)
    assert not (tmp_path / "cut.pt").exists()
    assert _state(ckpt)["step"] == 50
    res = _run(_cli_cmd("train", "--out", tmp_path / "cut.pt", *args), tmp_path)
    assert f"resumed from {ckpt} at step 50 of {steps}" in res.stderr
    full, cut = _state(tmp_path / "full.pt"), _state(tmp_path / "cut.pt")
    assert cut["step"] == full["step"] == steps
    for key in ("g", "g_ema", "d"):
        for name, tensor in full[key].items():
            assert torch.equal(tensor, cut[key][name]), (key, name)
    assert [h["loss_g"] for h in full["history"]] == [h["loss_g"] for h in cut["history"]]
    assert not [n for n in names(tmp_path) if ".tmp-" in n]


def _done_tiles(partial: Path) -> int:
    folder = partial / "done" / "c"
    return sum(1 for p in folder.iterdir()) if folder.is_dir() else 0


@pytest.mark.integration
def test_kill_during_reconstruct_skips_the_tiles_done(tmp_path, kill_material):
    _, meta = open_store(kill_material["tiles"])
    n = meta.n_tiles
    args = [
        "--prior",
        kill_material["prior"],
        "--batch",
        1,
        "--map-steps",
        20,
        "--samples",
        1,
        "--device",
        "cpu",
        "--seed",
        1,
    ]
    _run(_cli_cmd("reconstruct", kill_material["tiles"], "--out", tmp_path / "full.zarr", *args), tmp_path)
    partial = tmp_path / ".cut.zarr.partial"
    _kill_when(
        _cli_cmd("reconstruct", kill_material["tiles"], "--out", tmp_path / "cut.zarr", *args),
        tmp_path,
        lambda: _done_tiles(partial) >= 2,
    )
    assert not (tmp_path / "cut.zarr").exists()
    done = int(np.asarray(zarr.open_group(str(partial), mode="r")["done"][:]).sum())
    assert 2 <= done < n
    res = _run(_cli_cmd("reconstruct", kill_material["tiles"], "--out", tmp_path / "cut.zarr", *args), tmp_path)
    assert f"{done} of {n} tiles already done" in res.stderr and f"{n - done} to restore" in res.stderr
    full, cut = (
        zarr.open_group(str(tmp_path / "full.zarr"), mode="r"),
        zarr.open_group(str(tmp_path / "cut.zarr"), mode="r"),
    )
    for name in ("tiles", "std"):
        assert np.array_equal(full[name][:], cut[name][:]), name
    assert not partial.exists()


SLOW_STITCH = (
    "import sys, time\n"
    "import cryogen.io.mrc as m\n"
    "write = m.MrcWriter.write_block\n"
    "def slow(self, *a):\n"
    "    write(self, *a)\n"
    "    time.sleep(0.5)\n"
    "m.MrcWriter.write_block = slow\n"
    "from cryogen.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.integration
def test_kill_during_stitch_leaves_nothing_and_rerun_is_identical(tmp_path, kill_material):
    store = kill_material["tiles"]
    _run(_cli_cmd("stitch", store, tmp_path / "full.mrc"), tmp_path)
    out = tmp_path / "cut.mrc"

    def writing() -> bool:
        return any(p.name.startswith(".cut.mrc.tmp-") for p in tmp_path.iterdir())

    seen: list[float] = []

    def first_block_written() -> bool:
        if not seen and writing():
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] > 0.7

    # each of the 3 blocks is followed by a 0.5 s pause: the kill lands after the first or second
    _kill_when([sys.executable, "-c", SLOW_STITCH, "stitch", str(store), str(out)], tmp_path, first_block_written)
    assert not out.exists() and writing()  # a killed process leaves its temporary...
    _run(_cli_cmd("stitch", store, out), tmp_path)
    assert not writing()  # ...which the next writer of the same output removes
    assert out.read_bytes() == (tmp_path / "full.mrc").read_bytes()


@pytest.mark.parametrize(
    "verb, args, needle",
    [
        ("train", ["--batch", "0"], "--batch must be at least 1, not 0"),
        ("train", ["--patch", "0"], "patch size 0 must be a positive multiple"),
        ("reconstruct", ["--batch", "0"], "--batch must be at least 1, not 0"),
    ],
    ids=["train-batch", "train-patch", "reconstruct-batch"],
)
def test_bad_sizes_are_one_line_errors(tmp_path, capsys, material, verb, args, needle):
    out = tmp_path / "out"
    out.mkdir()
    if verb == "train":
        argv = ["train", material["tiles"], "--out", out / "p.pt", "--steps", 1, "--device", "cpu", *args]
    else:
        argv = [
            "reconstruct",
            material["tiles"],
            "--prior",
            material["prior"],
            "--out",
            out / "r.zarr",
            "--device",
            "cpu",
            *args,
        ]
    code, _, err = cli(capsys, *argv)
    one_error(code, err, needle)
    assert_only(out)
