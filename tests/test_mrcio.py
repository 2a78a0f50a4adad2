"""MRC reading and writing: header fields survive, files are valid, partial reads are right."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from cryogen.errors import CryogenError
from cryogen.io.mrc import MrcReader, MrcWriter, read_mrc, write_mrc


def test_written_file_is_valid_mrc_with_header_fields(tmp_path):
    data = np.random.default_rng(0).standard_normal((12, 20, 30)).astype(np.float32)
    path = tmp_path / "a.mrc"
    write_mrc(path, data, 8.25, origin=(10.0, 20.0, -5.0), labels=["hello"])
    with open("/dev/null", "w") as sink:
        assert mrcfile.validate(str(path), print_file=sink)
    with mrcfile.open(path) as m:
        np.testing.assert_array_equal(m.data, data)
        assert m.voxel_size.x == pytest.approx(8.25) and m.voxel_size.z == pytest.approx(8.25)
        assert (float(m.header.origin.x), float(m.header.origin.y), float(m.header.origin.z)) == (10.0, 20.0, -5.0)
        assert m.header.dmin == pytest.approx(data.min()) and m.header.dmax == pytest.approx(data.max())
        assert m.header.dmean == pytest.approx(data.mean(), abs=1e-6)
        assert m.header.rms == pytest.approx(data.std(), rel=1e-5)
    back, info = read_mrc(path)
    np.testing.assert_array_equal(back, data)
    assert info.labels[0] == "hello"


def test_block_reads_match_mrcfile(tmp_path):
    data = np.arange(6 * 7 * 9, dtype=np.int16).reshape(6, 7, 9)
    path = tmp_path / "i.mrc"
    with mrcfile.new(path) as m:
        m.set_data(data)
        m.voxel_size = 3.0
    with MrcReader(path) as r:
        assert r.info.mode == 1 and r.shape == (6, 7, 9)
        np.testing.assert_array_equal(r.read_block(2, 5, 1, 4), data[2:5, 1:4].astype(np.float32))
        np.testing.assert_array_equal(r.read_block(0, 6), data.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float16, np.float32])
def test_real_modes_are_accepted(tmp_path, dtype):
    data = (np.random.default_rng(1).random((4, 5, 6)) * 100).astype(dtype)
    path = tmp_path / "m.mrc"
    with mrcfile.new(path) as m:
        m.set_data(data)
    back, _ = read_mrc(path)
    np.testing.assert_array_equal(back, data.astype(np.float32))


def test_big_endian_file(tmp_path):
    data = np.random.default_rng(2).standard_normal((4, 5, 6)).astype(">f4")
    path = tmp_path / "be.mrc"
    with mrcfile.new(path) as m:
        m.set_data(data)
    back, _ = read_mrc(path)
    np.testing.assert_array_equal(back, data.astype(np.float32))


def test_writer_streams_blocks_and_refuses_incomplete(tmp_path):
    path = tmp_path / "s.mrc"
    data = np.random.default_rng(3).standard_normal((6, 8, 5)).astype(np.float32)
    with MrcWriter(path, data.shape, 2.0) as w:
        w.write_block(0, 0, data[:3])
        w.write_block(3, 0, data[3:, :4])
        w.write_block(3, 4, data[3:, 4:])
    np.testing.assert_array_equal(read_mrc(path)[0], data)
    with pytest.raises(RuntimeError, match="wrote"), MrcWriter(tmp_path / "inc.mrc", data.shape, 2.0) as w:
        w.write_block(0, 0, data[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mrc"]


def test_reader_errors_name_the_file(tmp_path):
    path = tmp_path / "nope.mrc"
    with pytest.raises(CryogenError) as err:
        MrcReader(path)
    assert str(path) in str(err.value) and "not found" in str(err.value)
