"""Interoperability: every real MRC mode and IMOD .rec in, MRC and OME-Zarr out, with the voxel
size and origin kept, metadata a viewer accepts, streaming, and nothing left behind on errors."""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import zarr

from cryogen.cli.main import main
from cryogen.errors import CryogenError
from cryogen.io import ome_zarr as export_mod
from cryogen.io.mrc import IMOD_STAMP, MrcReader, read_mrc, write_mrc
from cryogen.io.ome_zarr import pyramid_shapes, read_level, std_sibling, write_ome_zarr
from cryogen.io.store import open_store
from cryogen.tiling import chunk, stitch

DATA = Path(__file__).parent / "data"
VOXEL_XYZ = (9.0, 8.0, 7.0)  # anisotropic on purpose, so an axis mix-up shows
ORIGIN_XYZ = (12.5, -30.0, 4.0)


def _mrcfile_volume(path: Path, data: np.ndarray) -> Path:
    """An input written by mrcfile (as other software would), with voxel size and origin set."""
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = VOXEL_XYZ
        m.header.origin.x, m.header.origin.y, m.header.origin.z = ORIGIN_XYZ
    return path


def _values(dtype: np.dtype, shape=(12, 20, 26), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 3).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def _assert_header_kept(path: Path) -> None:
    with open("/dev/null", "w") as sink:
        assert mrcfile.validate(str(path), print_file=sink)
    with mrcfile.open(path, header_only=True) as m:
        assert (float(m.voxel_size.x), float(m.voxel_size.y), float(m.voxel_size.z)) == pytest.approx(VOXEL_XYZ)
        assert (float(m.header.origin.x), float(m.header.origin.y), float(m.header.origin.z)) == pytest.approx(
            ORIGIN_XYZ
        )


@pytest.mark.parametrize("suffix", [".mrc", ".rec"])
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float16, np.float32])
def test_chunk_stitch_round_trip_every_mode(tmp_path, dtype, suffix):
    data = _values(dtype)
    src = _mrcfile_volume(tmp_path / f"in{suffix}", data)
    with MrcReader(src) as r:
        assert r.info.mode == {np.int8: 0, np.int16: 1, np.uint16: 6, np.float16: 12, np.float32: 2}[dtype]
        assert r.info.voxel_size == pytest.approx(VOXEL_XYZ[::-1])
        assert r.read_block(0, 2).dtype == np.float32  # integer modes read as float values
    meta = chunk(src, tmp_path / "t.zarr", tile=16, overlap=4, progress=False, check_geometry=False)
    assert meta.origin == pytest.approx(ORIGIN_XYZ) and meta.voxel_size == pytest.approx(VOXEL_XYZ[::-1])
    out = tmp_path / f"out{suffix}"
    stitch(tmp_path / "t.zarr", out, progress=False)
    back, info = read_mrc(out)
    assert back.shape == data.shape and info.mode == 2
    np.testing.assert_allclose(
        back, data.astype(np.float32), rtol=0, atol=1e-5 * float(np.abs(data.astype(np.float32)).max())
    )
    _assert_header_kept(out)


def _imod_bytes(path: Path, raw: np.ndarray, flags: int) -> Path:
    """A mode-0 file with IMOD's stamp and the given flags (bit 0: bytes are signed)."""
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(raw.view(np.int8))
        m.voxel_size = 5.0
    with open(path, "r+b") as f:
        f.seek(152)
        f.write(np.array([IMOD_STAMP, flags], dtype="<i4").tobytes())
    return path


def test_imod_unsigned_bytes_are_read_as_0_to_255(tmp_path):
    raw = np.arange(4 * 8 * 8, dtype=np.uint16).astype(np.uint8).reshape(4, 8, 8)  # 0..255
    unsigned, _ = read_mrc(_imod_bytes(tmp_path / "u.rec", raw, flags=0))
    np.testing.assert_array_equal(unsigned, raw.astype(np.float32))
    signed, _ = read_mrc(_imod_bytes(tmp_path / "s.rec", raw, flags=1))
    np.testing.assert_array_equal(signed, raw.view(np.int8).astype(np.float32))
    plain = _mrcfile_volume(tmp_path / "p.mrc", raw.view(np.int8))  # no IMOD stamp: MRC2014 int8
    np.testing.assert_array_equal(read_mrc(plain)[0], raw.view(np.int8).astype(np.float32))


def test_store_without_origin_stitches_at_zero(tmp_path, write_volume):
    src = write_volume(shape=(10, 12, 14), origin=(5.0, 6.0, 7.0))
    chunk(src, tmp_path / "t.zarr", tile=8, overlap=2, progress=False, check_geometry=False)
    group = zarr.open_group(str(tmp_path / "t.zarr"), mode="r+")
    attrs = dict(group.attrs["cryogen"])
    assert attrs["origin"] == [5.0, 6.0, 7.0]
    del attrs["origin"]  # as written before the origin was recorded
    group.attrs["cryogen"] = attrs
    _, meta = open_store(tmp_path / "t.zarr")
    assert meta.origin == (0.0, 0.0, 0.0)
    stitch(tmp_path / "t.zarr", tmp_path / "o.mrc", progress=False)
    assert read_mrc(tmp_path / "o.mrc")[1].origin == (0.0, 0.0, 0.0)


# -- OME-Zarr -----------------------------------------------------------------------------------


@pytest.fixture
def exported(tmp_path):
    data = _values(np.float32, shape=(37, 40, 22), seed=3)
    std = np.abs(_values(np.float32, shape=(37, 40, 22), seed=4))
    src = _mrcfile_volume(tmp_path / "recon.rec", data)
    std_src = _mrcfile_volume(tmp_path / "std.mrc", std)
    written = write_ome_zarr(src, tmp_path / "recon.ome.zarr", std_path=std_src, chunk=16, progress=False)
    return data, std, written


def test_ome_zarr_levels_data_and_transforms(exported):
    data, std, (out, out_std) = exported
    assert out.name == "recon.ome.zarr" and out_std.name == "recon_std.ome.zarr" and std_sibling(out) == out_std
    level0, attrs = read_level(out)
    np.testing.assert_array_equal(level0, data)
    np.testing.assert_array_equal(read_level(out_std)[0], std)
    group = zarr.open_group(str(out), mode="r")
    assert group.metadata.zarr_format == 2
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert ms["axes"] == [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"]
    shapes = [tuple(group[d["path"]].shape) for d in ms["datasets"]]
    assert shapes == [(37, 40, 22), (19, 20, 11), (10, 10, 6)] == pyramid_shapes((37, 40, 22), 16)
    vz, vy, vx = VOXEL_XYZ[::-1]
    for level, d in enumerate(ms["datasets"]):
        f = 2**level
        assert d["coordinateTransformations"][0] == {"type": "scale", "scale": [vz * f, vy * f, vx * f]}
        if level:
            assert d["coordinateTransformations"][1]["translation"] == pytest.approx(
                [v * (f - 1) / 2 for v in (vz, vy, vx)]
            )
        arr = group[d["path"]]
        assert arr.chunks == tuple(min(16, n) for n in arr.shape)
    # each level is the 2x2x2 mean of the one before, edges included
    level1 = read_level(out, 1)[0]
    np.testing.assert_allclose(
        level1[:18, :, :], data[:36].reshape(18, 2, 20, 2, 11, 2).mean(axis=(1, 3, 5)), atol=1e-5
    )
    np.testing.assert_allclose(level1[18, 3, 4], data[36, 6:8, 8:10].mean(), atol=1e-5)
    level2 = read_level(out, 2)[0]
    np.testing.assert_allclose(level2[9, 4, 5], level1[18, 8:10, 10].mean(), atol=1e-5)
    # '/' chunk keys (NGFF 0.4) and provenance with the MRC origin
    assert json.loads((out / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    assert (out / "0" / "0" / "0" / "0").is_file()
    assert attrs["cryogen"]["origin_xyz_angstrom"] == list(ORIGIN_XYZ)
    assert attrs["cryogen"]["kind"] == "restored" and read_level(out_std)[1]["cryogen"]["kind"] == "std"


def test_ome_zarr_metadata_passes_the_schema(exported):
    jsonschema = pytest.importorskip("jsonschema")
    _, _, written = exported
    schema = json.loads((DATA / "ngff-0.4-image.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for path in written:
        attrs = json.loads((path / ".zattrs").read_text())
        errors = [e.message for e in validator.iter_errors(attrs)]
        assert not errors, errors
    broken = json.loads((written[0] / ".zattrs").read_text())
    broken["multiscales"][0]["datasets"][1]["coordinateTransformations"].reverse()  # translation first
    assert list(validator.iter_errors(broken))


def test_ome_zarr_opens_with_ome_zarr_py(exported):
    pytest.importorskip("ome_zarr")
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    data, _, (out, _) = exported
    nodes = list(Reader(parse_url(str(out), fmt=FormatV04()))())
    assert nodes, "ome-zarr found no image"
    image = nodes[0]
    assert [tuple(a.shape) for a in image.data] == [(37, 40, 22), (19, 20, 11), (10, 10, 6)]
    np.testing.assert_array_equal(np.asarray(image.data[0]), data)
    assert image.metadata["coordinateTransformations"][0][0]["scale"] == list(VOXEL_XYZ[::-1])


def test_ome_zarr_passes_ome_zarr_models_validation(exported):
    pytest.importorskip("ome_zarr_models")
    from ome_zarr_models.v04 import Image

    for path in exported[2]:
        image = Image.from_zarr(zarr.open_group(str(path), mode="r"))
        assert len(image.attributes.multiscales[0].datasets) == 3


def test_ome_zarr_streams_in_bounded_blocks(tmp_path, monkeypatch):
    data = _values(np.float32, shape=(40, 36, 20), seed=5)
    src = _mrcfile_volume(tmp_path / "v.mrc", data)
    chunk_edge = 8
    biggest = {"read": 0, "bin": 0}
    real_read, real_bin = MrcReader.read_block, export_mod.bin2

    def read_block(self, z0, z1, y0=0, y1=None):
        out = real_read(self, z0, z1, y0, y1)
        biggest["read"] = max(biggest["read"], out.size)
        return out

    def bin2(block):
        biggest["bin"] = max(biggest["bin"], block.size)
        return real_bin(block)

    monkeypatch.setattr(MrcReader, "read_block", read_block)
    monkeypatch.setattr(MrcReader, "read_all", lambda self: pytest.fail("export read the whole volume"))
    monkeypatch.setattr(export_mod, "bin2", bin2)
    write_ome_zarr(src, tmp_path / "v.zarr", chunk=chunk_edge, progress=False)
    bound = chunk_edge * chunk_edge * data.shape[2]  # one chunk of z x one chunk of y x the width
    assert 0 < biggest["read"] <= bound and 0 < biggest["bin"] <= bound
    np.testing.assert_array_equal(read_level(tmp_path / "v.zarr")[0], data)
    assert len(pyramid_shapes(data.shape, chunk_edge)) == 4


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    src = _mrcfile_volume(tmp_path / "v.mrc", _values(np.float32, shape=(20, 20, 20)))
    std = _mrcfile_volume(tmp_path / "s.mrc", _values(np.float32, shape=(20, 20, 20), seed=1))
    real = export_mod.multiscales

    def broken(*args, **kwargs):
        if broken.calls:  # fail on the std image, after the main one is complete
            raise RuntimeError("disk gone")
        broken.calls += 1
        return real(*args, **kwargs)

    broken.calls = 0
    monkeypatch.setattr(export_mod, "multiscales", broken)
    with pytest.raises(RuntimeError):
        write_ome_zarr(src, tmp_path / "o.zarr", std_path=std, chunk=16, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mrc", "v.mrc"]


# -- command line -------------------------------------------------------------------------------


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_export_happy_path(tmp_path, capsys):
    data = _values(np.int16, shape=(18, 20, 24))
    src = _mrcfile_volume(tmp_path / "tomo.rec", data)
    std = _mrcfile_volume(tmp_path / "std.mrc", np.zeros((18, 20, 24), np.float32))  # constant std is fine
    code, out, err = _run(capsys, "export", src, tmp_path / "tomo.zarr", "--ome", "--std", std, "--chunk", 16)
    assert code == 0, err
    assert "tomo.zarr" in out and "tomo_std.zarr" in out
    np.testing.assert_array_equal(read_level(tmp_path / "tomo.zarr")[0], data.astype(np.float32))
    code, out, err = _run(capsys, "export", src, tmp_path / "v.zarr", "--voxel-size", 13.5, "--chunk", 16)
    assert code == 0, err
    ms = read_level(tmp_path / "v.zarr")[1]["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [13.5] * 3


def test_cli_export_help_is_readable(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "OME-Zarr" in text and "napari" in text and "--std" in text


def _bad(tmp_path: Path, case: str) -> tuple[list, Path]:
    good = _mrcfile_volume(tmp_path / "good.mrc", _values(np.float32, shape=(10, 12, 14)))
    out = tmp_path / "out.zarr"
    if case == "missing":
        return [tmp_path / "nope.mrc", out], tmp_path / "nope.mrc"
    if case == "nan":
        data = _values(np.float32, shape=(10, 12, 14))
        data[7, 3, 2] = np.nan
        bad = _mrcfile_volume(tmp_path / "nan.mrc", data)
        return [bad, out], bad
    if case == "std_shape":
        std = _mrcfile_volume(tmp_path / "std.mrc", _values(np.float32, shape=(10, 12, 15)))
        return [good, out, "--std", std], std
    if case == "std_nan":
        data = _values(np.float32, shape=(10, 12, 14))
        data[-1, -1, -1] = np.inf
        std = _mrcfile_volume(tmp_path / "std.mrc", data)
        return [good, out, "--std", std], std
    if case == "not_zarr":
        return [good, tmp_path / "out.mrc"], tmp_path / "out.mrc"
    if case == "no_voxel_size":
        zero = tmp_path / "zero.mrc"
        write_mrc(zero, _values(np.float32, shape=(10, 12, 14)), 0.0)
        return [zero, out], zero
    if case == "constant":
        flat = _mrcfile_volume(tmp_path / "flat.mrc", np.ones((10, 12, 14), np.float32))
        return [flat, out], flat
    raise AssertionError(case)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # mrcfile's own warning when writing the bad input
@pytest.mark.parametrize("case", ["missing", "nan", "std_shape", "std_nan", "not_zarr", "no_voxel_size", "constant"])
def test_cli_export_errors_are_one_line_and_leave_nothing(tmp_path, capsys, case):
    argv, culprit = _bad(tmp_path, case)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _out, err = _run(capsys, "export", *argv, "--chunk", 16)
    assert code != 0
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err  # progress bars may precede it
    assert str(culprit) in errors[0] and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporaries


def test_library_errors_are_cryogen_errors(tmp_path):
    src = _mrcfile_volume(tmp_path / "v.mrc", _values(np.float32, shape=(10, 12, 14)))
    with pytest.raises(CryogenError, match="too small"):
        write_ome_zarr(src, tmp_path / "o.zarr", chunk=4)
    with pytest.raises(CryogenError, match="positive"):
        write_ome_zarr(src, tmp_path / "o.zarr", voxel_size=-1.0)


def test_info_describes_an_ome_zarr_export(tmp_path, capsys):
    """`cryogen info` reads our OME-Zarr: shape, voxel size, pyramid levels, chunks."""
    import json as _json

    from cryogen.cli.main import main
    from cryogen.io.mrc import write_mrc

    src = tmp_path / "v.mrc"
    write_mrc(src, np.random.default_rng(1).normal(size=(20, 40, 36)).astype(np.float32), 7.5)
    assert main(["export", str(src), str(tmp_path / "v.zarr"), "--ome", "--chunk", "16"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "v.zarr"), "--json"]) == 0
    info = _json.loads(capsys.readouterr().out)
    assert info["format"].startswith("OME-Zarr") and info["shape_zyx"] == [20, 40, 36]
    assert info["voxel_size_zyx_angstrom"] == [7.5, 7.5, 7.5]
    assert info["levels"][1] == [10, 20, 18] and info["chunks"] == [16, 16, 16]
