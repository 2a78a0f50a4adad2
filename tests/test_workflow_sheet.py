"""cryogen.workflow.sheet: the tomogram sheet read and validated row by row, one-line errors that
name the row and the column, the demo fallback, groups, and the chunk/report options of a row.
Milliseconds: no Snakemake."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryogen.errors import CryogenError
from cryogen.workflow import Tomogram, demo_tomograms, load_dataset, load_schema, read_sheet
from cryogen.workflow.sheet import backprojected

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "workflow/schemas/tomograms.schema.yaml")
HEADER = "name\tpath\ttilt_min\ttilt_max\ttilt_axis\tgroup\ttrain\n"
DEMO = {"count": 2, "dir": "resources/demo", "tilt_range": [-60, 60]}


@pytest.fixture
def sheet(tmp_path):
    def _write(text: str) -> Path:
        path = tmp_path / "tomograms.tsv"
        path.write_text(text)
        return path

    return _write


def test_rows_take_defaults_and_typed_cells(sheet):
    path = sheet(
        "# a comment\n\nname\tpath\ttilt_min\ttilt_max\tvoxel_size\ttrain\n"
        "a\tdata/a.mrc\t-60\t60\t\t\n"
        "  # an indented comment\n"
        "b\tdata/b.mrc\t-54.5\t62\t7.5\tNo\n"
        "c\tdata/c.mrc\tauto\tauto\n"
    )
    a, b, c = read_sheet(path, SCHEMA)
    assert a == Tomogram("a", "data/a.mrc", -60.0, 60.0)
    assert (a.tilt_axis, a.group, a.train, a.voxel_size, a.even) == ("y", "dataset", True, None, None)
    assert (b.tilt_min, b.voxel_size, b.train) == (-54.5, 7.5, False)
    assert (c.tilt_min, c.tilt_max) == ("auto", "auto")


def test_header_only_or_empty_sheet_has_no_rows(sheet):
    assert read_sheet(sheet("# nothing\n" + HEADER), SCHEMA) == []
    assert read_sheet(sheet(""), SCHEMA) == []


@pytest.mark.parametrize(
    "rows, message",
    [
        ("a\tdata/a.mrc\tsixty\t60\ty\tg1\tyes\n", "data row 1 (a): key tilt_min: 'sixty' is not valid: lowest tilt"),
        (
            "a\tdata/a.mrc\tauto\t60\ty\tg1\tyes\n",
            "data row 1 (a): tilt_min and tilt_max are both auto or both numbers, not auto and 60.0",
        ),
        ("a\tdata/a.mrc\t-60\t60\tz\tg1\tyes\n", "data row 1 (a): key tilt_axis: 'z' is not one of ['y', 'x']"),
        ("a\tdata/a.mrc\t60\t-60\ty\tg1\tyes\n", "data row 1 (a): tilt_min (60) must be below tilt_max (-60)"),
        ("a b\tdata/a.mrc\t-60\t60\ty\tg1\tyes\n", "data row 1 (a b): key name: 'a b' does not match"),
        ("a\tdata/a.mrc\t-60\t60\ty\tg1\tmaybe\n", "data row 1 (a): key train: 'maybe' is not of type 'boolean'"),
        (
            "a\tdata/a.mrc\t-60\t60\ty\tg1\tyes\nb\tdata/b.mrc\t-60\t60\ty\tg1\tyes\tx\n",
            "data row 2 has 8 cells, the header 7 (tab-separated?)",
        ),
        ("\tdata/a.mrc\t-60\t60\ty\tg1\tyes\n", "data row 1: 'name' is a required property"),
        ("priors\tdata/a.mrc\t-60\t60\ty\tg1\tyes\n", "data row 1 (priors): key name: 'priors' should not be valid"),
    ],
    ids=["number", "half-auto", "axis", "tilt-order", "name", "bool", "cells", "required", "reserved-name"],
)
def test_bad_row_raises_one_line_naming_row_and_column(sheet, rows, message):
    path = sheet(HEADER + rows)
    with pytest.raises(CryogenError) as exc:
        read_sheet(path, SCHEMA)
    assert str(exc.value).startswith(f"tomogram sheet {path}") and message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unknown_column_and_lone_half(sheet):
    with pytest.raises(CryogenError, match="'snr' was unexpected"):
        read_sheet(sheet("name\tpath\ttilt_min\ttilt_max\tsnr\na\ta.mrc\t-60\t60\t3\n"), SCHEMA)
    with pytest.raises(CryogenError, match=r"data row 1 \(a\): 'odd' is a dependency of 'even'"):
        read_sheet(sheet("name\tpath\ttilt_min\ttilt_max\teven\na\ta.mrc\t-60\t60\ta_even.mrc\n"), SCHEMA)


def test_missing_sheet(tmp_path):
    with pytest.raises(CryogenError, match=r"^tomogram sheet \S+nope.tsv not found \(config key 'tomograms'\)$"):
        read_sheet(tmp_path / "nope.tsv", SCHEMA)


def test_dataset_groups_and_checks(sheet):
    path = sheet(
        HEADER + "a\ta.mrc\t-60\t60\ty\tg1\tyes\nb\tb.mrc\t-60\t60\ty\tg1\tno\nc\tc.mrc\t-60\t60\ty\tg2\tyes\n"
    )
    data = load_dataset({"tomograms": str(path), "demo": DEMO}, SCHEMA)
    assert list(data.tomograms) == ["a", "b", "c"]
    assert {g: [t.name for t in ts] for g, ts in data.groups.items()} == {"g1": ["a", "b"], "g2": ["c"]}

    path = sheet(
        HEADER + "a\ta.mrc\t-60\t60\ty\tg1\tyes\nb\tb.mrc\t-60\t60\ty\tg1\tyes\na\tc.mrc\t-60\t60\ty\tg1\tyes\n"
    )
    with pytest.raises(CryogenError, match=r"^tomogram sheet \S+: names must be unique; repeated: a$"):
        load_dataset({"tomograms": str(path), "demo": DEMO}, SCHEMA)

    path = sheet(HEADER + "a\ta.mrc\t-60\t60\ty\tg1\tno\n")
    with pytest.raises(CryogenError, match="group 'g1' has no tomogram with train=yes to train its prior on"):
        load_dataset({"tomograms": str(path), "demo": DEMO}, SCHEMA)


def test_empty_sheet_gives_the_demo(sheet):
    data = load_dataset({"tomograms": str(sheet(HEADER)), "demo": DEMO}, SCHEMA)
    assert list(data.tomograms) == ["demo1", "demo2"] and list(data.groups) == ["dataset"]
    demo2 = data.tomograms["demo2"]
    assert demo2.path == "resources/demo/demo2.mrc" and demo2.truth == "resources/demo/demo2_truth.mrc"
    assert (demo2.tilt_min, demo2.tilt_max) == (-60.0, 60.0)


def test_demo_tilt_range_must_increase():
    with pytest.raises(
        CryogenError, match=r"^invalid config: key demo.tilt_range: min \(60\) must be below max \(-60\)$"
    ):
        demo_tomograms({**DEMO, "tilt_range": [60, -60]})


def test_options_of_a_row():
    plain = Tomogram("a", "a.mrc", -54.5, 62.0)
    assert plain.tilt_options() == "--tilt-range -54.5 62 --tilt-axis y"
    assert plain.chunk_options() == "--tilt-range -54.5 62 --tilt-axis y"
    full = Tomogram("a", "a.mrc", "auto", "auto", tilt_axis="x", even="h 1.mrc", odd="h2.mrc", voxel_size=7.0)
    assert full.chunk_options() == "--tilt-range auto --tilt-axis x --voxel-size 7 --halves 'h 1.mrc' h2.mrc"


def test_a_tilt_file_instead_of_the_range(sheet, tmp_path):
    """tilt_file: the range cells stay empty, the file is read at once, and chunk and report get --tilt-file."""
    tlt = tmp_path / "TS 01.tlt"
    tlt.write_text("-54\n-51\n62\n")
    path = sheet(f"name\tpath\ttilt_min\ttilt_max\ttilt_file\ttilt_axis\na\ta.mrc\t\t\t{tlt}\tx\n")
    (a,) = read_sheet(path, SCHEMA)
    assert (a.tilt_min, a.tilt_max, a.tilt_file) == (None, None, str(tlt))
    assert a.tilt_options() == f"--tilt-file '{tlt}' --tilt-axis x"
    assert a.chunk_options() == f"--tilt-file '{tlt}' --tilt-axis x"
    (a,) = read_sheet(sheet(f"name\tpath\ttilt_file\na\ta.mrc\t{tlt}\n"), SCHEMA)  # no range columns at all
    assert a.chunk_options() == f"--tilt-file '{tlt}' --tilt-axis y"


def test_tilt_file_and_range_exclude_each_other_and_a_bad_file_stops_the_sheet(sheet, tmp_path):
    tlt = tmp_path / "a.tlt"
    tlt.write_text("-60\n60\n")
    head = "name\tpath\ttilt_min\ttilt_max\ttilt_file\n"
    for rows, message in (
        (
            f"a\ta.mrc\t-60\t60\t{tlt}\n",
            f"give tilt_file or tilt_min/tilt_max, not both (tilt_file {tlt}, tilt_min -60",
        ),
        (f"a\ta.mrc\tauto\t\t{tlt}\n", "not both (tilt_file"),
        ("a\ta.mrc\t-60\t\t\n", "give tilt_min and tilt_max (degrees, or auto in both), or a tilt_file"),
        (f"a\ta.mrc\t\t\t{tmp_path / 'nope.tlt'}\n", f"key tilt_file: {tmp_path / 'nope.tlt'}: tilt file not found"),
    ):
        path = sheet(head + rows)
        with pytest.raises(CryogenError) as exc:
            read_sheet(path, SCHEMA)
        assert str(exc.value).startswith(f"tomogram sheet {path}, data row 1 (a): ") and message in str(exc.value)
    tlt.write_text("-60\n-57\nabc\n")
    with pytest.raises(
        CryogenError, match=rf"data row 1 \(a\): key tilt_file: {tlt}: line 3: 'abc' is not a tilt angle"
    ):
        read_sheet(sheet(head + f"a\ta.mrc\t\t\t{tlt}\n"), SCHEMA)


def test_a_tilt_series_row_is_the_tomogram_backproject_makes(sheet, tmp_path):
    """tilt_series instead of path: the row's tomogram and halves are backproject's outputs under
    the results folder, so chunk gets them (with --halves) like any tomogram's."""
    tlt = tmp_path / "a.tlt"
    tlt.write_text("-60\n0\n60\n")
    head = "name\tpath\ttilt_series\ttilt_file\tbinning\tthickness\n"
    path = sheet(head + f"a\t\tdata/a.ali\t{tlt}\t2\t300\nb\t\tdata/b.ali\t{tlt}\t\t\n")
    a, b = read_sheet(path, SCHEMA, "out/")
    made = ("out/a/tomogram.mrc", "out/a/tomogram_even.mrc", "out/a/tomogram_odd.mrc")
    assert (a.path, a.even, a.odd) == backprojected("out", "a") == made
    assert (a.tilt_series, a.binning, a.thickness, b.binning, b.thickness) == ("data/a.ali", 2, 300, 1, None)
    assert a.backproject_options() == "--binning 2 --thickness 300" and b.backproject_options() == "--binning 1"
    assert a.chunk_options() == f"--tilt-file {tlt} --tilt-axis y --halves {made[1]} {made[2]}"
    data = load_dataset({"tomograms": str(path), "demo": DEMO, "results": "res"}, SCHEMA)
    assert data.tomograms["b"].path == "res/b/tomogram.mrc"
    plain = Tomogram("c", "c.mrc", -60.0, 60.0)
    assert (plain.tilt_series, plain.binning, plain.thickness) == (None, 1, None)


def test_tilt_series_row_problems_name_row_and_column(sheet, tmp_path):
    tlt = tmp_path / "a.tlt"
    tlt.write_text("-60\n0\n60\n")
    head = "name\tpath\ttilt_series\ttilt_file\ttilt_axis\teven\todd\tbinning\tthickness\n"
    for row, message in (
        (
            f"a\ta.mrc\ta.ali\t{tlt}\t\t\t\t\t\n",
            "give path (a tomogram) or tilt_series (an aligned tilt series), not both",
        ),
        (
            f"a\t\t\t{tlt}\t\t\t\t\t\n",
            "give path (a tomogram) or tilt_series (an aligned tilt series), neither is given",
        ),
        ("a\t\ta.ali\t\t\t\t\t\t\n", "'tilt_file' is a dependency of 'tilt_series'"),
        (f"a\t\ta.ali\t{tlt}\tx\t\t\t\t\n", "an aligned tilt series has its tilt axis along y (IMOD), not x"),
        (
            f"a\t\ta.ali\t{tlt}\t\te.mrc\to.mrc\t\t\n",
            "even/odd halves are made from the tilt series' alternating tilts",
        ),
        (f"a\ta.mrc\t\t{tlt}\t\t\t\t2\t\n", "'tilt_series' is a dependency of 'binning'"),
        (f"a\ta.mrc\t\t{tlt}\t\t\t\t\t100\n", "'tilt_series' is a dependency of 'thickness'"),
        (f"a\t\ta.ali\t{tlt}\t\t\t\t2.5\t\n", "key binning: '2.5' is not of type 'integer'"),
        (f"a\t\ta.ali\t{tlt}\t\t\t\t\t0\n", "key thickness: 0 is less than the minimum of 1"),
    ):
        path = sheet(head + row)
        with pytest.raises(CryogenError) as exc:
            read_sheet(path, SCHEMA)
        assert str(exc.value).startswith(f"tomogram sheet {path}, data row 1 (a): ") and message in str(exc.value)
        assert "\n" not in str(exc.value)
