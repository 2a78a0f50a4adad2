"""cryogen.io.tilts: the angles of IMOD, SerialEM and AreTomo tilt files in file order, their
Wedge, and one-line errors naming the file and the line for every bad file. Milliseconds."""

from __future__ import annotations

import pytest

from cryogen.errors import CryogenError
from cryogen.io.tilts import TiltAngles, read_tilt_angles
from cryogen.model.imaging import Wedge

# dose-symmetric order, as acquired: 0, +3, -3, +6, -6, ... (what the tilt-series model will need)
ANGLES = (0.0, 3.0, -3.0, 6.0, -6.0, 9.0, -9.5)

MDOC_HEAD = """PixelSpacing = 5.4
ImageFile = TS_01.mrc
ImageSize = 924 958
DataMode = 1

[T = SerialEM: Digitized on EMBL Krios                       30-Nov-15  15:14:20    ]

[T =     Tilt axis angle = 85.3, binning = 4  spot = 8  camera = 2]

"""

ALN_HEAD = """# AreTomo Alignment / Priims bprmMn
# RawSize = 4096 4096 9
# NumPatches = 4
# DarkFrame =     0    0   -12.00
# DarkFrame =     8    8    12.00
# AlphaOffset =     0.00
# BetaOffset =     0.00
# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     BASE     TILT
"""


def mdoc(angles, extra: str = "") -> str:
    sections = [
        f"[ZValue = {i}]\nTiltAngle = {a}\nStagePosition = 20.79 155.28\nDefocus = 2.68\nDateTime = 30-Nov-15  15:21:38\n"
        for i, a in enumerate(angles)
    ]
    return MDOC_HEAD + "\n".join(sections) + extra


def aln(angles) -> str:
    rows = "".join(
        f"{i:5d}    85.1862    1.00000    -19.442     32.781     1.00     1.00     1.00     0.00 {a:9.2f}\n"
        for i, a in enumerate(angles)
    )
    local = "# Local Alignment\n   0   0 -1537.16  -1363.14     -6.93    -36.22   1.0\n"
    return ALN_HEAD + rows + local


@pytest.fixture
def write(tmp_path):
    def _write(name: str, text: str | bytes):
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    return _write


@pytest.mark.parametrize(
    "name, text, fmt",
    [
        ("TS_01.tlt", "\n".join(f"{a:8.2f}" for a in ANGLES) + "\n\n", "imod"),
        (
            "TS_01.rawtlt",
            "\r\n".join(str(a) for a in ANGLES[:3]) + "\r\n\r\n" + "\n".join(map(str, ANGLES[3:])),
            "imod",
        ),
        ("TS_01.mrc.mdoc", mdoc(ANGLES, "\n[MontSection = 0]\nTiltAngle = 80\n"), "serialem"),
        ("TS_01.aln", aln(ANGLES), "aretomo"),
        ("TS_01.TLT", "\ufeff" + "\n".join(map(str, ANGLES)), "imod"),  # a BOM and an upper-case suffix
    ],
    ids=["tlt", "rawtlt-crlf-blank", "mdoc", "aln", "bom"],
)
def test_each_format_keeps_the_file_order(write, name, text, fmt):
    path = write(name, text)
    tilts = read_tilt_angles(path)
    assert tilts == TiltAngles(ANGLES, str(path), fmt)
    assert tilts.wedge() == Wedge(-9.5, 9.0, "y")
    assert tilts.wedge("x") == Wedge(-9.5, 9.0, "x")


def test_aln_reads_the_tilt_column_by_name_and_stops_at_the_local_table(write):
    text = "# SEC TILT ROT\n 0 -30.5 85\n 1 28 85\n# Local Alignment\n 0 0 1 2 3 4 1.0\n"
    assert read_tilt_angles(write("a.aln", text)).angles == (-30.5, 28.0)


def one_line_error(path, *needles):
    with pytest.raises(CryogenError) as exc:
        read_tilt_angles(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


@pytest.mark.parametrize(
    "name, text, needles",
    [
        ("e.tlt", "", ["empty: no tilt angles"]),
        ("blank.tlt", "\n  \n\n", ["empty: no tilt angles"]),
        ("word.tlt", "-60\n-57\nsixty\n", ["line 3: 'sixty' is not a tilt angle"]),
        ("two.tlt", "-60\n-57 3\n", ["line 2: 2 values"]),
        ("far.tlt", "-60\n\n95.5\n", ["line 3: tilt angle 95.5 is beyond +-90 degrees"]),
        ("nan.rawtlt", "-60\nnan\n", ["line 2: 'nan' is not a tilt angle"]),
        ("none.mdoc", MDOC_HEAD, ["no tilt angles in its 9 lines (not a SerialEM .mdoc file?)"]),
        ("bad.mdoc", mdoc([0, "3,5"]), ["line 17: '3,5' is not a tilt angle"]),
        ("far.mdoc", mdoc([0, -91]), ["line 17: tilt angle -91 is beyond +-90"]),
        ("lost.mdoc", MDOC_HEAD + "[ZValue = 0]\nDefocus = 2\n[ZValue = 1]\nTiltAngle = 3\n", ["line 10: ", "no TiltAngle"]),
        ("twice.mdoc", MDOC_HEAD + "[ZValue = 0]\nTiltAngle = 0\nTiltAngle = 3\n", ["line 12: a second TiltAngle"]),
        ("none.aln", "# AreTomo Alignment\n# RawSize = 1 1 1\n", ["no '# SEC ... TILT' alignment table"]),
        ("notilt.aln", "# SEC ROT\n 0 85\n", ["line 1: the alignment table has no TILT column"]),
        ("norows.aln", ALN_HEAD + "# Local Alignment\n", ["line 8: the alignment table has no rows"]),
        ("short.aln", ALN_HEAD + " 0 85 1 0 0 1 1 1 0 -60\n 1 85 1 0 0 1 1 1 0\n", ["line 10: 9 values", "line 8 names 10"]),
        ("far.aln", aln([-60, 93]), ["line 10: tilt angle 93 is beyond"]),
        ("word.aln", ALN_HEAD + " 0 85 1 0 0 1 1 1 0 x\n", ["line 9: 'x' is not a tilt angle"]),
        ("a.txt", "-60\n60\n", ["unknown tilt file suffix '.txt'", ".tlt, .rawtlt, .mdoc, .aln"]),
        ("noext", "-60\n60\n", ["unknown tilt file suffix (none)"]),
        ("bin.tlt", b"MRC\0\0\0\x01", ["not a text file"]),
    ],
)  # fmt: skip
def test_bad_files_give_one_line_naming_file_and_line(write, name, text, needles):
    one_line_error(write(name, text), *needles)


def test_unreadable_files(tmp_path):
    one_line_error(tmp_path / "missing.tlt", "tilt file not found")
    (tmp_path / "dir.tlt").mkdir()
    one_line_error(tmp_path / "dir.tlt", "is a folder")


def test_one_distinct_angle_makes_no_wedge(write):
    tilts = read_tilt_angles(write("flat.tlt", "0\n0.0\n"))
    with pytest.raises(CryogenError, match=r"flat.tlt: all 2 tilt angles are 0: no tilt range$"):
        tilts.wedge()
