"""copick projects in and out: a local project the tests build in copick's on-disk layout (config
JSON, a static root holding two runs with a `wbp` tomogram at 10 A, a separate overlay root), its
runs listed, a tomogram streamed into MRC, a restored volume and its std map written back as new
types with the metadata copick writes, the source left byte for byte as it was, refusals that
protect other tomograms, the workflow's copick rows, and (when `make copick-venv` has built
.venv-copick) copick's own API reading what CryoGEN wrote and CryoGEN reading what copick wrote."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import zarr

from cryogen.errors import CryogenError
from cryogen.io import copick_project as cp
from cryogen.io.mrc import read_mrc, write_mrc
from cryogen.io.ome_zarr import bin2
from cryogen.workflow.copick import copick_runs, copick_tomograms
from cryogen.workflow.sheet import load_dataset

REPO = Path(__file__).resolve().parents[1]
COPICK_PYTHON = REPO / ".venv-copick" / "bin" / "python"
SPACING = 10.0
SHAPE = (20, 33, 40)  # odd edges on purpose: levels round up

# The `multiscales` attribute of a tomogram written by copick 1.31.0's `CopickTomogram.from_numpy`
# (through ome-zarr-py 0.11.1) at 10 A, recorded from its output: the layout the tests hold
# CryoGEN's export to, and the layout of the source tomograms built below.
COPICK_MULTISCALES = [
    {
        "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"],
        "datasets": [
            {"coordinateTransformations": [{"scale": [s, s, s], "type": "scale"}], "path": str(i)}
            for i, s in enumerate((10.0, 20.0, 40.0))
        ],
        "metadata": {},
        "name": "/",
        "version": "0.4",
    }
]


def _volume(seed: int, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + np.arange(shape[2])).astype(np.float32)


def _copick_tomogram(folder: Path, data: np.ndarray, chunk: int = 256) -> None:
    """A tomogram as copick lays it out: Zarr format 2, '/' keys, levels 0-2, scale-only metadata."""
    group = zarr.open_group(str(folder), mode="w", zarr_format=2)
    level = data
    for i in range(3):
        group.create_array(str(i), data=level, chunks=(chunk,) * 3, chunk_key_encoding={"name": "v2", "separator": "/"})
        level = bin2(level)
    group.attrs["multiscales"] = COPICK_MULTISCALES


def _tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (names relative to it): a byte-for-byte record."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _make_project(tmp_path: Path, shape=SHAPE) -> Path:
    """A copick project: static root with runs TS_1, TS_2 (wbp at 10 A; TS_2 also at 20 A) and a
    run without tomograms; a separate, empty overlay root. Returns the config JSON."""
    static, overlay = tmp_path / "static", tmp_path / "overlay"
    for i, run in enumerate(("TS_1", "TS_2")):
        _copick_tomogram(
            static / "ExperimentRuns" / run / "VoxelSpacing10.000" / "wbp.zarr", _volume(i, shape), chunk=8
        )
    (static / "ExperimentRuns" / "TS_2" / "VoxelSpacing20.000").mkdir()
    (static / "ExperimentRuns" / "empty").mkdir()
    (static / "ExperimentRuns" / ".hidden").mkdir()
    overlay.mkdir()
    config = tmp_path / "copick.json"
    config.write_text(
        json.dumps(
            {
                "config_type": "filesystem",
                "name": "test",
                "description": "two tiny runs",
                "version": "1.31.0",
                "pickable_objects": [],
                "overlay_root": f"local://{overlay}",
                "static_root": f"local://{static}",
                "overlay_fs_args": {"auto_mkdir": True},
            }
        )
    )
    return config


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return _make_project(tmp_path)


def _restored(tmp_path: Path, seed: int = 5, shape=SHAPE, voxel_size: float = SPACING) -> Path:
    path = tmp_path / f"restored{seed}.mrc"
    write_mrc(path, _volume(seed, shape) * 0.5, voxel_size)
    return path


# ----------------------------------------------------------------------------- the project


def test_runs_spacings_and_types_as_copick_lists_them(project, run_cli):
    p = cp.open_project(project)
    assert p.separate_overlay
    assert p.runs() == ["TS_1", "TS_2", "empty"]  # hidden folders are not runs
    assert p.voxel_spacings("TS_2") == [10.0, 20.0]
    assert p.tomogram_types("TS_1", 10) == ["wbp"]
    assert p.tomogram("TS_1", 10, "wbp") == p.static_root / "ExperimentRuns/TS_1/VoxelSpacing10.000/wbp.zarr"
    assert (
        p.output_path("TS_1", 10, "cryogen") == p.overlay_root / "ExperimentRuns/TS_1/VoxelSpacing10.000/cryogen.zarr"
    )
    code, out, _ = run_cli("copick", "runs", project)
    assert code == 0
    assert "TS_1\t10 A: wbp" in out and "TS_2\t10 A: wbp; 20 A: -" in out and "empty\tno tomograms" in out
    code, out, _ = run_cli("copick", "runs", project, "--tomo-type", "wbp", "--voxel-spacing", "10")
    assert code == 0 and "empty" not in out and "2 runs" in out


@pytest.mark.parametrize(
    ("run", "spacing", "ttype", "needle"),
    [
        ("TS_9", 10, "wbp", "no run 'TS_9'"),
        ("TS_1", 10, "denoised", "no 'denoised' tomogram at 10 A (types there: wbp)"),
        ("TS_1", 7.5, "wbp", "no tomogram at 7.5 A (voxel spacings there: 10)"),
    ],
)
def test_a_missing_tomogram_is_one_line_saying_what_is_there(project, run, spacing, ttype, needle):
    with pytest.raises(CryogenError, match=None) as err:
        cp.open_project(project).source(run, spacing, ttype)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{", "invalid JSON"),
        ('{"config_type": "cryoet_data_portal", "overlay_root": "/x"}', "not supported"),
        ('{"config_type": "filesystem"}', "no overlay_root"),
        ('{"overlay_root": "s3://bucket/project"}', "not on the local file system"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, text, needle):
    config = tmp_path / "c.json"
    config.write_text(text)
    with pytest.raises(CryogenError) as err:
        cp.open_project(config)
    assert needle in str(err.value) and str(config) in str(err.value)


# ----------------------------------------------------------------------------- in


def test_import_streams_the_full_resolution_level_into_mrc(project, tmp_path, monkeypatch):
    blocks = []
    write_block = cp.MrcWriter.write_block
    monkeypatch.setattr(
        cp.MrcWriter, "write_block", lambda self, z0, y0, b: (blocks.append(b.shape), write_block(self, z0, y0, b))
    )
    before = _tree_digest(tmp_path / "static")
    out = cp.import_tomogram(cp.open_project(project), "TS_2", "wbp", SPACING, tmp_path / "in.mrc", progress=False)
    data, info = read_mrc(out)
    np.testing.assert_array_equal(data, _volume(1))
    assert info.voxel_size == pytest.approx((SPACING,) * 3)
    with mrcfile.open(out, header_only=True) as m:
        assert float(m.voxel_size.x) == pytest.approx(SPACING)
    # the source has chunks of 8: every block read and written is one chunk of z x one of y x all x
    assert len(blocks) == 3 * 5 and max(b[0] * b[1] for b in blocks) <= 64 and {b[2] for b in blocks} == {SHAPE[2]}
    assert _tree_digest(tmp_path / "static") == before


# ----------------------------------------------------------------------------- out


def test_export_writes_copicks_layout_into_the_overlay_and_leaves_the_source_alone(project, tmp_path):
    p = cp.open_project(project)
    restored, std = _restored(tmp_path, 5), _restored(tmp_path, 6)
    before = _tree_digest(tmp_path / "static")
    written = cp.export_tomogram(p, "TS_1", SPACING, restored, std=std, source_type="wbp", progress=False)
    spacing_dir = p.overlay_root / "ExperimentRuns/TS_1/VoxelSpacing10.000"
    assert written == [spacing_dir / "cryogen.zarr", spacing_dir / "cryogen-std.zarr"]
    assert _tree_digest(tmp_path / "static") == before  # nothing written into the static root
    assert (spacing_dir / ".meta").read_text() == "meta" and (spacing_dir.parent / ".meta").read_text() == "meta"
    assert not [q for q in spacing_dir.iterdir() if ".tmp-" in q.name]
    assert p.tomogram_types("TS_1", SPACING) == ["cryogen", "cryogen-std", "wbp"]
    for image, src in zip(written, (restored, std), strict=True):
        attrs = json.loads((image / ".zattrs").read_text())
        assert attrs["multiscales"] == COPICK_MULTISCALES
        assert attrs["cryogen"]["source"] == str(src) and attrs["cryogen"]["source_type"] == "wbp"
        level = read_mrc(src)[0]
        shapes = [SHAPE, (10, 17, 20), (5, 9, 10)]
        for i, shape in enumerate(shapes):
            meta = json.loads((image / str(i) / ".zarray").read_text())
            assert meta["zarr_format"] == 2 and meta["dimension_separator"] == "/" and meta["dtype"] == "<f4"
            assert meta["compressor"]["id"] == "blosc" and meta["compressor"]["cname"] == "lz4"
            assert tuple(meta["shape"]) == shape
            array = np.asarray(zarr.open_array(str(image / str(i)), mode="r")[:])
            np.testing.assert_allclose(array, level, rtol=1e-6, atol=1e-6)
            level = bin2(level)


def test_export_into_a_single_root_project_writes_beside_the_source(tmp_path):
    root = tmp_path / "proj"
    src = root / "ExperimentRuns" / "TS_1" / "VoxelSpacing10.000" / "wbp.zarr"
    _copick_tomogram(src, _volume(0))
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"config_type": "filesystem", "pickable_objects": [], "overlay_root": str(root)}))
    before = _tree_digest(src)
    p = cp.open_project(config)
    assert not p.separate_overlay
    (out,) = cp.export_tomogram(p, "TS_1", SPACING, _restored(tmp_path), source_type="wbp", progress=False)
    assert out == src.with_name("cryogen.zarr") and _tree_digest(src) == before
    assert not (src.parent / ".meta").exists()  # copick writes .meta only into folders it creates


def test_export_refuses_what_would_replace_or_misplace_a_tomogram(project, tmp_path, run_cli):
    p = cp.open_project(project)
    restored = _restored(tmp_path)
    before = _tree_digest(tmp_path / "static")
    cases = [
        (dict(tomo_type="wbp", source_type="wbp"), "source tomogram's"),
        (dict(tomo_type="my_type"), "not a copick name"),
        (dict(tomo_type="cryogen-features"), "feature map"),
        (dict(std=restored, std_type="cryogen"), "type of its own"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(CryogenError, match=needle):
            cp.export_tomogram(p, "TS_1", SPACING, restored, progress=False, **kwargs)
    with pytest.raises(CryogenError, match="picks would not line up"):
        cp.export_tomogram(p, "TS_1", SPACING, _restored(tmp_path, 7, (20, 32, 40)), source_type="wbp", progress=False)
    with pytest.raises(CryogenError, match="differs from the voxel spacing 10"):
        cp.export_tomogram(p, "TS_1", SPACING, _restored(tmp_path, 8, voxel_size=5.0), progress=False)
    with pytest.raises(CryogenError, match="no run 'TS_9'"):
        cp.export_tomogram(p, "TS_9", SPACING, restored, progress=False)
    assert not (p.overlay_root / "ExperimentRuns").exists()  # nothing written by any refusal
    # a tomogram of the type already there: kept unless asked; never replaced if CryoGEN did not write it
    cp.export_tomogram(p, "TS_1", SPACING, restored, progress=False)
    code, _, err = run_cli("copick", "export", project, "TS_1", restored, "--voxel-spacing", "10")
    assert code == 1 and "already there" in err
    assert run_cli("copick", "export", project, "TS_1", restored, "--voxel-spacing", "10", "--overwrite")[0] == 0
    foreign = p.output_path("TS_2", SPACING, "denoised")
    _copick_tomogram(foreign, _volume(3))
    with pytest.raises(CryogenError, match="not written by CryoGEN"):
        cp.export_tomogram(p, "TS_2", SPACING, restored, tomo_type="denoised", overwrite=True, progress=False)
    assert _tree_digest(tmp_path / "static") == before


def test_a_failed_export_leaves_nothing_behind(project, tmp_path):
    p = cp.open_project(project)
    bad = _volume(9)
    bad[15, 3, 4] = np.nan
    write_mrc(tmp_path / "bad.mrc", bad, SPACING)
    with pytest.raises(CryogenError, match="NaN"):
        cp.export_tomogram(p, "TS_1", SPACING, _restored(tmp_path), std=tmp_path / "bad.mrc", progress=False)
    spacing_dir = p.overlay_root / "ExperimentRuns/TS_1/VoxelSpacing10.000"
    assert sorted(q.name for q in spacing_dir.iterdir()) == [".meta"]  # neither image, no temporaries


# ----------------------------------------------------------------------------- the workflow's rows


def test_config_copick_runs_become_tomograms(project, tmp_path):
    config = {
        "results": "out/",
        "tomograms": str(tmp_path / "none.tsv"),
        "demo": {},
        "copick": {
            "config": str(project),
            "tomo_type": "wbp",
            "voxel_spacing": 10.0,
            "runs": [],
            "output_type": "cryogen",
            "std_type": "cryogen-std",
            "tilt_range": "auto",
            "tilt_axis": "y",
            "group": "dataset",
        },
    }
    rows = copick_tomograms(config)
    assert [(t.name, t.path, t.tilt_min, t.group) for t in rows] == [
        ("TS_1", "out/TS_1/copick_input.mrc", "auto", "dataset"),
        ("TS_2", "out/TS_2/copick_input.mrc", "auto", "dataset"),
    ]
    runs = copick_runs(config)
    assert runs is not None and runs.outputs("TS_1", with_std=True) == {
        "restored": str(runs.project.overlay_root / "ExperimentRuns/TS_1/VoxelSpacing10.000/cryogen.zarr"),
        "std": str(runs.project.overlay_root / "ExperimentRuns/TS_1/VoxelSpacing10.000/cryogen-std.zarr"),
    }
    block_mb = SHAPE[0] * SHAPE[1] * SHAPE[2] * 4 / 2**20  # the whole tiny volume is one block
    assert runs.mem_mb("TS_1") == int(300 + 8 * block_mb) and runs.mem_mb("TS_1", attempt=2) == int(600 + 16 * block_mb)
    (tmp_path / "none.tsv").write_text("name\tpath\ttilt_min\ttilt_max\n")
    schema = {"type": "object"}
    assert sorted(load_dataset(config, schema).tomograms) == ["TS_1", "TS_2"]  # not the demo
    config["copick"].update(runs=["TS_2"], tilt_range=[-50, 60])
    (row,) = copick_tomograms(config)
    assert (row.name, row.tilt_min, row.tilt_max) == ("TS_2", -50.0, 60.0)
    for update, needle in [
        ({"runs": ["empty"]}, "key copick.runs: .*no tomogram at 10 A"),
        ({"output_type": "wbp"}, "key copick.output_type: 'wbp' is the source type"),
        ({"std_type": "cryogen"}, "key copick.std_type"),
        ({"output_type": "cryo_gen"}, "key copick.output_type: .*not a copick name"),
        ({"voxel_spacing": 3.0, "runs": []}, "no run has a 'wbp' tomogram at 3 A"),
    ]:
        bad = {**config, "copick": {**config["copick"], **update}}
        with pytest.raises(CryogenError, match=needle):
            copick_tomograms(bad)
    assert copick_tomograms({**config, "copick": {**config["copick"], "config": None}}) == []
    # Snakemake would remove an output before its job: a foreign tomogram of the output type stops it all
    config["copick"]["runs"] = []
    _copick_tomogram(runs.project.output_path("TS_2", SPACING, "cryogen-std"), _volume(3))
    with pytest.raises(CryogenError, match="CryoGEN did not write it"):
        copick_tomograms(config)


# ----------------------------------------------------------------------------- copick's own API

COPICK_CHECK = r"""
import json, sys
import numpy as np, copick, mrcfile, zarr
from copick.util.ome import get_voxel_size_from_zarr
step, config = sys.argv[1], sys.argv[2]
root = copick.from_file(config)
if step == "write":  # a tomogram through copick's API, for CryoGEN to read
    vs = root.get_run("TS_1").get_voxel_spacing(10.0)
    tomo = vs.new_tomogram("denoised")
    tomo.from_numpy(np.load(sys.argv[3]))
else:  # what CryoGEN wrote, through copick's API
    vs = root.get_run("TS_1").get_voxel_spacing(10.0)
    types = sorted(t.tomo_type for t in vs.tomograms)
    out = {"types": types}
    for t in ("cryogen", "cryogen-std", "wbp"):
        tomo = vs.get_tomograms(t)[0]
        out[t] = {
            "level0": np.array_equal(tomo.numpy(), mrcfile.read(sys.argv[3 + ("cryogen", "cryogen-std", "wbp").index(t)])),
            "shapes": [list(tomo.numpy(zarr_group=str(i)).shape) for i in range(3)],
            "voxel_size": get_voxel_size_from_zarr(zarr.open(tomo.zarr())),
        }
    print(json.dumps(out))
"""


@pytest.mark.integration
@pytest.mark.skipif(not COPICK_PYTHON.exists(), reason="no .venv-copick (make copick-venv builds it)")
def test_copicks_api_reads_what_cryogen_writes_and_cryogen_reads_what_copick_writes(project, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = tmp_path / "check.py"
    script.write_text(COPICK_CHECK)
    # copick writes a tomogram (into the overlay); CryoGEN imports it exactly
    np.save(tmp_path / "d.npy", _volume(4))
    subprocess.run(
        [COPICK_PYTHON, script, "write", project, tmp_path / "d.npy"], check=True, env=env, capture_output=True
    )
    p = cp.open_project(project)
    cp.import_tomogram(p, "TS_1", "denoised", SPACING, tmp_path / "denoised.mrc", progress=False)
    np.testing.assert_array_equal(read_mrc(tmp_path / "denoised.mrc")[0], _volume(4))
    # CryoGEN exports; copick lists the new types and reads them back (and the untouched source)
    restored, std = _restored(tmp_path, 5), _restored(tmp_path, 6)
    cp.import_tomogram(p, "TS_1", "wbp", SPACING, tmp_path / "wbp.mrc", progress=False)
    cp.export_tomogram(p, "TS_1", SPACING, restored, std=std, source_type="wbp", progress=False)
    run = subprocess.run(
        [COPICK_PYTHON, script, "read", project, restored, std, tmp_path / "wbp.mrc"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["types"] == ["cryogen", "cryogen-std", "denoised", "wbp"]
    for t in ("cryogen", "cryogen-std", "wbp"):
        assert seen[t] == {"level0": True, "shapes": [list(SHAPE), [10, 17, 20], [5, 9, 10]], "voxel_size": 10.0}, t


# ----------------------------------------------------------------------------- the workflow


@pytest.mark.workflow
def test_workflow_restores_copick_runs_and_writes_them_back(tmp_path):
    from test_workflow import make_workspace, snakemake

    shape = (32, 64, 64)  # the workflow tests' tiny tomogram: 9 tiles of 32^3
    project = _make_project(tmp_path, shape)
    static = tmp_path / "static"
    before = _tree_digest(static)
    ws = make_workspace(
        tmp_path / "ws",
        {"copick": {"config": str(project), "runs": ["TS_1", "TS_2"], "tilt_range": [-60, 60]}},
    )
    run = snakemake(ws)
    assert run.code == 0, run
    assert run.jobs["copick_import"] == 2 and run.jobs["copick_export"] == 2, run
    p = cp.open_project(project)
    for name in ("TS_1", "TS_2"):
        out = p.output_path(name, SPACING, "cryogen")
        restored = read_mrc(ws / "results" / name / "restored.mrc")[0]
        assert restored.shape == shape
        np.testing.assert_allclose(np.asarray(zarr.open_array(str(out / "0"), mode="r")[:]), restored, atol=1e-6)
        assert json.loads((out / ".zattrs").read_text())["multiscales"] == COPICK_MULTISCALES
    assert _tree_digest(static) == before
    assert snakemake(ws, "-n").jobs == {}, "a finished run has nothing left to do"
